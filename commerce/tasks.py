from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from commerce.models import Event


@shared_task(acks_late=True, expires=3600)
def events_purge_expired(batch_size: int = 10_000) -> int:
    """Delete tracked events older than PATRON_EVENT_RETENTION_DAYS, in batches."""
    days = settings.PATRON_EVENT_RETENTION_DAYS
    if not days:
        return 0
    cutoff = timezone.now() - dt.timedelta(days=days)
    deleted = 0
    while True:
        ids = list(
            Event.objects.filter(received_at__lt=cutoff).values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += Event.objects.filter(id__in=ids).delete()[0]
