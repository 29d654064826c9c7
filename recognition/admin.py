"""Django admin: upload batches, watch jobs, review results. Every write is a service call."""
from __future__ import annotations

from django.contrib import admin, messages
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from recognition import services
from recognition.errors import ServiceError
from recognition.forms import BatchUploadForm
from recognition.models import Batch, Job, JobChunk, ModelVersion, Recording, RecordingResult


def _submit(modeladmin, request, kind: str, *, batches=(), recordings=None) -> None:
    submitted = 0
    for batch in batches:
        try:
            services.job_submit(owner=batch.owner, kind=kind, batch=batch)
            submitted += 1
        except ServiceError as exc:
            modeladmin.message_user(request, f"{batch}: {exc.message}", messages.ERROR)
    if recordings:
        by_owner: dict[int, list[Recording]] = {}
        for rec in recordings:
            by_owner.setdefault(rec.owner_id, []).append(rec)
        for recs in by_owner.values():
            try:
                services.job_submit(owner=recs[0].owner, kind=kind, recordings=recs)
                submitted += 1
            except ServiceError as exc:
                modeladmin.message_user(request, exc.message, messages.ERROR)
    if submitted:
        modeladmin.message_user(request, f"Queued {submitted} {kind} job(s).", messages.SUCCESS)


def _progress_bar(job: Job) -> str:
    pct = 100 * job.processed / job.total if job.total else (100 if job.is_terminal else 0)
    colour = {"failed": "#ba2121", "cancelled": "#999"}.get(job.status, "#417690")
    return format_html(
        '<div title="{} done, {} failed of {}" style="width:120px;background:#eee;border-radius:3px">'
        '<div style="width:{}%;background:{};height:10px;border-radius:3px"></div></div>{} / {}',
        job.done, job.failed, job.total, f"{pct:.0f}", colour, job.processed, job.total,
    )


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "recording_count", "job_count", "created_at"]
    list_filter = ["created_at", "owner"]
    search_fields = ["name", "description"]
    readonly_fields = ["jobs_table"]
    exclude = ["recordings"]
    actions = ["run_features", "run_classify", "run_embed"]
    change_list_template = "admin/recognition/batch/change_list.html"

    def recording_count(self, obj: Batch) -> int:
        return obj.recordings.count()

    def job_count(self, obj: Batch) -> int:
        return obj.jobs.count()

    @admin.display(description="Jobs")
    def jobs_table(self, obj: Batch) -> str:
        rows = [
            (reverse("admin:recognition_job_change", args=[j.pk]), j.pk, j.kind, j.status, _progress_bar(j))
            for j in obj.jobs.all()
        ]
        return format_html_join("", '<div><a href="{}">#{} {}</a> {} {}</div>', rows) or "No jobs yet."

    def get_urls(self):
        return [path("upload/", self.admin_site.admin_view(self.upload_view), name="recognition_batch_upload")] + super().get_urls()

    def upload_view(self, request):
        """Upload many files or a zip plus an optional labels CSV; show what was rejected and why."""
        form = BatchUploadForm(request.POST or None, request.FILES or None)
        context = dict(self.admin_site.each_context(request), form=form, title="Upload a batch", opts=self.model._meta)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                batch, accepted, rejected = services.batch_create(
                    owner=request.user, name=data["name"], files=[(f.name, f) for f in data["files"]],
                    archive=data.get("archive"), labels_csv=data["labels"].read() if data.get("labels") else None,
                )
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                context.update(batch=batch, accepted=accepted, rejected=rejected)
                self.message_user(request, f"Batch '{batch.name}': {len(accepted)} recordings stored, {len(rejected)} rejected.")
        return render(request, "admin/recognition/batch/upload.html", context)

    @admin.action(description="Run feature extraction on selected batches")
    def run_features(self, request, queryset):
        _submit(self, request, "features", batches=queryset)

    @admin.action(description="Classify selected batches (default model)")
    def run_classify(self, request, queryset):
        _submit(self, request, "classify", batches=queryset)

    @admin.action(description="Embed selected batches (default model)")
    def run_embed(self, request, queryset):
        _submit(self, request, "embed", batches=queryset)


class ResultInline(admin.TabularInline):
    model = RecordingResult
    fields = ["job", "status", "error_code", "error_message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = ["original_filename", "owner", "label", "speaker", "format", "duration_s", "sample_rate", "created_at"]
    list_filter = ["format", "label", "sample_rate", "channels", "created_at", "owner"]
    search_fields = ["original_filename", "label", "speaker", "sha256"]
    readonly_fields = ["player", "sha256", "size_bytes", "format", "duration_s", "sample_rate", "channels", "file", "created_at"]
    fields = ["player", "original_filename", "owner", "label", "speaker", "metadata", "sha256", "size_bytes",
              "format", "duration_s", "sample_rate", "channels", "created_at"]
    inlines = [ResultInline]
    actions = ["run_features", "run_classify", "run_embed"]

    @admin.display(description="Audio")
    def player(self, obj: Recording) -> str:
        if not obj.pk:
            return "-"
        return format_html('<audio controls preload="none" src="{}"></audio>', reverse("recording-audio", args=[obj.pk]))

    @admin.action(description="Run feature extraction on selected recordings")
    def run_features(self, request, queryset):
        _submit(self, request, "features", recordings=list(queryset))

    @admin.action(description="Classify selected recordings (default model)")
    def run_classify(self, request, queryset):
        _submit(self, request, "classify", recordings=list(queryset))

    @admin.action(description="Embed selected recordings (default model)")
    def run_embed(self, request, queryset):
        _submit(self, request, "embed", recordings=list(queryset))


class ChunkInline(admin.TabularInline):
    model = JobChunk
    fields = ["index", "status", "worker", "attempts", "timings", "error", "started_at", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "progress", "model_version", "batch", "owner", "duration", "short_error", "created_at"]
    list_filter = ["status", "kind", "model_version", "created_at", "owner"]
    search_fields = ["id", "error", "batch__name"]
    readonly_fields = ["kind", "status", "progress", "batch", "model_version", "params", "timings", "error",
                       "created_at", "started_at", "finished_at", "owner", "total", "done", "failed"]
    exclude = ["recordings", "report"]
    inlines = [ChunkInline]
    actions = ["cancel_jobs", "retry_failed", "rerun"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="Progress")
    def progress(self, obj: Job) -> str:
        return _progress_bar(obj)

    @admin.display(description="Duration")
    def duration(self, obj: Job) -> str:
        return f"{obj.duration_s:.1f} s" if obj.duration_s is not None else "-"

    @admin.display(description="Error")
    def short_error(self, obj: Job) -> str:
        return (obj.error[:80] + "...") if len(obj.error) > 80 else obj.error

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        for job in queryset:
            try:
                services.job_cancel(job=job)
            except ServiceError as exc:
                self.message_user(request, f"Job #{job.pk}: {exc.message}", messages.WARNING)

    @admin.action(description="Retry only the failed recordings")
    def retry_failed(self, request, queryset):
        for job in queryset:
            try:
                new = services.job_retry_failed(job=job)
                self.message_user(request, f"Job #{job.pk}: failed recordings queued as job #{new.pk}.")
            except ServiceError as exc:
                self.message_user(request, f"Job #{job.pk}: {exc.message}", messages.WARNING)

    @admin.action(description="Re-run selected jobs (same recordings, model and params)")
    def rerun(self, request, queryset):
        for job in queryset:
            model = f"{job.model_version.name}@{job.model_version.version}" if job.model_version else None
            try:
                services.job_submit(owner=job.owner, kind=job.kind, recordings=list(job.recordings.all()),
                                    params=job.params, model=model)
            except ServiceError as exc:
                self.message_user(request, f"Job #{job.pk}: {exc.message}", messages.WARNING)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "family", "task", "is_default", "headline", "created_at"]
    list_filter = ["task", "family", "is_default"]
    search_fields = ["name", "version", "sha256"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["make_default"]

    @admin.display(description="Balanced acc. (test)")
    def headline(self, obj: ModelVersion) -> str:
        value = (obj.metrics or {}).get("test", {}).get("balanced_accuracy")
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    @admin.action(description="Make the selected version its model's default")
    def make_default(self, request, queryset):
        for mv in queryset:
            services.model_version_make_default(model_version=mv)


admin.site.site_header = "accentsite"
admin.site.site_title = "accentsite admin"
