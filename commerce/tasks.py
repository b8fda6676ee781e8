from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from commerce import services
from commerce.models import Event
from core.tasks import retrying_task


@retrying_task(max_retries=10, retry_backoff_max=300)
def events_process(event_ids: list[int]) -> int:
    """Run the event handlers for stored events (queued after the ingesting transaction commits)."""
    return services.events_process(event_ids=event_ids)


@shared_task(acks_late=True, expires=300)
def events_process_pending(older_than_seconds: int = 120, batch_size: int = 1000) -> int:
    """Beat: sweep events whose processing task was lost (a dead worker, a Redis restart).

    Events recorded as failed (``EventFailure``) are left for staff to retry.
    """
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    processed = 0
    while True:
        ids = list(
            Event.objects.filter(
                processed_at__isnull=True, received_at__lt=cutoff, failure__isnull=True
            )
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return processed
        done = services.events_process(event_ids=ids)
        processed += done
        if done == 0:  # every candidate is locked by another worker right now
            return processed


@shared_task(acks_late=True, expires=3600)
def events_purge_expired(batch_size: int = 10_000) -> int:
    """Beat: delete tracked events older than PATRON_EVENT_RETENTION_DAYS, in batches."""
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
