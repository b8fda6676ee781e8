"""The Celery app: configured from Django's settings (``CELERY_*``), tasks found in every app."""

import os
from typing import Any

from celery import Celery
from celery.signals import beat_init, celeryd_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("patron")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_init.connect
@beat_init.connect
def _start_embedded_servers(**kwargs: Any) -> None:
    """A worker or beat in embedded mode starts the servers it needs (importing starts none)."""
    from config import embedded

    embedded.start_missing()
