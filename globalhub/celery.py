"""The manager's Celery app: ``celery -A globalhub worker`` / ``celery -A globalhub beat``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "globalhub.settings")

app = Celery("globalhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["globalhub.manager"])
