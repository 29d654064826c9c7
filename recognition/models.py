"""All database state of accentsite: recordings, batches, jobs, their results and model versions."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def recording_upload_key(instance: Recording, filename: str) -> str:
    """Storage key for an upload: never derived from the user's filename."""
    ext = (instance.format or "bin").lower()
    return f"recordings/{instance.uuid.hex[:2]}/{instance.uuid.hex}.{ext}"


class Batch(models.Model):
    """A named set of recordings with an owner: the unit people upload and review."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    recordings = models.ManyToManyField("Recording", related_name="batches", blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return self.name


class BatchMember(models.Model):
    """A recording as one batch uploaded it: the label and speaker *this* batch gave it.

    The same bytes uploaded again (another batch, another label) are one ``Recording``; each batch
    keeps its own labels here, and its reports use them. ``duplicate``: the file was already stored
    when this batch sent it.
    """

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="members")
    recording = models.ForeignKey("Recording", on_delete=models.CASCADE, related_name="memberships")
    label = models.CharField(max_length=100, blank=True)
    speaker = models.CharField(max_length=200, blank=True)
    duplicate = models.BooleanField(default=False)

    class Meta:
        ordering = ["batch", "id"]
        constraints = [models.UniqueConstraint(fields=["batch", "recording"], name="batchmember_unique_batch_recording")]


class Recording(models.Model):
    """One uploaded audio file as stored, with what its header says and optional labels."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="recordings")
    file = models.FileField(upload_to=recording_upload_key, max_length=255)
    original_filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.BigIntegerField(default=0)
    format = models.CharField(max_length=16)
    duration_s = models.FloatField(null=True, blank=True)
    sample_rate = models.PositiveIntegerField(null=True, blank=True)
    channels = models.PositiveSmallIntegerField(null=True, blank=True)
    label = models.CharField(max_length=100, blank=True, db_index=True)
    speaker = models.CharField(max_length=200, blank=True, db_index=True)
    transcript = models.TextField(
        blank=True, max_length=20000,
        help_text="What the speaker read, when known (e.g. the 'Please call Stella' passage). Reading models "
                  "(reading_fusion) align it to the audio and score the pronunciation; others ignore it.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "sha256"], name="recording_unique_owner_sha256")]

    def __str__(self) -> str:
        return self.original_filename


class ModelVersion(models.Model):
    """A trained model: its checkpoint, what it predicts, how good it was and on what data."""

    class Task(models.TextChoices):
        CLASSIFY = "classify"
        EMBED = "embed"

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    family = models.CharField(max_length=50)
    task = models.CharField(max_length=16, choices=Task.choices)
    labels = models.JSONField(default=list, blank=True)
    checkpoint = models.CharField(max_length=500, blank=True, help_text="Path under models/checkpoints or a storage key")
    sha256 = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    calibration = models.JSONField(default=dict, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    training_data = models.JSONField(default=dict, blank=True)
    code_version = models.CharField(max_length=64, blank=True)
    is_default = models.BooleanField(default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="model_versions",
        help_text="Who trained it: private to them (and users with the model permission). Empty: shipped, public.",
    )
    train_job = models.OneToOneField(
        "Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="trained_model",
        help_text="The train job that made it: at most one model version per train job.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            # names are per owner; shipped models (no owner) are unique among themselves
            models.UniqueConstraint(fields=["owner", "name", "version"], name="modelversion_unique_owner_name_version"),
            models.UniqueConstraint(fields=["name", "version"], condition=models.Q(owner__isnull=True),
                                    name="modelversion_unique_shipped_name_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Job(models.Model):
    """A unit of work over recordings, with an explicit state machine.

    ``queued -> running -> succeeded | failed | cancelled``; ``queued -> cancelled`` too.
    Transitions are methods that refuse illegal moves.
    """

    class Kind(models.TextChoices):
        FEATURES = "features"
        CLASSIFY = "classify"
        EMBED = "embed"
        TRAIN = "train"
        LANGUAGE = "language"
        TRANSCRIBE = "transcribe"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    _TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
        Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED},
    }

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    recordings = models.ManyToManyField(Recording, related_name="jobs", blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs")
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per stage, summed over chunks")
    report = models.JSONField(null=True, blank=True, help_text="Evaluation report when the batch has labels")
    plan = models.JSONField(
        null=True, blank=True,
        help_text="Set while a large job waits for its plan task (recognition/services/planning.py): what the task "
                  "resolves into recordings and chunks, and when it was sent. Empty once the job has its chunks.",
    )
    planned_at = models.DateTimeField(null=True, blank=True, help_text="When its plan task wrote its chunks (empty: "
                                                                       "planned in the request that created it)")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("view_workers", "Can see the worker fleet and every job's chunk timeline")]

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk}"

    class IllegalTransition(Exception):
        pass

    def _move(self, new: str) -> None:
        if new not in self._TRANSITIONS.get(self.status, set()):
            raise Job.IllegalTransition(f"job {self.pk}: cannot go from {self.status} to {new}")
        self.status = new

    def mark_running(self) -> None:
        self._move(self.Status.RUNNING)
        self.started_at = self.started_at or timezone.now()

    def mark_finished(self, status: str, error: str = "") -> None:
        self._move(status)
        self.error = error
        self.finished_at = timezone.now()

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def planning(self) -> bool:
        """Waiting for its plan task to write its chunks, or its later slices' chunks (``total`` is known already)."""
        return self.plan is not None and not self.is_terminal

    @property
    def processed(self) -> int:
        return self.done + self.failed

    @property
    def duration_s(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class JobChunk(models.Model):
    """A slice of a job's recordings run by one task, so a crash loses at most one chunk."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    recording_ids = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    #: the queue it is sent to (chosen once at submit: recognition.jobkinds.queue_for), and its audio
    #: seconds (its time limits scale with them: jobkinds.time_limits)
    queue = models.CharField(max_length=32, blank=True)
    audio_s = models.FloatField(default=0.0)
    #: a long recording's pieces done so far ({recording id: {"cuts", "done"}}: workers/pipeline/pieces.py),
    #: so a redelivered chunk goes on after them instead of starting the recording again
    partial = models.JSONField(default=dict, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="jobchunk_unique_job_index")]


class RecordingResult(models.Model):
    """The outcome of one job for one recording: succeeded or failed with a reason."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="results")
    recording = models.ForeignKey(Recording, null=True, on_delete=models.SET_NULL, related_name="results")
    recording_ref = models.CharField(max_length=255, blank=True, help_text="Filename kept if the recording is deleted")
    recording_key = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="The recording's id, kept after deletion")
    status = models.CharField(max_length=16, choices=Status.choices, db_index=True)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "recording"], name="result_unique_job_recording"),
        ]
        # a job's results in id order from any id on (the API's ?after= keyset pages)
        indexes = [models.Index(fields=["job", "id"], name="result_job_id")]


class FeatureSet(models.Model):
    """One extractor's output for one recording: summary in the database, frames in storage."""

    result = models.ForeignKey(RecordingResult, on_delete=models.CASCADE, related_name="feature_sets")
    extractor = models.CharField(max_length=50, db_index=True)
    extractor_version = models.CharField(max_length=20)
    config = models.JSONField(default=dict)
    summary = models.JSONField(default=dict)
    arrays = models.CharField(max_length=255, blank=True, help_text="Storage key of the .npz with frame-level arrays")
    array_names = models.JSONField(default=list)

    class Meta:
        ordering = ["result", "extractor"]
        constraints = [models.UniqueConstraint(fields=["result", "extractor"], name="featureset_unique_result_extractor")]


class Prediction(models.Model):
    """What a classifier said about one recording, window by window and overall."""

    class Outcome(models.TextChoices):
        OK = "ok"
        UNCERTAIN = "uncertain"
        INSUFFICIENT_SPEECH = "insufficient_speech"

    result = models.OneToOneField(RecordingResult, on_delete=models.CASCADE, related_name="prediction")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    checkpoint_sha256 = models.CharField(max_length=64)
    outcome = models.CharField(max_length=24, choices=Outcome.choices, db_index=True)
    predicted_class = models.CharField(max_length=100, blank=True, db_index=True)
    confidence = models.FloatField(null=True)
    probabilities = models.JSONField(default=dict, help_text="Calibrated class probabilities")
    probabilities_raw = models.JSONField(default=dict)
    window_share = models.JSONField(default=dict, help_text="Fraction of windows per predicted class")
    agreement = models.FloatField(null=True)
    speech_fraction = models.FloatField(null=True)
    windows = models.JSONField(default=list, help_text="[{start_s, end_s, probabilities}]")
    reading = models.JSONField(
        null=True, blank=True,
        help_text="Reading models only: the transcript's alignment (words read, words per second, goodness of "
                  "pronunciation) and whether it was fused into the probabilities; null without a transcript.",
    )


class Embedding(models.Model):
    """One vector per recording (and optionally per window) from an embedding model."""

    result = models.OneToOneField(RecordingResult, on_delete=models.CASCADE, related_name="embedding")
    recording = models.ForeignKey(Recording, on_delete=models.CASCADE, related_name="embeddings")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="embeddings")
    checkpoint_sha256 = models.CharField(max_length=64)
    dim = models.PositiveIntegerField()
    vector = models.JSONField(help_text="L2-normalised vector")
    windows = models.JSONField(default=list, blank=True)


class LanguageResult(models.Model):
    """Which language one recording is spoken in, by Whisper's language head, window by window."""

    class Outcome(models.TextChoices):
        OK = "ok"
        UNCERTAIN = "uncertain"
        INSUFFICIENT_SPEECH = "insufficient_speech"

    class Scored(models.TextChoices):
        WHOLE = "whole"
        WINDOWS = "windows"

    result = models.OneToOneField(RecordingResult, on_delete=models.CASCADE, related_name="language_id")
    outcome = models.CharField(max_length=24, choices=Outcome.choices, db_index=True,
                               help_text="uncertain: the answer's probability is under min_probability (language is the best guess)")
    language = models.CharField(max_length=8, blank=True, db_index=True,
                                help_text="The whole recording's top language, or that of most speech windows")
    probability = models.FloatField(null=True, help_text="Its probability: the whole's, or the mean over the speech windows")
    scored = models.CharField(max_length=8, choices=Scored.choices, blank=True,
                              help_text="whole: too few speech windows, heard whole padded to 30 s; windows: their vote")
    min_probability = models.FloatField(null=True, help_text="The uncertainty floor the outcome was judged by")
    scan_s = models.FloatField(null=True, blank=True, help_text="Only the first scan_s seconds were heard (null: all)")
    shares = models.JSONField(default=dict, help_text="Fraction of speech windows per language")
    mean_probabilities = models.JSONField(default=dict)
    windows = models.JSONField(default=list, help_text="[{start_s, end_s, speech, language, probability, top}]")
    languages = models.JSONField(null=True, blank=True, help_text="The languages the answer was restricted to, if any")
    window_s = models.FloatField()
    model_name = models.CharField(max_length=200, help_text="The Whisper model folder's name")
    model_sha256 = models.CharField(max_length=64, help_text="sha256 of its model.bin")


class Transcript(models.Model):
    """What Whisper heard in one recording: text, language and words with time stamps."""

    result = models.OneToOneField(RecordingResult, on_delete=models.CASCADE, related_name="transcription")
    text = models.TextField(blank=True)
    language = models.CharField(max_length=8, blank=True, db_index=True)
    language_probability = models.FloatField(null=True)
    segments = models.JSONField(default=list, help_text="[{start_s, end_s, text, avg_logprob, no_speech_prob, words: "
                                                        "[{word, start_s, end_s, probability}]}]")
    params = models.JSONField(default=dict, help_text="language (forced or null), beam_size, vad_filter")
    model_name = models.CharField(max_length=200, help_text="The Whisper model folder's name")
    model_sha256 = models.CharField(max_length=64, help_text="sha256 of its model.bin")


class LabelReview(models.Model):
    """A reviewer's verdict on one recording's label: confirmed (same label) or corrected.

    Rows are never edited: each review is a new row, so who changed what and when is kept, and
    ``original_label`` is the label the reviewer saw. The newest review of a recording (for its
    batch) is the label a train job uses (:func:`recognition.services.labels.label_corrections`).
    """

    recording = models.ForeignKey(Recording, on_delete=models.CASCADE, related_name="label_reviews")
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="label_reviews")
    original_label = models.CharField(max_length=100, blank=True)
    new_label = models.CharField(max_length=100)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="label_reviews")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        verb = "confirmed" if self.is_correction is False else f"{self.original_label or '(none)'} -> {self.new_label}"
        return f"{self.recording}: {verb}"

    @property
    def is_correction(self) -> bool:
        return self.new_label != self.original_label
