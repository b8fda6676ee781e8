"""Thin Celery tasks of chat: emails (transcripts, offline follow-ups). SMTP errors (OSError)
are transient and retried with backoff; ``services.chat_email_send`` makes a retried or
redelivered task send its email once."""

from __future__ import annotations

from celery import shared_task

from chat import services


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def chat_email_send(chat_email_id: int) -> None:
    services.chat_email_send(chat_email_id=chat_email_id)
