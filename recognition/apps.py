from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _register_shipped_models(sender, **kwargs) -> None:
    """Register checkpoints shipped in models/checkpoints after every migrate (idempotent)."""
    from recognition.services import shipped_models_register

    shipped_models_register()


class RecognitionConfig(AppConfig):
    name = "recognition"
    verbose_name = "Accent recognition"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_register_shipped_models, sender=self)
        from recognition import worker_signals

        worker_signals.connect()  # Celery worker receivers; accentsite/celery.py imports no app code
