"""Plain Django views: authorised media, health and metrics."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from recognition.api.views import _audio_response
from recognition.models import Recording


@login_required
def recording_audio(request: HttpRequest, pk: int):
    """Stream a recording to its owner, or to users holding the ``recognition.view_recording``
    permission (the admin's audio player uses this). The staff flag alone is not enough."""
    qs = Recording.objects.all() if request.user.has_perm("recognition.view_recording") else Recording.objects.filter(owner=request.user)
    recording = qs.filter(pk=pk).first()
    if recording is None:
        raise Http404("No such recording.")
    return _audio_response(recording)


def healthz_live(request: HttpRequest) -> JsonResponse:
    """Liveness: 200 while the process answers; touches no database, broker or storage."""
    from recognition.health import liveness

    return JsonResponse(liveness())


def healthz_ready(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when database, broker, storage and a worker per queue answer; 503 naming
    each part that failed (recognition/health.py lists the checks)."""
    from recognition.health import readiness

    checks = readiness()
    failed = [name for name, c in checks.items() if not c["ok"]]
    body = {"status": "fail" if failed else "ok", "failed": failed, "checks": checks}
    return JsonResponse(body, status=503 if failed else 200)


healthz = healthz_ready  # /healthz, the URL older load balancers probe: an alias of readiness


def _metrics_allowed(request: HttpRequest) -> bool:
    """DEBUG, a session with the ``view_workers`` permission, or ``Authorization: Bearer $METRICS_TOKEN``
    (off while the token is empty)."""
    if settings.DEBUG or (request.user.is_authenticated and request.user.has_perm("recognition.view_workers")):
        return True
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; see recognition/metrics.py for what each metric means."""
    from recognition.metrics import CONTENT_TYPE, render

    if not _metrics_allowed(request):
        response = HttpResponse("Forbidden: staff session or Authorization: Bearer <METRICS_TOKEN> required.\n",
                                status=403, content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(render(), content_type=CONTENT_TYPE)
