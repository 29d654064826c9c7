"""REST API views: parse the request, call a service or selector, serialise. Nothing else."""
from __future__ import annotations

from collections import Counter

import django_filters
from django.conf import settings
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from recognition import exports, review, selectors, services
from recognition.api import serializers as s
from recognition.api.parsers import SafeJSONParser as JSONParser
from recognition.api.throttling import UploadThrottle
from recognition.errors import NotFound, ServiceError
from recognition.models import Batch, Job, ModelVersion, Prediction, Recording, RecordingResult


class OwnerScoped:
    """Owner-scoped querysets through a selector; an empty one while the schema is generated."""

    selector = None
    model = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.model.objects.none()
        return type(self).selector(user=self.request.user)


class RecordingFilter(django_filters.FilterSet):
    batch = django_filters.NumberFilter(field_name="batches")
    filename = django_filters.CharFilter(field_name="original_filename", lookup_expr="icontains")

    class Meta:
        model = Recording
        fields = ["label", "speaker", "format", "batch", "sha256"]


class JobFilter(django_filters.FilterSet):
    class Meta:
        model = Job
        fields = ["kind", "status", "batch"]


class ResultFilter(django_filters.FilterSet):
    """``/jobs/<id>/results/?status=failed``: filters the job's results, not the jobs."""

    status = django_filters.ChoiceFilter(choices=RecordingResult.Status.choices)
    error_code = django_filters.CharFilter()
    outcome = django_filters.ChoiceFilter(field_name="prediction__outcome", choices=Prediction.Outcome.choices)

    class Meta:
        model = RecordingResult
        fields = ["status", "error_code", "outcome"]


class RecordingViewSet(OwnerScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = s.RecordingSerializer
    filterset_class = RecordingFilter
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    throttle_scope = "uploads"

    selector = staticmethod(selectors.recording_list)
    model = Recording

    def get_throttles(self):
        return [UploadThrottle()] if self.action == "create" else []

    @extend_schema(request=s.RecordingUploadSerializer, responses={201: s.RecordingSerializer})
    def create(self, request):
        form = s.RecordingUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        recording, created = services.recording_create(
            owner=request.user, fileobj=upload, filename=upload.name,
            label=form.validated_data.get("label", ""), speaker=form.validated_data.get("speaker", ""),
            transcript=form.validated_data.get("transcript", ""), metadata=form.validated_data.get("metadata"),
        )
        data = dict(s.RecordingSerializer(recording).data, duplicate=not created, duration_s=recording.duration_s)
        return Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def perform_destroy(self, instance):
        services.recording_delete(recording=instance)

    @extend_schema(responses={(200, "audio/*"): bytes})
    @action(detail=True, methods=["get"])
    def audio(self, request, pk=None):
        """The stored audio, streamed, only to its owner."""
        recording = self.get_object()
        return _audio_response(recording)

    @extend_schema(
        parameters=[OpenApiParameter("k", int, description="how many neighbours (1-100, default 10); pages of page_size"),
                    OpenApiParameter("model", str, description="name@version of the embedding model")],
        responses={200: s.SimilarSerializer(many=True), 409: s.ErrorSerializer},
    )
    @action(detail=True, methods=["get"])
    def similar(self, request, pk=None):
        """Nearest recordings (yours only) by cosine similarity of their embeddings.

        Besides the page, the answer says how far the search looked: ``backend`` (``pgvector-hnsw`` or
        ``exact``), ``exact`` (true: every one of your embeddings of that model was compared) and
        ``searched`` (how many the exact search compared; ``null`` through the index). Without pgvector
        the search reads your newest ``SIMILAR_EXACT_MAX`` embeddings at most."""
        recording = self.get_object()
        try:
            k = max(1, min(int(request.query_params.get("k", 10)), 100))
        except ValueError as exc:
            raise ServiceError("invalid_params", "'k' must be an integer.") from exc
        model = request.query_params.get("model")
        mv = services.model_resolve(model, task="embed", user=request.user) if model else None
        found = selectors.similar_search(user=request.user, recording=recording, model_version=mv, k=k)
        page = self.paginate_queryset([{"recording": r, "similarity": sim} for r, sim in found.pairs])
        response = self.get_paginated_response(s.SimilarSerializer(page, many=True).data)
        # how far the search looked: without pgvector, the newest SIMILAR_EXACT_MAX embeddings at most
        response.data.update(backend=found.backend, exact=found.exact, searched=found.searched)
        response["X-Similarity-Backend"] = found.backend
        return response


def _audio_response(recording: Recording) -> FileResponse:
    fh = recording.file.storage.open(recording.file.name, "rb")
    content_type = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg",
                    "opus": "audio/ogg", "m4a": "audio/mp4", "aac": "audio/aac", "webm": "audio/webm"}
    response = FileResponse(fh, content_type=content_type.get(recording.format, "application/octet-stream"))
    response["Content-Disposition"] = f'inline; filename="recording-{recording.pk}.{recording.format}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


class BatchViewSet(OwnerScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.BatchSerializer
    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "uploads"

    selector = staticmethod(selectors.batch_list)
    model = Batch

    def get_queryset(self):
        return selectors.batches_counted(super().get_queryset())

    def get_throttles(self):
        return [UploadThrottle()] if self.action in ("create", "recordings") else []

    @extend_schema(request=s.BatchUploadSerializer, responses={201: s.BatchCreatedSerializer})
    def create(self, request):
        form = s.BatchUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        labels = _labels_csv(data)
        batch, accepted, rejected = services.batch_create(
            owner=request.user, name=data["name"], description=data.get("description", ""),
            files=[(f.name, f) for f in data.get("files", [])], archive=data.get("archive"),
            labels_csv=labels, transcript=data.get("transcript", ""),
        )
        return Response(_upload_answer(batch, accepted, rejected), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.BatchAppendSerializer, responses={200: s.BatchCreatedSerializer, 404: s.ErrorSerializer})
    @action(detail=True, methods=["post"])
    def recordings(self, request, pk=None):
        """Add files and/or a zip (with a labels CSV for them) to one of your batches: a large batch
        arrives over several requests, each judged file by file like the first upload."""
        batch = self.get_object()
        form = s.BatchAppendSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        accepted, rejected = services.batch_append(
            owner=request.user, batch=batch, files=[(f.name, f) for f in data.get("files", [])],
            archive=data.get("archive"), labels_csv=_labels_csv(data), transcript=data.get("transcript", ""),
        )
        batch.n_recordings = batch.recordings.count()
        return Response(_upload_answer(batch, accepted, rejected), status=status.HTTP_200_OK)


def _labels_csv(data: dict) -> bytes | None:
    """The labels CSV's bytes, refused (413) over ``LABELS_MAX_BYTES`` before anything is stored."""
    labels = data.get("labels")
    if labels is None:
        return None
    if labels.size > settings.LABELS_MAX_BYTES:
        raise ServiceError("labels_too_large", f"The labels CSV is {labels.size / 1e6:.1f} MB; the limit is "
                           f"{settings.LABELS_MAX_BYTES / 1e6:.0f} MB (LABELS_MAX_BYTES).", status_code=413)
    return labels.read()


def _upload_answer(batch: Batch, accepted: list, rejected: list) -> dict:
    batch.accepted = accepted
    batch.rejected = [r.as_dict() for r in rejected[: settings.UPLOAD_REJECTIONS_SHOWN]]
    batch.rejected_count = len(rejected)
    batch.rejected_by_code = dict(Counter(r.code for r in rejected))
    return s.BatchCreatedSerializer(batch).data


JOB_EXAMPLES = [
    OpenApiExample("features", request_only=True, value={
        "kind": "features", "batch": 1, "params": {"extractors": ["mfcc", "prosody", "egemaps"], "chunk_size": 8}}),
    OpenApiExample("classify", request_only=True, value={
        "kind": "classify", "batch": 1, "model": "accent-native@1.1.0",
        "params": {"threshold": 0.8, "vad": False, "window_s": 4.0, "hop_s": 2.0,
                   "label_map": {"native_english": "native", "mandarin_l1": "non_native"},
                   "transcript": "Please call Stella."}}),
    OpenApiExample("embed", request_only=True, value={
        "kind": "embed", "recordings": [1, 2, 3], "model": "speaker-encoder", "params": {"per_window": True}}),
    OpenApiExample("train", request_only=True, value={
        "kind": "train", "batch": 1,
        "params": {"family": "speaker_head", "name": "my-model", "epochs": 30, "seed": 0,
                   "label_map": {"native_english": "native", "mandarin_l1": "non_native"},
                   "deploy_prior": [0.5, 0.5], "hparams": {"lr": 0.001}, "window_s": 4.0, "hop_s": 2.0}}),
    OpenApiExample("train a Whisper probe", request_only=True, value={
        "kind": "train", "batch": 1, "params": {"family": "whisper_probe", "name": "my-whisper-model",
                                                "label_map": {"native_english": "native", "mandarin_l1": "non_native"}}}),
    OpenApiExample("language", request_only=True, value={
        "kind": "language", "batch": 1, "params": {"window_s": 4.0, "languages": ["en", "fr", "de", "es", "it"],
                                                   "vad": True}}),
    OpenApiExample("transcribe", request_only=True, value={
        "kind": "transcribe", "batch": 1, "params": {"language": "en", "beam_size": 1, "vad_filter": True}}),
]


class JobViewSet(OwnerScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.JobSerializer
    filterset_class = JobFilter
    parser_classes = [JSONParser]

    selector = staticmethod(selectors.job_list)
    model = Job

    def filter_queryset(self, queryset):
        """The job filters (kind, status, batch) select jobs in the list only: on one job's pages the
        same names mean something else (``results/?status=failed`` filters its results)."""
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)

    @extend_schema(request=s.JobCreateSerializer, responses={202: s.JobSerializer, 409: s.ErrorSerializer},
                   examples=JOB_EXAMPLES)
    def create(self, request):
        form = s.JobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        batch = recordings = None
        if "batch" in data:
            batch = selectors.batch_list(user=request.user).filter(pk=data["batch"]).first()
            if batch is None:
                raise NotFound("not_found", "No such batch.")
        if "recordings" in data:
            ids = set(data["recordings"])
            recordings = list(selectors.recording_list(user=request.user).filter(pk__in=ids).order_by("id"))
            if len(recordings) != len(ids):
                raise NotFound("not_found", "One or more recordings do not exist.")
        job = services.job_submit(
            owner=request.user, kind=data["kind"], batch=batch, recordings=recordings,
            params=data.get("params") or {}, model=data.get("model"),
        )
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: s.JobSerializer, 409: s.ErrorSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.job_cancel(job=self.get_object())
        return Response(s.JobSerializer(job).data)

    @extend_schema(request=None, responses={202: s.JobSerializer, 409: s.ErrorSerializer})
    @action(detail=True, methods=["post"], url_path="retry-failed")
    def retry_failed(self, request, pk=None):
        """A new job over only the recordings that failed in this one."""
        job = services.job_retry_failed(job=self.get_object())
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=RecordingResult.Status.values, description="only results with this status"),
            OpenApiParameter("error_code", str, description="only failed results with this code"),
            OpenApiParameter("outcome", str, enum=Prediction.Outcome.values, description="classify jobs: only this outcome"),
            OpenApiParameter("export", str, enum=["csv", "parquet"], description=(
                "a file of every result (the filters apply) instead of a page: one row per recording with raw and "
                "calibrated probabilities, outcome, window shares, the features flattened as extractor.key, the "
                "embedding (Parquet: a list column; CSV: e_0..e_N)")),
            OpenApiParameter("windows", bool, description="with export: one row per window instead of per recording"),
        ],
        responses={(200, "application/json"): s.ResultSerializer(many=True), (200, "text/csv"): bytes,
                   (200, "application/vnd.apache.parquet"): bytes},
    )
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        from recognition.services.recordings import batch_labels

        job = self.get_object()
        found = ResultFilter(request.query_params, queryset=selectors.job_results(job=job), request=request)
        if not found.is_valid():
            raise ValidationError(found.errors)
        results = found.qs
        export = request.query_params.get("export")
        if export:
            labels = batch_labels(batch=job.batch) if job.batch_id else {}
            return _results_export(job, results, export, windows=request.query_params.get("windows") in ("1", "true"),
                                       labels=labels)
        page = self.paginate_queryset(results)
        # one page's labels, not the whole batch's: the page costs the same for 100 or 100,000 recordings
        labels = batch_labels(batch=job.batch, recording_ids=[r.recording_id for r in page]) if job.batch_id else {}
        return self.get_paginated_response(s.ResultSerializer(page, many=True, context={"batch_labels": labels}).data)

    @extend_schema(responses=dict)
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        """The evaluation report of a classify job over labelled recordings."""
        job = self.get_object()
        if job.report is None:
            reason = "the job has not finished" if not job.is_terminal else "the batch carries no usable true labels"
            raise NotFound("no_report", f"No report: {reason}.")
        return Response(job.report)

    @extend_schema(
        parameters=[OpenApiParameter("method", str, enum=["auto", "pca", "umap"],
                                     description="auto: UMAP when installed and there are 15+ points, else PCA")],
        responses=dict,
    )
    @action(detail=True, methods=["get"])
    def projection(self, request, pk=None):
        """2-D projection of an embed job's vectors, one point per recording with its label: an even sample
        of at most ``PROJECTION_MAX_POINTS`` of them (``total``: how many the job has; ``sampled``: whether
        the points are a sample)."""
        method = request.query_params.get("method", "auto")
        if method not in ("auto", "pca", "umap"):
            raise ServiceError("invalid_params", "'method' must be auto, pca or umap.")
        return Response(review.job_projection(job=self.get_object(), method=method, limit=settings.PROJECTION_MAX_POINTS))

    @extend_schema(parameters=[OpenApiParameter("other_id", int, OpenApiParameter.PATH, description="The job to compare with")],
                   responses=dict)
    @action(detail=True, methods=["get"], url_path=r"compare/(?P<other_id>[0-9]+)")
    def compare(self, request, pk=None, other_id=None):
        """Which recordings changed prediction between two of your classify jobs, and each job's accuracy."""
        return Response(review.jobs_compare(job_a=self.get_object(), job_b=selectors.job_get(user=request.user, job_id=int(other_id))))


def _results_export(job: Job, results, export: str, *, windows: bool, labels: dict | None = None) -> StreamingHttpResponse:
    """Every result (after the filters) as a streamed CSV or Parquet file (see ``recognition.exports``)."""
    if export not in ("csv", "parquet"):
        raise ServiceError("invalid_params", "'export' must be csv or parquet.")
    spec, rows = exports.job_table(job, results, windows=windows, batch_labels=labels)
    name = f"job-{job.pk}-{'windows' if windows else 'results'}"
    if export == "csv":
        response = StreamingHttpResponse(exports.csv_chunks(spec, rows), content_type="text/csv; charset=utf-8")
    else:
        spool = exports.parquet_spool(spec, rows)
        size = spool.seek(0, 2)
        spool.seek(0)
        response = StreamingHttpResponse(exports.file_chunks(spool), content_type="application/vnd.apache.parquet")
        response["Content-Length"] = str(size)
    response["Content-Disposition"] = f'attachment; filename="{name}.{export}"'
    return response


class PredictView(APIView):
    """One file in, an answer out: every class probability, and ``uncertain`` under the threshold.

    ``200`` with the answer when the worker gives it within ``PREDICT_TIMEOUT_S``; otherwise ``202``
    with ``url``, where ``GET`` gives the same answer once it is ready. ``429`` (with ``Retry-After``)
    when you already have ``PREDICT_MAX_CONCURRENT_PER_USER`` predicts open."""

    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [UploadThrottle]
    throttle_scope = "uploads"

    @extend_schema(request=s.PredictRequestSerializer,
                   responses={200: s.PredictResponseSerializer, 202: s.PredictPendingSerializer, 404: s.ErrorSerializer,
                              409: s.ErrorSerializer, 429: s.ErrorSerializer, 503: s.ErrorSerializer})
    def post(self, request):
        from recognition.services.predict import predict_submit

        form = s.PredictRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        upload = data["file"]
        if data["task"] != "classify":  # Whisper, on the interactive queue too
            answer = predict_submit(fileobj=upload, filename=upload.name, user=request.user, task=data["task"],
                                    params=_whisper_params(data), wait=data["wait"])
        else:
            vad = data.get("vad")
            answer = predict_submit(fileobj=upload, filename=upload.name, model=data.get("model"), user=request.user,
                                    threshold=data.get("threshold"), vad=settings.CLASSIFY_VAD_DEFAULT if vad is None else vad,
                                    transcript=data.get("transcript", ""), wait=data["wait"],
                                    classes=data.get("classes") or None)  # a zero-shot model's classes (spoken-words)
        return _predict_response(answer)


class PredictResultView(APIView):
    """The answer of an earlier ``POST /predict/`` that answered ``202``: ``200`` with it once the worker
    has it, ``202`` while it is queued or running; 404 for anyone but its sender."""

    @extend_schema(responses={200: s.PredictResponseSerializer, 202: s.PredictPendingSerializer, 404: s.ErrorSerializer,
                              503: s.ErrorSerializer})
    def get(self, request, pk: str):
        from recognition.services.predict import predict_fetch

        return _predict_response(predict_fetch(request_id=pk, user=request.user))


def _predict_response(answer) -> Response:
    response = Response(answer.body, status=answer.status)
    if answer.status == 202:
        response["Location"] = answer.body["url"]
        response["Retry-After"] = str(answer.retry_after or 1)
    return response


def _whisper_params(data: dict) -> dict:
    """/predict/ form fields as the params of a language / transcribe job (checked by the same service):
    ``languages`` (comma-separated) restricts either, as in jobs."""
    codes = [code for code in (data.get("languages") or "").replace(" ", "").split(",") if code]
    if data["task"] == "language":
        params = {"vad": data["vad"]} if data.get("vad") is not None else {}  # unset: the job's default (on)
        params.update({key: data[key] for key in ("window_s", "scan_s", "min_probability") if data.get(key) is not None})
    else:
        params = {"vad_filter": data["vad_filter"]}
        params.update({key: data[key] for key in ("language", "beam_size") if data.get(key) not in (None, "")})
    if codes:
        params["languages"] = codes
    return params


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ModelVersionSerializer
    filterset_fields = ["name", "task", "family", "is_default"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ModelVersion.objects.none()
        return selectors.model_list(user=self.request.user)



