"""The Django project: settings, URLs, the Celery app and cross-cutting API plumbing."""

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
