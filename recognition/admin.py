"""Django admin: upload batches, watch jobs, review results. Every write is a service call."""
from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import Http404
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from recognition import review, services
from recognition.errors import ServiceError
from recognition.forms import BatchUploadForm, ModelChoiceForm
from recognition.models import Batch, Job, JobChunk, ModelVersion, Recording, RecordingResult


def _submit(modeladmin, request, kind: str, *, batches=(), recordings=None, model: str | None = None) -> None:
    submitted = 0
    for batch in batches:
        try:
            services.job_submit(owner=batch.owner, kind=kind, batch=batch, model=model)
            submitted += 1
        except ServiceError as exc:
            modeladmin.message_user(request, f"{batch}: {exc.message}", messages.ERROR)
    if recordings:
        by_owner: dict[int, list[Recording]] = {}
        for rec in recordings:
            by_owner.setdefault(rec.owner_id, []).append(rec)
        for recs in by_owner.values():
            try:
                services.job_submit(owner=recs[0].owner, kind=kind, recordings=recs, model=model)
                submitted += 1
            except ServiceError as exc:
                modeladmin.message_user(request, exc.message, messages.ERROR)
    if submitted:
        modeladmin.message_user(request, f"Queued {submitted} {kind} job(s){f' with {model}' if model else ''}.", messages.SUCCESS)


def _submit_with_model(modeladmin, request, queryset, kind: str):
    """An action's intermediate page: choose the model, then queue one job per batch / owner.

    The first POST (from the change list) shows the form; the second carries ``apply`` and submits.
    """
    task = "classify" if kind == "classify" else "embed"
    form = ModelChoiceForm(request.POST if "apply" in request.POST else None, task=task, user=request.user)
    if form.is_valid():
        model = str(form.cleaned_data["model"])
        if modeladmin.model is Batch:
            _submit(modeladmin, request, kind, batches=queryset, model=model)
        else:
            _submit(modeladmin, request, kind, recordings=list(queryset), model=model)
        return None
    context = dict(
        modeladmin.admin_site.each_context(request), title=f"{kind.capitalize()} with a chosen model", form=form, kind=kind,
        queryset=queryset, opts=modeladmin.model._meta, action=request.POST.get("action", ""),
        action_checkbox_name=ACTION_CHECKBOX_NAME,
    )
    return TemplateResponse(request, "admin/recognition/choose_model.html", context)


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
    actions = ["run_features", "run_classify", "classify_with_model", "run_embed", "embed_with_model", "run_language", "run_transcribe"]
    change_list_template = "admin/recognition/batch/change_list.html"
    change_form_template = "admin/recognition/batch/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {"review": review.batch_review(batch=obj)} if obj is not None else {}
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

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

    @admin.action(description="Classify selected batches with a chosen model...")
    def classify_with_model(self, request, queryset):
        return _submit_with_model(self, request, queryset, "classify")

    @admin.action(description="Embed selected batches with a chosen model...")
    def embed_with_model(self, request, queryset):
        return _submit_with_model(self, request, queryset, "embed")

    @admin.action(description="Identify the spoken language of selected batches (Whisper)")
    def run_language(self, request, queryset):
        _submit(self, request, "language", batches=queryset)

    @admin.action(description="Transcribe selected batches (Whisper)")
    def run_transcribe(self, request, queryset):
        _submit(self, request, "transcribe", batches=queryset)


class ResultInline(admin.TabularInline):
    model = RecordingResult
    fields = ["job", "status", "error_code", "error_message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


class HasTranscriptFilter(admin.SimpleListFilter):
    """Recordings whose transcript is known (reading models can score their pronunciation)."""

    title = "transcript"
    parameter_name = "has_transcript"

    def lookups(self, request, model_admin):
        return [("yes", "known"), ("no", "none")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(transcript="")
        if self.value() == "no":
            return queryset.filter(transcript="")
        return queryset


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = ["original_filename", "owner", "label", "speaker", "format", "duration_s", "sample_rate", "created_at"]
    list_filter = ["format", "label", HasTranscriptFilter, "sample_rate", "channels", "created_at", "owner"]
    search_fields = ["original_filename", "label", "speaker", "sha256", "transcript"]
    readonly_fields = ["player", "sha256", "size_bytes", "format", "duration_s", "sample_rate", "channels", "file", "created_at"]
    fields = ["player", "original_filename", "owner", "label", "speaker", "transcript", "metadata", "sha256", "size_bytes",
              "format", "duration_s", "sample_rate", "channels", "created_at"]
    inlines = [ResultInline]
    actions = ["run_features", "run_classify", "classify_with_model", "run_embed", "embed_with_model", "run_language", "run_transcribe"]
    change_form_template = "admin/recognition/recording/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {"review": review.recording_review(recording=obj)} if obj is not None else {}
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

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

    @admin.action(description="Classify selected recordings with a chosen model...")
    def classify_with_model(self, request, queryset):
        return _submit_with_model(self, request, queryset, "classify")

    @admin.action(description="Embed selected recordings with a chosen model...")
    def embed_with_model(self, request, queryset):
        return _submit_with_model(self, request, queryset, "embed")

    @admin.action(description="Identify the spoken language of selected recordings (Whisper)")
    def run_language(self, request, queryset):
        _submit(self, request, "language", recordings=list(queryset))

    @admin.action(description="Transcribe selected recordings (Whisper)")
    def run_transcribe(self, request, queryset):
        _submit(self, request, "transcribe", recordings=list(queryset))


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
    change_form_template = "admin/recognition/job/review_change_form.html"

    def has_add_permission(self, request) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {}
        if obj is not None:
            extra = {"review": review.job_review(job=obj), "compare_candidates": review.job_compare_candidates(job=obj)}
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

    def get_urls(self):
        compare = path("<int:object_id>/compare/", self.admin_site.admin_view(self.compare_view), name="recognition_job_compare")
        return [compare] + super().get_urls()

    def compare_view(self, request, object_id: int):
        """Two classify jobs of one owner side by side (``?other=<job id>``): accuracy of each, what changed."""
        job = self.get_object(request, str(object_id))
        other_id = request.GET.get("other", "")
        other = self.get_object(request, other_id) if other_id.isdigit() else None
        if job is None or other is None or job.owner_id != other.owner_id or not self.has_view_permission(request, job):
            raise Http404("No such pair of jobs.")
        try:
            comparison = review.jobs_compare(job_a=job, job_b=other)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            comparison = None
        context = dict(self.admin_site.each_context(request), title=f"Job #{job.pk} compared with job #{other.pk}",
                       opts=self.model._meta, job=job, other=other, comparison=comparison,
                       sides=[comparison["a"], comparison["b"]] if comparison else [])
        return TemplateResponse(request, "admin/recognition/job/compare.html", context)

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
    list_display = ["name", "version", "family", "task", "is_default", "installed", "headline", "margin", "created_at"]
    list_filter = ["task", "family", "is_default"]
    search_fields = ["name", "version", "sha256"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["make_default"]

    @admin.display(description="Balanced acc. (test)")
    def headline(self, obj: ModelVersion) -> str:
        value = (obj.metrics or {}).get("test", {}).get("balanced_accuracy")
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    @admin.display(description="Over encoder reference (test)")
    def margin(self, obj: ModelVersion) -> str:
        """Balanced accuracy minus the speaker-encoder reference's, same test split, paired 95 % interval
        (reports of models trained since the references joined them)."""
        paired = (((obj.metrics or {}).get("references") or {}).get("speaker_encoder_logreg") or {}).get("paired") or {}
        d = paired.get("all") or {}
        if not isinstance(d.get("difference"), (int, float)) or not isinstance(d.get("low"), (int, float)):
            return "-"
        return f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"

    @admin.display(description="Installed", boolean=True)
    def installed(self, obj: ModelVersion) -> bool:
        """False when the checkpoint is missing or now holds a newer version's weights."""
        from recognition.services.models import model_version_problem

        return not model_version_problem(obj)

    @admin.action(description="Make the selected version its model's default")
    def make_default(self, request, queryset):
        from recognition.services.models import model_version_problem

        for mv in queryset:
            problem = model_version_problem(mv)
            if problem:
                self.message_user(request, problem, level=messages.ERROR)
                continue
            services.model_version_make_default(model_version=mv)


admin.site.site_header = "accentsite"
admin.site.site_title = "accentsite admin"

from recognition import admin_ops  # noqa: E402,F401  (registers the Workers and timeline admin pages)
