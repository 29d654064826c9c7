"""Health probes answered before host validation and the HTTPS redirect.

A container health check or an orchestrator probes ``http://127.0.0.1:8000/healthz/live`` on the
container itself: with ``DJANGO_ALLOWED_HOSTS`` set to the public name and ``DJANGO_SECURE`` on,
Django would answer that probe 400 (unknown host) or 301 (to https). This middleware, first in
``MIDDLEWARE``, serves the probe paths directly; everything else passes through untouched.
"""
from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

PROBES = {"/healthz": "healthz_ready", "/healthz/ready": "healthz_ready", "/healthz/live": "healthz_live"}


class ProbeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = PROBES.get(request.path_info) if request.method in ("GET", "HEAD") else None
        if name is None:
            return self.get_response(request)
        from recognition import views

        return getattr(views, name)(request)
