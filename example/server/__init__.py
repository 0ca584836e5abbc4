"""The example site: settings, URLs, the WSGI/ASGI entry points and the Celery app."""

# Celery's Django layout: the app is loaded with Django, so `@shared_task` uses it.
from .celery import app as celery_app

__all__ = ("celery_app",)
