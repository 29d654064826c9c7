"""OpenAPI schema: every operation declares the error responses it can give, in the one error shape.

drf-spectacular documents what a view returns on success; the errors come from the exception
handler (``recognition.api.errors``), which it cannot see. This schema class adds them from what
the view is: 401/403 for authenticated views, 404 for paths naming an object (and pages past the
last), 400 for bodies and query parameters, 429 where a throttle applies, 413 for uploads. 409s,
which only some actions give, are declared on those actions with ``extend_schema(responses=...)``.
"""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny

ERROR_DESCRIPTIONS = {
    "400": "Invalid request: code 'invalid' with per-field messages, or a specific code (invalid_params, not_audio, ...)",
    "401": "Not authenticated: no or a bad token",
    "403": "Authenticated but not allowed",
    "404": "No such object among yours (other users' objects are 404 too)",
    "409": "Conflicts with the object's state (job already finished, model unavailable, ...)",
    "413": "Upload over the size limit",
    "429": "Too many requests: throttled; retry after the Retry-After header's seconds",
    "503": "No worker answered in time (predict_timeout) or the broker is unreachable: run a job instead",
}


class AutoSchema(SpectacularAutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for code in self._error_codes(operation):
            responses.setdefault(code, self._error_response(code))
        for code, response in responses.items():  # those declared on an action (409s) get the description too
            if code in ERROR_DESCRIPTIONS and not response.get("description"):
                response["description"] = ERROR_DESCRIPTIONS[code]
        return operation

    def _error_response(self, code: str) -> dict:
        from recognition.api.serializers import ErrorSerializer

        return self._get_response_for_code(OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]), code)

    def _error_codes(self, operation: dict) -> list[str]:
        codes = []
        parameters = operation.get("parameters") or []
        writes = self.method in ("POST", "PUT", "PATCH")
        if writes or any(p.get("in") == "query" for p in parameters):
            codes.append("400")
        if not all(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes += ["401", "403"]
        if (any(p.get("in") == "path" or p.get("name") == "page" for p in parameters)  # "Invalid page." is a 404
                or (writes and getattr(self.view, "basename", "") == "job")):  # a job names a batch or recordings of yours
            codes.append("404")
        if writes and any(issubclass(p, MultiPartParser) for p in getattr(self.view, "parser_classes", [])):
            codes.append("413")
        if self.view.get_throttles():
            codes.append("429")
        return codes
