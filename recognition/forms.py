"""Admin forms."""
from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(d, initial) for d in data]
        return [single(data, initial)] if data else []


class BatchUploadForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="A new batch's name.")
    add_to = forms.ModelChoiceField(queryset=None, required=False, label="Or add to",
                                    help_text="One of your batches: the files join it (a large batch arrives over several uploads).")
    files = MultipleFileField(required=False, allow_empty_file=True, help_text="Audio files: wav, flac, mp3, ogg/opus, m4a/aac, webm.")
    archive = forms.FileField(required=False, help_text="Or one .zip of audio files.")
    labels = forms.FileField(required=False, help_text="Optional CSV: filename,label[,speaker].")

    def __init__(self, *args, user, **kwargs) -> None:
        from recognition import selectors

        super().__init__(*args, **kwargs)
        self.fields["add_to"].queryset = selectors.batch_list(user=user).order_by("-created_at", "-id")

    def clean(self):
        data = super().clean()
        if not data.get("files") and not data.get("archive"):
            raise forms.ValidationError("Choose audio files or a .zip archive.")
        if not (data.get("name") or "").strip() and not data.get("add_to"):
            raise forms.ValidationError("Name a new batch or choose one of yours to add to.")
        return data


class ModelChoiceForm(forms.Form):
    """The admin's "... with a chosen model" actions: which registered model version runs the job."""

    model = forms.ModelChoiceField(queryset=None, empty_label=None, help_text="name@version; the default is preselected.")

    def __init__(self, *args, task: str, user=None, **kwargs) -> None:
        from recognition import selectors

        super().__init__(*args, **kwargs)
        versions = selectors.model_list(user=user).filter(task=task).order_by("name", "-created_at")
        self.fields["model"].queryset = versions
        defaults = versions.filter(is_default=True)
        # the model the plain action runs (settings.DEFAULT_MODELS), not the first default by name
        self.fields["model"].initial = (defaults.filter(name=settings.DEFAULT_MODELS.get(task, "")).first()
                                        or defaults.first())


class LabelReviewForm(forms.Form):
    """Confirm a recording's label or correct it: a label of its batch (or any typed one)."""

    label = forms.CharField(max_length=100, required=False, help_text="The same label confirms it; another corrects it.")
    other_label = forms.CharField(max_length=100, required=False)
    batch = forms.ModelChoiceField(queryset=None, required=False, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        # a label button sends ``label``; the text box (and Enter in it) sends ``other_label``
        data["label"] = (data.get("label") or data.get("other_label") or "").strip()
        if not data["label"]:
            raise forms.ValidationError("Choose or type a label.")
        return data

    def __init__(self, *args, recording, batch=None, **kwargs) -> None:
        from recognition import selectors

        super().__init__(*args, **kwargs)
        self.fields["batch"].queryset = selectors.batch_list(user=recording.owner).filter(recordings=recording)
        self.fields["label"].initial = recording.label
        self.fields["batch"].initial = batch.pk if batch else None
        self.known_labels = review_label_choices(recording=recording, batch=batch)


def review_label_choices(*, recording, batch=None) -> list[str]:
    """The labels a reviewer may pick for ``recording``: those of the batch in view (else of every
    batch holding it), its own, and the classes of the models that classified it; never the labels
    of the owner's other, unrelated uploads."""
    from recognition.models import BatchMember, ModelVersion

    members = BatchMember.objects.filter(batch=batch) if batch is not None else BatchMember.objects.filter(
        batch__in=recording.batches.all())
    # order_by(): without it the model's ordering joins the DISTINCT, which then gives 200 members, not 200 labels
    known = set(members.exclude(label="").order_by().values_list("label", flat=True).distinct()[:200])
    classes = ModelVersion.objects.filter(predictions__result__recording=recording).values_list("labels", flat=True).distinct()
    for labels in classes[:20]:
        known.update(str(label) for label in (labels or []))
    return sorted(known | ({recording.label} if recording.label else set()))


def _family_choices() -> list[tuple[str, str]]:
    """The trainable families (models/registry.py), a recommended one first with its note."""
    from models.registry import FAMILIES, TRAINABLE_FAMILIES

    ordered = sorted(TRAINABLE_FAMILIES, key=lambda f: (not FAMILIES[f].recommended, f))
    return [(f, f"{f} ({FAMILIES[f].recommended})" if FAMILIES[f].recommended else f) for f in ordered]


def _default_family() -> str:
    from models.registry import default_train_family

    return default_train_family()


class TrainForm(forms.Form):
    """The admin's train page: which family, how labels map to classes, the new model's name."""

    family = forms.ChoiceField(choices=_family_choices, initial=lambda: _default_family())
    label_map = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text="Optional, one per line: <code>batch label = class</code> (e.g. <code>native_english = native</code>). "
                  "Labels not listed are classes as they are.",
    )
    name = forms.CharField(max_length=100, help_text="The new model's name; its version is the time it was trained.")
    epochs = forms.IntegerField(required=False, min_value=1, max_value=1000, help_text="Optional; the family's default otherwise.")

    def __init__(self, *args, labels: list[str] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.labels = list(labels)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise forms.ValidationError("Use letters, digits, '.', '_' and '-' only.")
        return name

    def clean_label_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for n, line in enumerate((self.cleaned_data.get("label_map") or "").splitlines(), start=1):
            if not line.strip():
                continue
            source, sep, target = line.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise forms.ValidationError(f"Line {n}: write 'batch label = class'.")
            if self.labels and source.strip() not in self.labels:
                raise forms.ValidationError(f"Line {n}: '{source.strip()}' is not a label of this batch ({', '.join(self.labels)}).")
            out[source.strip()] = target.strip()
        return out

    def params(self) -> dict[str, Any]:
        data = self.cleaned_data
        params: dict[str, Any] = {"family": data["family"], "name": data["name"]}
        if data.get("label_map"):
            params["label_map"] = data["label_map"]
        if data.get("epochs"):
            params["epochs"] = data["epochs"]
        return params
