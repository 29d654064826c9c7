"""One error shape for the whole API: ``{"error": {"code": ..., "message": ..., "fields"?: ...}}``."""
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from recognition.errors import ServiceError


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        return Response({"error": exc.as_dict()}, status=exc.status_code)
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


def error_response(code: str, message: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> Response:
    return Response({"error": {"code": code, "message": message}}, status=status_code)
