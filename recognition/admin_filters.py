"""The recording change list's filters. Each costs a bounded query (or none) on every load whatever
the number of recordings and predictions: choices come from fixed lists, the few model rows or a
skip scan of an index, and a filter on predictions is an ``EXISTS`` semi-join, never a join over
every prediction made DISTINCT (issue 25: the list was slow at 100,000 recordings)."""
from __future__ import annotations

from django.contrib import admin
from django.db.models import Exists, OuterRef

from recognition import selectors
from recognition.models import ModelVersion, Prediction
from workers.pipeline.probe import SUPPORTED_FORMATS


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


class BatchFilter(admin.SimpleListFilter):
    """Recordings of one of the request user's batches (only their own batches are offered)."""

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request, model_admin):
        return [(str(b.pk), b.name) for b in selectors.batch_list(user=request.user).order_by("name", "id")]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(batches__pk=int(self.value()), batches__owner=request.user)
        return queryset


def _has_prediction(**match) -> Exists:
    """Recordings with some prediction matching ``match``: a semi-join the database stops at the first
    row of, instead of a join over every prediction made DISTINCT on each change-list load."""
    return Exists(Prediction.objects.filter(result__recording=OuterRef("pk"), **match))


class PredictedClassFilter(admin.SimpleListFilter):
    """Recordings some classify job predicted as this class."""

    title = "predicted class"
    parameter_name = "predicted"

    def lookups(self, request, model_admin):
        """The classes of the models the user's classify jobs used: read from the few model rows, not
        from a scan of every prediction."""
        used = ModelVersion.objects.filter(jobs__owner=request.user, task=ModelVersion.Task.CLASSIFY).distinct()
        classes = {str(label) for labels in used.values_list("labels", flat=True) for label in labels or []}
        return [(c, c) for c in sorted(classes) if c]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(_has_prediction(predicted_class=self.value()))
        return queryset


class OutcomeFilter(admin.SimpleListFilter):
    """Recordings with a prediction of this outcome (answered, withheld as uncertain, no speech)."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return Prediction.Outcome.choices

    def queryset(self, request, queryset):
        if self.value() in Prediction.Outcome.values:
            return queryset.filter(_has_prediction(outcome=self.value()))
        return queryset


class ConfidenceFilter(admin.SimpleListFilter):
    """Recordings with a prediction whose confidence (top calibrated probability) falls in a band."""

    title = "confidence"
    parameter_name = "confidence"
    BANDS = {"low": (0.0, 0.6, "under 0.6"), "mid": (0.6, 0.8, "0.6 to 0.8"), "high": (0.8, 1.01, "0.8 and over")}

    def lookups(self, request, model_admin):
        return [(key, text) for key, (_, _, text) in self.BANDS.items()]

    def queryset(self, request, queryset):
        if self.value() in self.BANDS:
            low, high, _ = self.BANDS[self.value()]
            return queryset.filter(_has_prediction(confidence__gte=low, confidence__lt=high))
        return queryset


class LabelFilter(admin.SimpleListFilter):
    """Recordings with this label. The choices come from a skip scan of the label index (one index
    probe per distinct label, at most :attr:`LIMIT`), not a DISTINCT over every recording."""

    title = "label"
    parameter_name = "label"
    LIMIT = 200
    SQL = """WITH RECURSIVE labels(label) AS (
        (SELECT label FROM recognition_recording ORDER BY label LIMIT 1)
        UNION ALL
        SELECT (SELECT r.label FROM recognition_recording r WHERE r.label > labels.label ORDER BY r.label LIMIT 1)
        FROM labels WHERE labels.label IS NOT NULL)
        SELECT label FROM labels WHERE label IS NOT NULL AND label <> '' LIMIT %s"""

    def lookups(self, request, model_admin):
        from django.db import connection

        from recognition.models import Recording

        if connection.vendor != "postgresql":  # SQLite (local runs, benches): a plain DISTINCT
            labels = Recording.objects.exclude(label="").order_by("label").values_list("label", flat=True).distinct()
            return [(label, label) for label in labels[: self.LIMIT]]
        with connection.cursor() as cursor:
            cursor.execute(self.SQL, [self.LIMIT])
            return [(label, label) for (label,) in cursor.fetchall()]

    def queryset(self, request, queryset):
        return queryset.filter(label=self.value()) if self.value() is not None else queryset


def _fixed_filter(field: str, choices: list[tuple[str, str]], title: str | None = None) -> type[admin.SimpleListFilter]:
    """A filter on ``field`` whose choices are fixed (formats, rates, channel counts): a change-list load
    asks the database nothing for them (the field filter read DISTINCT values from every recording)."""
    def queryset(self, request, queryset):
        return queryset.filter(**{field: self.value()}) if self.value() else queryset

    return type(f"{field.title().replace('_', '')}Filter", (admin.SimpleListFilter,), {
        "title": title or field.replace("_", " "), "parameter_name": field,
        "lookups": lambda self, request, model_admin: choices, "queryset": queryset})


FormatFilter = _fixed_filter("format", [(f, f) for f in SUPPORTED_FORMATS])
SampleRateFilter = _fixed_filter("sample_rate", [(str(r), f"{r:,} Hz") for r in (8000, 16000, 22050, 24000, 32000, 44100, 48000)],
                                 title="sample rate")
ChannelsFilter = _fixed_filter("channels", [("1", "mono"), ("2", "stereo")])
