"""Admin forms."""
from django import forms


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
    name = forms.CharField(max_length=200)
    files = MultipleFileField(required=False, allow_empty_file=True, help_text="Audio files: wav, flac, mp3, ogg/opus, m4a/aac, webm.")
    archive = forms.FileField(required=False, help_text="Or one .zip of audio files.")
    labels = forms.FileField(required=False, help_text="Optional CSV: filename,label[,speaker].")

    def clean(self):
        data = super().clean()
        if not data.get("files") and not data.get("archive"):
            raise forms.ValidationError("Choose audio files or a .zip archive.")
        return data


class ModelChoiceForm(forms.Form):
    """The admin's "... with a chosen model" actions: which registered model version runs the job."""

    model = forms.ModelChoiceField(queryset=None, empty_label=None, help_text="name@version; the default is preselected.")

    def __init__(self, *args, task: str, user=None, **kwargs) -> None:
        from recognition import selectors

        super().__init__(*args, **kwargs)
        versions = selectors.model_list(user=user).filter(task=task).order_by("name", "-created_at")
        self.fields["model"].queryset = versions
        self.fields["model"].initial = versions.filter(is_default=True).first()
