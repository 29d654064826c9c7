"""accentsite: accent recognition batch service (settings, urls and the Celery app)."""
from accentsite.celery import app as celery_app

__all__ = ("celery_app",)
