"""One error shape for the whole API: ``{"error": {"code": ..., "message": ..., "fields"?: ...}}``."""
import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from recognition.broker import broker_errors
from recognition.errors import ServiceError

logger = logging.getLogger(__name__)

# Django refuses some requests while parsing them (before any view code): they keep the API's shape.
_REQUEST_ERRORS = (
    (RequestDataTooBig, "request_too_large", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
     "The request body is over the size limit for form fields (files upload separately)."),
    (TooManyFilesSent, "too_many_files", status.HTTP_400_BAD_REQUEST,
     "The request sends more files than allowed (DATA_UPLOAD_MAX_NUMBER_FILES); send them in several batches."),
    (TooManyFieldsSent, "too_many_fields", status.HTTP_400_BAD_REQUEST, "The request sends too many fields."),
)


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        response = Response({"error": exc.as_dict()}, status=exc.status_code)
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, broker_errors()):  # Redis (broker or cache) went away mid-request: say so, in shape
        logger.warning("request refused, the broker cannot be reached: %s", exc)
        response = Response({"error": {"code": "unavailable", "message": "The service's queue (Redis) cannot be reached "
                                       "right now; nothing was kept. Try again in a minute."}},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        response["Retry-After"] = "30"
        return response
    if isinstance(exc, SuspiciousOperation):
        for kind, code, status_code, message in _REQUEST_ERRORS:
            if isinstance(exc, kind):
                return Response({"error": {"code": code, "message": message}}, status=status_code)
        return Response({"error": {"code": "bad_request", "message": "The request was refused as malformed."}},
                        status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": "invalid", "message": "The request is invalid; see fields.", "fields": response.data}
    else:
        code = getattr(exc, "default_code", "error")
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else str(response.data)
        body = {"code": str(getattr(detail, "code", code)), "message": str(detail)}
    response.data = {"error": body}
    return response


def not_found(request, exception=None):
    """Django's 404 for URLs no route matches: under ``/api/`` in the API's JSON error shape (a client
    sees the same body as for a missing object), elsewhere Django's page."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "not_found", "message": f"No API route matches {request.path[:200]}."}},
                            status=404)
    return page_not_found(request, exception)
