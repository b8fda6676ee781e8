"""Chat's Celery tasks. Its emails are engagement campaigns (``chat/emails.py``), delivered,
retried and swept by ``engagement.tasks``; chat itself only wakes snoozed conversations."""

from __future__ import annotations

from celery import shared_task

from chat import services


@shared_task(acks_late=True, expires=60, ignore_result=True)
def conversations_wake() -> int:
    """Beat: every 30 s, snoozed conversations whose time has come return to the inbox
    (``services.conversations_wake_due``; idempotent, so a lost or doubled run is harmless)."""
    return services.conversations_wake_due()
