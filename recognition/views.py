"""Plain Django views: authorised media, health and metrics."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, JsonResponse

from recognition.api.views import _audio_response
from recognition.models import Recording


@login_required
def recording_audio(request: HttpRequest, pk: int):
    """Stream a recording to its owner, or to staff (the admin's audio player uses this)."""
    qs = Recording.objects.all() if request.user.is_staff else Recording.objects.filter(owner=request.user)
    recording = qs.filter(pk=pk).first()
    if recording is None:
        raise Http404("No such recording.")
    return _audio_response(recording)


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when database, broker, storage and a worker per queue answer; 503 naming what failed."""
    from recognition.health import health_checks

    checks = health_checks()
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse({"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503)
