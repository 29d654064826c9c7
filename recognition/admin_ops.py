"""Admin pages for operations: the Workers page and a job's chunk timeline.

Registered as custom admin URLs by wrapping ``admin.site.get_urls`` (imported at the end of
recognition/admin.py), so they sit behind the admin's login and staff check:

* ``/admin/recognition/workers/`` (``admin:recognition_workers``): every worker online with its
  queues, pool, device, task in hand, tasks done and last heartbeat, plus queue depths. Linked from
  the Job list's object tools.
* ``/admin/recognition/job/<id>/timeline/`` (``admin:recognition_job_timeline``): the job's chunks
  with worker, attempts, wait and run time and seconds per stage. Linked from the Job page.
"""
from __future__ import annotations

import logging

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import path

from recognition import ops
from recognition.models import Job

logger = logging.getLogger(__name__)


WORKERS_PERMISSION = "recognition.view_workers"


def workers_view(request):
    """Workers online and queue depths; the parts whose source is down say so instead.

    Needs the ``recognition.view_workers`` permission (the staff flag alone is not enough: the page
    names every user's running tasks)."""
    if not request.user.has_perm(WORKERS_PERMISSION):
        raise PermissionDenied("Seeing the workers needs the 'view_workers' permission.")
    context = dict(admin.site.each_context(request), title="Workers", opts=Job._meta)
    try:
        context["workers"] = ops.workers_overview(timeout=1.0)
    except Exception as exc:  # the broker down: show the page with the error
        context["workers_error"] = f"{type(exc).__name__}: {exc}"
    try:
        with ops.broker_connection() as conn:
            context["depths"] = ops.queue_depths(connection=conn)
            context["unacked"] = ops.unacked_count(connection=conn)
    except Exception as exc:
        context["depths_error"] = f"{type(exc).__name__}: {exc}"
    context["running_jobs"] = Job.objects.filter(status=Job.Status.RUNNING).count()
    context["queued_jobs"] = Job.objects.filter(status=Job.Status.QUEUED).count()
    return render(request, "admin/recognition/workers.html", context)


def job_timeline_view(request, pk: int):
    """One job's chunks: for the job's owner, or users who may view every job (``view_job`` or
    ``view_workers``)."""
    job = Job.objects.filter(pk=pk).first()
    allowed = job is not None and (job.owner_id == request.user.pk or request.user.has_perm("recognition.view_job")
                                   or request.user.has_perm(WORKERS_PERMISSION))
    if not allowed:
        raise Http404("No such job.")
    rows = ops.job_timeline(job=job)
    stages = sorted({s for r in rows for s in r["timings"]})
    for r in rows:
        r["stage_values"] = [r["timings"].get(s) for s in stages]
    context = dict(admin.site.each_context(request), title=f"Timeline of {job}", opts=Job._meta, job=job,
                   rows=rows, stages=stages, original=job)
    return render(request, "admin/recognition/job/timeline.html", context)


_admin_get_urls = admin.site.get_urls


def _get_urls():
    return [
        path("recognition/workers/", admin.site.admin_view(workers_view), name="recognition_workers"),
        path("recognition/job/<int:pk>/timeline/", admin.site.admin_view(job_timeline_view), name="recognition_job_timeline"),
    ] + _admin_get_urls()


admin.site.get_urls = _get_urls
