"""Thin Celery tasks of chat: emails (transcripts, offline follow-ups); SMTP errors (OSError)
are transient and retried with backoff."""

from __future__ import annotations

from celery import shared_task

from chat import emails


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def transcript_email_send(conversation_id: int, email: str) -> None:
    emails.transcript_deliver(conversation_id=conversation_id, email=email)


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def offline_message_notify(conversation_id: int) -> None:
    emails.offline_message_deliver(conversation_id=conversation_id)


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def follow_up_email_send(message_id: int) -> None:
    emails.follow_up_deliver(message_id=message_id)
