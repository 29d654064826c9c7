"""Django admin: upload batches, watch jobs, review results. Every write is a service call.

(Over 500 lines: one ModelAdmin per model with its read-only page view and actions; each is small.)

Result pages are read-only pages designed for reading, rendered by each admin's ``change_view``:
the batch page, the job report, the recording review (with its label review form) and the model
card. What makes sense to edit (a batch's name, a recording's speaker and transcript) is edited on
the usual change form, reached by the page's "Edit" link (``?edit=1``); labels change only through
a review (:func:`recognition.services.label_review_create`), which keeps who changed what.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from recognition import batch_pages, job_results, jobkinds, model_cards, review, selectors, services
from recognition.admin_filters import (
    BatchFilter,
    ChannelsFilter,
    ConfidenceFilter,
    FormatFilter,
    HasTranscriptFilter,
    LabelFilter,
    OutcomeFilter,
    PredictedClassFilter,
    SampleRateFilter,
)
from recognition.errors import ServiceError
from recognition.forms import BatchUploadForm, LabelReviewForm, ModelChoiceForm, TrainForm
from recognition.models import Batch, Job, LabelReview, ModelVersion, Recording
from recognition.services.recordings import batch_labels


def _page_number(request) -> int:
    """``?page=N`` of a paged admin page; 1 when missing or not a number."""
    try:
        return max(1, int(request.GET.get("page", 1)))
    except (TypeError, ValueError):
        return 1


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
    task = jobkinds.get(kind).model_task
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


def kind_actions(what: str) -> list:
    """Change-list actions for every job kind that declares ``admin_action`` (``recognition.jobkinds``),
    on selected ``what`` ("batches" or "recordings"): ``run_<kind>`` queues a job (a model kind's
    default model), and a model kind's ``<kind>_with_model`` first asks which model. A new kind's
    action comes from its declaration; nothing here lists kinds."""

    actions = []
    for kind in jobkinds.KINDS.values():
        if not kind.admin_action:
            continue
        label = kind.admin_action.format(what=what)

        def run(modeladmin, request, queryset, _kind=kind.name):
            if modeladmin.model is Batch:
                _submit(modeladmin, request, _kind, batches=queryset)
            else:
                _submit(modeladmin, request, _kind, recordings=list(queryset))

        run.__name__ = f"run_{kind.name}"
        actions.append(admin.action(description=label + (" (default model)" if kind.model_task else ""))(run))
        if kind.model_task:
            def chosen(modeladmin, request, queryset, _kind=kind.name):
                return _submit_with_model(modeladmin, request, queryset, _kind)

            chosen.__name__ = f"{kind.name}_with_model"
            actions.append(admin.action(description=f"{label} with a chosen model...")(chosen))
    return actions


def _page_context(modeladmin, request, obj, **extra):
    """What every read-only result page needs: the admin's context, the object and its options."""
    return dict(modeladmin.admin_site.each_context(request), opts=modeladmin.model._meta, original=obj, object=obj,
                has_change_permission=modeladmin.has_change_permission(request, obj), **extra)


def _editing(request) -> bool:
    """The usual change form is wanted: the page's "Edit" link (``?edit=1``) or that form's POST."""
    return request.method == "POST" or "edit" in request.GET


def _progress_bar(job: Job) -> str:
    pct = 100 * job.processed / job.total if job.total else (100 if job.is_terminal else 0)
    colour = {"failed": "#ba2121", "cancelled": "#999"}.get(job.status, "#417690")
    return format_html(
        '<div title="{} done, {} failed of {}" style="width:80px;background:#eee;border-radius:3px">'
        '<div style="width:{}%;background:{};height:10px;border-radius:3px"></div></div>{} / {}',
        job.done, job.failed, job.total, f"{pct:.0f}", colour, job.processed, job.total,
    )


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "recording_count", "job_count", "created_at"]
    list_filter = ["created_at", "owner"]
    search_fields = ["name", "description"]
    fields = ["name", "description"]
    actions = kind_actions("batches")
    change_list_template = "admin/recognition/batch/change_list.html"

    def add_view(self, request, form_url="", extra_context=None):
        """A batch is made by uploading its recordings: "Batches + Add" opens the upload page."""
        return HttpResponseRedirect(reverse("admin:recognition_batch_upload"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is None or _editing(request):
            return super().change_view(request, object_id, form_url, extra_context)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        overview = batch_pages.batch_overview(batch=obj, page=_page_number(request))
        context = _page_context(self, request, obj, title=f"Batch: {obj.name}", overview=overview,
                                review=review.batch_review(batch=obj), page_jobs=self.PAGE_JOBS,
                                default_classify=settings.DEFAULT_MODELS.get("classify"))
        return TemplateResponse(request, "admin/recognition/batch/page.html", context)

    def get_queryset(self, request):
        """The list's counts come with the page's rows (one query), not two more queries per batch."""
        return selectors.batches_counted(super().get_queryset(request))

    @admin.display(description="Recordings")
    def recording_count(self, obj: Batch) -> int:
        return obj.n_recordings

    @admin.display(description="Jobs")
    def job_count(self, obj: Batch) -> int:
        return obj.n_jobs

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("upload/", view(self.upload_view), name="recognition_batch_upload"),
            path("<int:object_id>/train/", view(self.train_view), name="recognition_batch_train"),
            path("<int:object_id>/run/<str:kind>/", view(require_POST(self.run_view)), name="recognition_batch_run"),
        ] + super().get_urls()

    #: The jobs the batch page's buttons queue, with the default model where one applies.
    PAGE_JOBS = ("classify", "embed", "features", "language", "transcribe")

    def run_view(self, request, object_id: int, kind: str):
        """The batch page's "Run" buttons: one job of ``kind`` over the batch (the owner only), then its page.
        A kind that takes ``extractors`` runs the default set plus the opt-in ones ticked (``extractors`` fields)."""
        batch = self.get_object(request, str(object_id))
        if batch is None or kind not in self.PAGE_JOBS or not self.has_view_permission(request, batch) \
                or batch.owner_id != request.user.pk:
            raise Http404("No such batch.")
        params = None
        if request.POST.getlist("extractors") and "extractors" in jobkinds.KINDS[kind].params:
            from workers.pipeline.features import default_extractors

            params = {"extractors": list(dict.fromkeys([*default_extractors(), *request.POST.getlist("extractors")]))}
        try:
            job = services.job_submit(owner=batch.owner, kind=kind, batch=batch, params=params)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:recognition_batch_change", args=[batch.pk]))
        self.message_user(request, f"Queued {kind} job #{job.pk} on '{batch.name}'.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:recognition_job_change", args=[job.pk]))

    def upload_view(self, request):
        """Upload many files or a zip plus an optional labels CSV into a new batch or one of the user's
        (``?batch=<id>`` preselects it); show what was rejected and why."""
        form = BatchUploadForm(request.POST or None, request.FILES or None, user=request.user,
                               initial={"add_to": request.GET.get("batch")})
        context = dict(self.admin_site.each_context(request), form=form, title="Upload a batch", opts=self.model._meta)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            files = dict(files=[(f.name, f) for f in data["files"]], archive=data.get("archive"),
                         labels_csv=data["labels"].read() if data.get("labels") else None)
            try:
                if data.get("add_to"):
                    batch = data["add_to"]
                    accepted, rejected = services.batch_append(owner=request.user, batch=batch, **files)
                else:
                    batch, accepted, rejected = services.batch_create(owner=request.user, name=data["name"], **files)
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                context.update(batch=batch, accepted=accepted, rejected=rejected)
                self.message_user(request, f"Batch '{batch.name}': {len(accepted)} recordings stored, {len(rejected)} rejected.")
        return render(request, "admin/recognition/batch/upload.html", context)

    def train_view(self, request, object_id: int):
        """Train a model on the batch's labels, reviewed corrections winning: queues a train job (never trains here)."""
        batch = self.get_object(request, str(object_id))
        if batch is None or not self.has_view_permission(request, batch) or batch.owner_id != request.user.pk:
            raise Http404("No such batch.")
        labels, n_recordings = batch_pages.batch_train_labels(batch=batch)
        form = TrainForm(request.POST or None, labels=sorted(labels), initial={"name": f"{batch.name}-retrained"[:100]})
        if request.method == "POST" and form.is_valid():
            if len({form.cleaned_data["label_map"].get(k, k) for k in labels}) < 2:
                form.add_error(None, "Training needs labelled recordings of at least two classes.")
            else:
                try:
                    job = services.job_submit(owner=batch.owner, kind="train", batch=batch, params=form.params())
                except ServiceError as exc:
                    form.add_error(None, exc.message)
                else:
                    self.message_user(request, f"Queued train job #{job.pk} ({form.cleaned_data['family']}) on '{batch.name}'.",
                                      messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:recognition_job_change", args=[job.pk]))
        reviews = list(LabelReview.objects.filter(batch=batch))
        context = _page_context(self, request, batch, title=f"Train a model on '{batch.name}'", form=form,
                                labels=sorted(labels.items()), n_recordings=n_recordings, n_reviews=len(reviews),
                                n_corrections=sum(1 for r in reviews if r.is_correction))
        return TemplateResponse(request, "admin/recognition/batch/train.html", context)


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = ["original_filename", "owner", "label", "speaker", "format", "duration_s", "sample_rate", "created_at"]
    list_filter = [BatchFilter, LabelFilter, PredictedClassFilter, OutcomeFilter, ConfidenceFilter, HasTranscriptFilter,
                   FormatFilter, SampleRateFilter, ChannelsFilter, "created_at", "owner"]
    show_full_result_count = False  # no second COUNT over every recording on each filtered load
    search_fields = ["original_filename", "label", "speaker", "sha256", "transcript"]
    readonly_fields = ["player", "label", "owner", "sha256", "size_bytes", "format", "duration_s", "sample_rate", "channels",
                       "created_at"]
    fields = ["player", "original_filename", "owner", "label", "speaker", "transcript", "metadata", "sha256", "size_bytes",
              "format", "duration_s", "sample_rate", "channels", "created_at"]
    actions = kind_actions("recordings")

    def add_view(self, request, form_url="", extra_context=None):
        """Recordings arrive as uploads (the form has no file field): "Recordings + Add" opens the upload page."""
        return HttpResponseRedirect(reverse("admin:recognition_batch_upload"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is None or _editing(request):
            return super().change_view(request, object_id, form_url, extra_context)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        batches = list(selectors.batch_list(user=obj.owner).filter(recordings=obj).order_by("-created_at", "-id"))
        chosen = request.GET.get("batch", "")
        batch = next((b for b in batches if str(b.pk) == chosen), batches[0] if batches else None)
        context = _page_context(
            self, request, obj, title=obj.original_filename, review=review.recording_review(recording=obj),
            waveform=review.recording_waveform(recording=obj), batch=batch, batches=batches,
            neighbours_in_batch=batch_pages.batch_neighbours(batch=batch, recording=obj) if batch else None,
            label_form=LabelReviewForm(recording=obj, batch=batch),
            label_reviews=obj.label_reviews.select_related("reviewer", "batch").order_by("-created_at", "-id")[:20],
            can_review=obj.owner_id == request.user.pk,
            # the label and speaker the batch in view gave this recording (BatchMember); its own otherwise
            batch_label=batch_labels(batch=batch, recording_ids=[obj.pk]).get(obj.pk, (obj.label, obj.speaker))
            if batch else (obj.label, obj.speaker),
        )
        return TemplateResponse(request, "admin/recognition/recording/page.html", context)

    def get_urls(self):
        label = path("<int:object_id>/label/", self.admin_site.admin_view(require_POST(self.label_view)),
                     name="recognition_recording_label")
        return [label] + super().get_urls()

    def label_view(self, request, object_id: int):
        """Confirm or correct a recording's label (the owner only); back to the recording, or on to the next one."""
        rec = self.get_object(request, str(object_id))
        if rec is None or not self.has_view_permission(request, rec) or rec.owner_id != request.user.pk:
            raise Http404("No such recording.")
        form = LabelReviewForm(request.POST, recording=rec)
        url = reverse("admin:recognition_recording_change", args=[rec.pk])
        if not form.is_valid():
            self.message_user(request, "; ".join(e for errs in form.errors.values() for e in errs), messages.ERROR)
            return HttpResponseRedirect(url)
        batch = form.cleaned_data.get("batch")
        try:
            done = services.label_review_create(recording=rec, batch=batch, new_label=form.cleaned_data["label"],
                                                reviewer=request.user)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(url)
        verb = f"corrected from '{done.original_label or '(none)'}' to '{done.new_label}'" if done.is_correction else \
            f"'{done.new_label}' confirmed"
        self.message_user(request, f"{rec.original_filename}: label {verb}.", messages.SUCCESS)
        following = request.POST.get("next", "")
        if following.isdigit() and batch is not None and batch.recordings.filter(pk=int(following)).exists():
            return HttpResponseRedirect(reverse("admin:recognition_recording_change", args=[int(following)]) + f"?batch={batch.pk}")
        return HttpResponseRedirect(url + (f"?batch={batch.pk}" if batch else ""))

    @admin.display(description="Audio")
    def player(self, obj: Recording) -> str:
        if not obj.pk:
            return "-"
        return format_html('<audio controls preload="none" src="{}"></audio>', reverse("recording-audio", args=[obj.pk]))


def _trained_model(job: Job) -> ModelVersion | None:
    """The model version a finished train job registered (``params["trained_model"]``, ``name@version``)."""
    name, _, version = str((job.params or {}).get("trained_model") or "").partition("@")
    return ModelVersion.objects.filter(name=name, version=version).first() if name and version else None


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "progress", "model_used", "batch", "owner", "duration", "short_error", "created"]
    list_filter = ["status", "kind", "model_version", "created_at", "owner"]
    list_select_related = ["model_version", "batch", "owner"]  # the model column read one row per job without it
    search_fields = ["id", "error", "batch__name"]
    actions = ["cancel_jobs", "retry_failed", "rerun"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        """A job is a result: read on its report page, changed only by its actions (cancel, retry, re-run)."""
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is None:
            return super().change_view(request, object_id, form_url, extra_context)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        candidates = list(review.job_compare_candidates(job=obj))
        trained = _trained_model(obj) if jobkinds.stores(obj.kind) == "model" else None
        with_trained = Job.objects.filter(owner_id=obj.owner_id, batch_id=obj.batch_id, kind__in=jobkinds.storing("prediction"),
                                          model_version=trained).order_by("-created_at", "-id").first() \
            if trained and obj.batch_id else None
        # the old model's newest finished classify job on the batch: what the new model's job compares with
        before = Job.objects.filter(owner_id=obj.owner_id, batch_id=obj.batch_id, kind__in=jobkinds.storing("prediction"),
                                    status=Job.Status.SUCCEEDED,
                                    created_at__lte=obj.created_at).exclude(model_version=trained).order_by("-created_at", "-id").first() \
            if with_trained else None
        context = _page_context(
            self, request, obj, title=f"{obj.kind.capitalize()} job #{obj.pk}", review=review.job_review(job=obj, page=request.GET.get("page")),
            compare_candidates=candidates, trained=trained, trained_card=model_cards.model_card(model_version=trained, pictures=False)
            if trained else None, params=model_cards.scalar_rows(obj.params),
            label_map=sorted(((obj.params or {}).get("label_map") or {}).items()),
            classified_with_trained=with_trained, compare_before=before,
            can_submit=obj.owner_id == request.user.pk, results=job_results.job_results_page(job=obj, page=request.GET.get("page")),
        )
        return TemplateResponse(request, "admin/recognition/job/report.html", context)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:object_id>/compare/", view(self.compare_view), name="recognition_job_compare"),
            path("<int:object_id>/classify-trained/", view(require_POST(self.classify_trained_view)),
                 name="recognition_job_classify_trained"),
        ] + super().get_urls()

    def classify_trained_view(self, request, object_id: int):
        """Classify a train job's batch with the model it trained, to compare with the batch's earlier classify jobs."""
        job = self.get_object(request, str(object_id))
        if job is None or not self.has_view_permission(request, job) or job.owner_id != request.user.pk:
            raise Http404("No such job.")
        trained = _trained_model(job)
        if trained is None or job.batch is None:
            self.message_user(request, "This job trained no model on a batch.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:recognition_job_change", args=[job.pk]))
        try:
            new = services.job_submit(owner=job.owner, kind="classify", batch=job.batch, model=str(trained),
                                      params={"label_map": job.params["label_map"]} if job.params.get("label_map") else None)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:recognition_job_change", args=[job.pk]))
        self.message_user(request, f"Queued classify job #{new.pk} on '{job.batch}' with {trained}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:recognition_job_change", args=[new.pk]))

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

    @admin.display(description="Model", ordering="model_version__name")
    def model_used(self, obj: Job) -> str:
        """``name@version``, allowed to wrap before the version so the column stays narrow."""
        mv = obj.model_version
        return format_html("{}<wbr>@{}", mv.name, mv.version) if mv else "-"

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: Job) -> str:
        return format_html('<span title="{}">{}</span>', obj.created_at.isoformat(timespec="seconds"),
                           obj.created_at.strftime("%Y-%m-%d %H:%M"))

    @admin.display(description="Duration")
    def duration(self, obj: Job) -> str:
        return f"{obj.duration_s:.1f} s" if obj.duration_s is not None else "-"

    @admin.display(description="Error")
    def short_error(self, obj: Job) -> str:
        return (obj.error[:60] + "...") if len(obj.error) > 60 else obj.error

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
        # the recordings are counted and read by the planning service in the database, never loaded here
        for job in queryset.select_related("model_version", "batch", "owner"):
            try:
                new = services.job_rerun(job=job)
                self.message_user(request, f"Job #{job.pk}: re-run as job #{new.pk}.")
            except ServiceError as exc:
                self.message_user(request, f"Job #{job.pk}: {exc.message}", messages.WARNING)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "family", "task", "is_default", "installed", "headline", "margin", "created_at"]
    list_filter = ["task", "family", "is_default"]
    search_fields = ["name", "version", "sha256"]
    actions = ["make_default"]

    def has_add_permission(self, request) -> bool:
        return False  # models are registered by training or by shipped checkpoints, never typed in

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a trained model is a result: its page is its card; "make default" is an action

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is None:
            return super().change_view(request, object_id, form_url, extra_context)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        from recognition.services.models import model_version_problem

        trained_by = Job.objects.filter(kind__in=jobkinds.storing("model"), owner=request.user,
                                        params__trained_model=str(obj)).select_related("batch").first()
        context = _page_context(self, request, obj, title=f"Model {obj}", card=model_cards.model_card(model_version=obj),
                                problem=model_version_problem(obj), trained_by=trained_by)
        return TemplateResponse(request, "admin/recognition/modelversion/card.html", context)

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
