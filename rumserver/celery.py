"""The Celery application: ``celery -A rumserver worker`` / ``beat``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rumserver.settings")

app = Celery("rumserver")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# celery.current_app in every thread, not only this one: ingest sends its hint from a
# thread of its own, and neither it nor the health check imports this module.
app.set_default()
