"""Serializers: shapes of what the API reads and returns. No business logic here."""
from django.utils.functional import lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from recognition import jobkinds
from recognition.errors import ServiceError
from recognition.models import (
    Batch,
    Embedding,
    FeatureSet,
    Job,
    LanguageResult,
    ModelVersion,
    Prediction,
    Recording,
    RecordingResult,
    Transcript,
)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="machine-readable, e.g. not_found, invalid, invalid_params, model_unavailable")
    message = serializers.CharField(help_text="what went wrong, in words a person can act on")
    fields = serializers.DictField(required=False, help_text="400 'invalid' only: the messages per request field")


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the whole API (see ``recognition.api.errors``)."""

    error = ErrorDetailSerializer()


class SafeJSONField(serializers.JSONField):
    """A JSON field that refuses NUL characters and documents nested deeper than 32 levels (400),
    instead of a RecursionError in the parser or a DataError in PostgreSQL (500)."""

    def to_internal_value(self, data):
        from recognition.validation import json_check

        try:
            value = super().to_internal_value(data)
        except RecursionError as exc:
            raise serializers.ValidationError("The JSON nests too deep to parse.", code="too_deep") from exc
        try:
            json_check(value, field=self.field_name or "json")
        except ServiceError as exc:
            raise serializers.ValidationError(exc.message, code=exc.code) from exc
        return value


class RecordingSerializer(serializers.ModelSerializer):
    audio_url = serializers.SerializerMethodField()

    class Meta:
        model = Recording
        fields = [
            "id", "original_filename", "sha256", "size_bytes", "format", "duration_s", "sample_rate", "channels",
            "label", "speaker", "transcript", "metadata", "created_at", "audio_url",
        ]

    def get_audio_url(self, obj: Recording) -> str:
        return f"/api/v1/recordings/{obj.pk}/audio/"


class RecordingUploadSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    label = serializers.CharField(required=False, allow_blank=True, max_length=100)
    speaker = serializers.CharField(required=False, allow_blank=True, max_length=200)
    transcript = serializers.CharField(required=False, allow_blank=True, max_length=20000,
                                       help_text="What the speaker read, when known; reading models use it.")
    metadata = SafeJSONField(required=False)

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object.")
        return value


class BatchUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    files = serializers.ListField(child=serializers.FileField(allow_empty_file=True), required=False)
    archive = serializers.FileField(required=False)
    labels = serializers.FileField(required=False, help_text="CSV: filename,label[,speaker]")
    transcript = serializers.CharField(required=False, allow_blank=True, max_length=20000,
                                       help_text="The text every speaker in the batch read (e.g. an elicitation "
                                                 "passage); reading models use it.")

    def validate(self, attrs):
        if not attrs.get("files") and not attrs.get("archive"):
            raise serializers.ValidationError("Send one or more 'files' and/or one 'archive' (.zip).")
        return attrs


class BatchAppendSerializer(serializers.Serializer):
    """``POST /batches/<id>/recordings/``: more files for a batch (its name and description stay)."""

    files = serializers.ListField(child=serializers.FileField(allow_empty_file=True), required=False)
    archive = serializers.FileField(required=False)
    labels = serializers.FileField(required=False, help_text="CSV: filename,label[,speaker] for this request's files")
    transcript = serializers.CharField(required=False, allow_blank=True, max_length=20000,
                                       help_text="The text the speakers of these files read, if any; reading models use it.")

    def validate(self, attrs):
        if not attrs.get("files") and not attrs.get("archive"):
            raise serializers.ValidationError("Send one or more 'files' and/or one 'archive' (.zip).")
        return attrs


class RejectionSerializer(serializers.Serializer):
    filename = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class BatchSerializer(serializers.ModelSerializer):
    recording_count = serializers.SerializerMethodField()

    def get_recording_count(self, obj: Batch) -> int:
        """Counted with the list's query (``selectors.batches_counted``) where the view asked for it."""
        counted = getattr(obj, "n_recordings", None)
        return obj.recordings.count() if counted is None else counted

    class Meta:
        model = Batch
        fields = ["id", "name", "description", "created_at", "recording_count"]


class DuplicateSerializer(serializers.Serializer):
    recording = serializers.IntegerField(help_text="the recording these bytes were already stored as")
    filename = serializers.CharField(help_text="the name it was first uploaded under")
    label = serializers.CharField(allow_blank=True, help_text="the label this batch gives it (its reports use this one)")
    speaker = serializers.CharField(allow_blank=True)


class BatchCreatedSerializer(BatchSerializer):
    recordings = RecordingSerializer(many=True, source="accepted")
    rejected = RejectionSerializer(many=True, help_text="the first UPLOAD_REJECTIONS_SHOWN refused files, each with its reason")
    rejected_count = serializers.IntegerField(help_text="how many files (or labels rows) were refused in all")
    rejected_by_code = serializers.DictField(child=serializers.IntegerField(), help_text="refusals counted by code")
    duplicates = serializers.SerializerMethodField(
        help_text="files whose bytes you had uploaded before: the stored recording is reused, its own label "
                  "and speaker unchanged; this batch keeps the label and speaker it gave")

    class Meta(BatchSerializer.Meta):
        fields = BatchSerializer.Meta.fields + ["recordings", "rejected", "rejected_count", "rejected_by_code", "duplicates"]

    @extend_schema_field(DuplicateSerializer(many=True))
    def get_duplicates(self, obj: Batch) -> list[dict]:
        """This request's duplicates only (an append to a large batch does not list the batch's earlier ones)."""
        rows = (obj.members.filter(duplicate=True, recording_id__in=[r.pk for r in obj.accepted])
                .select_related("recording").order_by("id"))
        return [{"recording": m.recording_id, "filename": m.recording.original_filename, "label": m.label,
                 "speaker": m.speaker} for m in rows]


class JobCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Job.Kind.choices)
    # ids fit a 64-bit column: a larger number is a 400 here, not an OverflowError in the database driver
    batch = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    recordings = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), required=False, max_length=100_000)
    # written from the job-kind, extractor and family registries when the schema is read (lazy: the
    # extractors import torch, which the web process does not need at start)
    params = SafeJSONField(required=False, help_text=lazy(jobkinds.params_help, str)())
    model = serializers.CharField(required=False, max_length=160,
                                  help_text="classify / embed: name or name@version; the default model when omitted")

    def validate(self, attrs):
        if jobkinds.get(attrs["kind"]).needs_recordings and ("batch" in attrs) == ("recordings" in attrs):
            raise serializers.ValidationError("Give exactly one of 'batch' or 'recordings'.")
        return attrs


class JobSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    model = serializers.SerializerMethodField()
    duration_s = serializers.FloatField(read_only=True, allow_null=True)
    planning = serializers.BooleanField(
        read_only=True, help_text="Queued and waiting for its chunks to be written (a job of more than "
                                  "JOB_PLAN_INLINE_MAX recordings); progress.total is already known.")

    class Meta:
        model = Job
        fields = [
            "id", "kind", "status", "planning", "batch", "model", "params", "progress", "error", "timings",
            "created_at", "started_at", "finished_at", "duration_s",
        ]

    def get_progress(self, obj: Job) -> dict:
        return {"total": obj.total, "done": obj.done, "failed": obj.failed}

    def get_model(self, obj: Job) -> str | None:
        return str(obj.model_version) if obj.model_version_id else None


class FeatureSetSerializer(serializers.ModelSerializer):
    class Meta:
        model = FeatureSet
        fields = ["extractor", "extractor_version", "config", "summary", "arrays", "array_names"]


class PredictionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version", read_only=True)

    class Meta:
        model = Prediction
        fields = [
            "outcome", "predicted_class", "confidence", "probabilities", "probabilities_raw", "window_share",
            "agreement", "speech_fraction", "windows", "reading", "model", "checkpoint_sha256",
        ]


class EmbeddingSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version", read_only=True)

    class Meta:
        model = Embedding
        fields = ["dim", "vector", "model", "checkpoint_sha256"]


class LanguageResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = LanguageResult
        fields = ["outcome", "language", "probability", "scored", "min_probability", "shares", "mean_probabilities", "windows",
                  "languages", "window_s", "scan_s", "model_name", "model_sha256"]


class TranscriptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Transcript
        fields = ["text", "language", "language_probability", "segments", "params", "model_name", "model_sha256"]


class ResultSerializer(serializers.ModelSerializer):
    recording = serializers.PrimaryKeyRelatedField(read_only=True)
    filename = serializers.CharField(source="recording_ref")
    label = serializers.SerializerMethodField()
    features = FeatureSetSerializer(many=True, source="feature_sets")
    prediction = serializers.SerializerMethodField()
    embedding = serializers.SerializerMethodField()

    class Meta:
        model = RecordingResult
        fields = ["id", "recording", "filename", "label", "status", "error_code", "error_message", "timings",
                  "features", "prediction", "embedding", "language", "transcript"]

    def get_label(self, obj) -> str:
        """The label the job's batch gave the recording (``batch_labels`` in the context), else its own."""
        if not obj.recording_id:
            return ""
        own = self.context.get("batch_labels") or {}
        return own.get(obj.recording_id, (obj.recording.label, ""))[0]

    def get_prediction(self, obj) -> dict | None:
        p = getattr(obj, "prediction", None)
        return PredictionSerializer(p).data if p else None

    def get_embedding(self, obj) -> dict | None:
        e = getattr(obj, "embedding", None)
        return EmbeddingSerializer(e).data if e else None

    language = serializers.SerializerMethodField(help_text="language jobs: the spoken language, window by window")
    transcript = serializers.SerializerMethodField(
        help_text="transcribe jobs, and classify jobs with transcript auto: what Whisper heard, with word time stamps")

    def get_language(self, obj) -> dict | None:
        row = getattr(obj, "language_id", None)
        return LanguageResultSerializer(row).data if row else None

    def get_transcript(self, obj) -> dict | None:
        row = getattr(obj, "transcription", None)
        return TranscriptSerializer(row).data if row else None


class ModelVersionSerializer(serializers.ModelSerializer):
    unavailable_reason = serializers.SerializerMethodField(
        help_text="empty when the version can run; else why not (its checkpoint is missing or was replaced)")
    public = serializers.SerializerMethodField(help_text="true for shipped models; false for a user's trained model")
    details = serializers.SerializerMethodField(
        help_text="true when metrics / training_data are the whole report (you own the model); false: headline numbers only")
    metrics = serializers.SerializerMethodField()
    hyperparameters = serializers.SerializerMethodField()
    training_data = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "version", "family", "task", "labels", "sha256", "is_default", "unavailable_reason",
            "public", "details", "metrics", "calibration", "hyperparameters", "training_data", "code_version", "created_at",
        ]

    def _report(self, obj: ModelVersion) -> dict:
        from recognition.selectors import model_report

        cache = self.context.setdefault("_model_reports", {})
        if obj.pk not in cache:
            request = self.context.get("request")
            user = getattr(request, "user", None)
            if user is None:  # no request: show only what anyone may see
                from django.contrib.auth.models import AnonymousUser

                user = AnonymousUser()
            cache[obj.pk] = model_report(user=user, model_version=obj)
        return cache[obj.pk]

    def get_public(self, obj: ModelVersion) -> bool:
        return obj.owner_id is None

    def get_details(self, obj: ModelVersion) -> bool:
        return self._report(obj)["details"]

    def get_metrics(self, obj: ModelVersion) -> dict:
        return self._report(obj)["metrics"]

    def get_hyperparameters(self, obj: ModelVersion) -> dict:
        return self._report(obj)["hyperparameters"]

    def get_training_data(self, obj: ModelVersion) -> dict:
        return self._report(obj)["training_data"]

    def get_unavailable_reason(self, obj: ModelVersion) -> str:
        from recognition.services.models import model_version_problem

        return model_version_problem(obj)


class SimilarSerializer(serializers.Serializer):
    recording = RecordingSerializer()
    similarity = serializers.FloatField()


class PredictRequestSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    task = serializers.ChoiceField(choices=["classify", "language", "transcribe"], required=False, default="classify",
                                   help_text="classify (default): the accent model; language: the spoken language by Whisper "
                                             "(answer as a language job's result); transcribe: Whisper's transcript with word time stamps")
    model = serializers.CharField(required=False, max_length=160, help_text="name or name@version; default model if omitted")
    threshold = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    vad = serializers.BooleanField(required=False, default=None, allow_null=True,
                                   help_text="silero speech gate; off by default, as in classify jobs (CLASSIFY_VAD_DEFAULT)")
    transcript = serializers.CharField(required=False, allow_blank=True, max_length=20000,
                                       help_text="What the speaker read, when known; reading models use it.")
    window_s = serializers.FloatField(required=False, help_text="language: window length in seconds, over 1 and at most 30 (4)")
    languages = serializers.CharField(required=False, max_length=1000,
                                      help_text="language / transcribe: restrict the answer (transcribe: each speech piece's "
                                                "language) to these codes, comma-separated (en,fr,es)")
    scan_s = serializers.FloatField(required=False, help_text="language: hear only the first seconds (all by default)")
    min_probability = serializers.FloatField(required=False, help_text="language: under it the outcome is 'uncertain' (0.4)")
    language = serializers.CharField(required=False, max_length=8, help_text="transcribe: force the language")
    beam_size = serializers.IntegerField(required=False, help_text="transcribe: beam width (5; 1 = greedy, faster)")
    vad_filter = serializers.BooleanField(required=False, default=True, help_text="transcribe: drop silence before decoding")
    classes = serializers.CharField(required=False, allow_blank=True, max_length=3000,
                                    help_text="classify with a zero-shot model (spoken-words): the words to choose from, "
                                              "comma-separated (zero,two,six); default: the ten digits")
    wait = serializers.BooleanField(required=False, default=True,
                                    help_text="wait up to PREDICT_TIMEOUT_S for the answer (default); false: answer 202 at once "
                                              "with the URL to fetch it from")


class PredictPendingSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="the request's id")
    status = serializers.ChoiceField(choices=["queued", "running"])
    url = serializers.CharField(help_text="GET it for the answer (200) once ready; 202 until then")
    message = serializers.CharField()


class PredictResponseSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="the request's id (GET /api/v1/predict/<id>/ gives this answer again)")
    predicted_class = serializers.CharField(allow_null=True)
    confidence = serializers.FloatField(allow_null=True)
    probabilities = serializers.DictField(child=serializers.FloatField(), help_text="Calibrated class probabilities")
    probabilities_raw = serializers.DictField(child=serializers.FloatField(), help_text="Uncalibrated (softmax) probabilities")
    all_predictions = serializers.DictField(child=serializers.FloatField(),
                                            help_text="Deprecated alias of probabilities, for old Flask / Gradio clients")
    calibrated = serializers.BooleanField()
    outcome = serializers.ChoiceField(choices=["ok", "uncertain", "insufficient_speech"])
    windows = serializers.ListField(child=serializers.DictField())
    reading = serializers.DictField(allow_null=True, required=False,
                                    help_text="Reading models: the transcript's alignment and whether it was used")
    model = serializers.CharField()
