"""Chat's emails are sent once: a retried, redelivered or concurrent task never sends twice,
and a failed send is given back for the retry."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.utils import timezone

from chat import services, tasks
from chat.models import BusinessHours, ChatEmail, ChatSettings, Conversation
from commerce.models import Shopper
from tests.chat.conftest import make_agent

pytestmark = pytest.mark.django_db

FAILURES = {"left": 0}


class FlakySMTPBackend(EmailBackend):
    """The outside world: an SMTP server that drops the connection ``FAILURES["left"]`` times."""

    def send_messages(self, messages: Any) -> int:
        if FAILURES["left"] > 0:
            FAILURES["left"] -= 1
            raise ConnectionResetError("SMTP connection reset")
        return int(super().send_messages(messages))


@pytest.fixture
def flaky_smtp(settings: Any) -> dict[str, int]:
    settings.EMAIL_BACKEND = "tests.chat.test_emails.FlakySMTPBackend"
    FAILURES["left"] = 0
    return FAILURES


def queued_transcript(shopper: Shopper) -> ChatEmail:
    cid = services.shopper_message_post(shopper=shopper, body="returns?", client_id="c1")
    services.transcript_send(conversation_id=cid.conversation_id, email=None)
    return ChatEmail.objects.get(kind=ChatEmail.Kind.TRANSCRIPT)


def test_a_redelivered_task_sends_its_email_once(shopper, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        cid = services.shopper_message_post(
            shopper=shopper, body="returns?", client_id="c1"
        ).conversation_id
        services.transcript_send(conversation_id=cid, email=None)
    row = ChatEmail.objects.get()
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]

    tasks.chat_email_send.delay(row.pk)  # the broker delivered it again
    tasks.chat_email_send.delay(row.pk)

    row.refresh_from_db()
    assert len(mail.outbox) == 1
    assert (row.state, row.attempts, row.sent_at is not None) == ("sent", 1, True)
    assert mail.outbox[0].extra_headers["X-Patron-Chat-Email"] == str(row.pk)


def test_a_failed_send_gives_the_claim_back_and_the_retry_sends_once(shopper, flaky_smtp):
    row = queued_transcript(shopper)
    flaky_smtp["left"] = 1

    with pytest.raises(ConnectionResetError):
        services.chat_email_send(chat_email_id=row.pk)
    row.refresh_from_db()
    assert (row.state, row.claimed_at, row.attempts) == ("pending", None, 1)
    assert mail.outbox == []

    assert services.chat_email_send(chat_email_id=row.pk) is True
    assert services.chat_email_send(chat_email_id=row.pk) is False
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("sent", 2)
    assert len(mail.outbox) == 1


def test_the_task_retries_smtp_errors_and_sends_once(shopper, flaky_smtp):
    from config.celery import app

    row = queued_transcript(shopper)
    flaky_smtp["left"] = 2
    # Eagerly, as a worker would: Celery re-applies the task on each autoretry.
    app.conf.task_eager_propagates = False
    try:
        result = tasks.chat_email_send.apply(args=(row.pk,))
    finally:
        app.conf.task_eager_propagates = True

    assert result.successful()
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("sent", 3)
    assert len(mail.outbox) == 1


def test_a_live_claim_is_left_alone_and_a_stale_one_is_taken_over(shopper):
    row = queued_transcript(shopper)
    recent = timezone.now() - dt.timedelta(minutes=1)
    ChatEmail.objects.filter(pk=row.pk).update(state="sending", claimed_at=recent, attempts=1)

    assert services.chat_email_send(chat_email_id=row.pk) is False
    assert mail.outbox == []

    # The worker that claimed it died mid-send: after the lease the email goes out again.
    stale = timezone.now() - services.EMAIL_CLAIM_LEASE - dt.timedelta(seconds=1)
    ChatEmail.objects.filter(pk=row.pk).update(claimed_at=stale)
    assert services.chat_email_send(chat_email_id=row.pk) is True
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("sent", 2)
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_tasks_for_one_email_send_it_once(chat_settings):
    shopper = Shopper.objects.create(email="ada@example.com")
    conversation = services.conversation_start(shopper=shopper)
    row = ChatEmail.objects.create(
        kind=ChatEmail.Kind.TRANSCRIPT, conversation=conversation, to="ada@example.com"
    )
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def send() -> None:
        try:
            barrier.wait()
            results.append(services.chat_email_send(chat_email_id=row.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False, False, False, True]
    assert len(mail.outbox) == 1


def test_offline_messages_and_follow_ups_queue_one_email_each_even_when_repeated(
    shopper, django_capture_on_commit_callbacks
):
    closed_day = (dt.datetime.now(dt.UTC).weekday() + 3) % 7
    BusinessHours.objects.create(weekday=closed_day, opens=dt.time(9), closes=dt.time(17))
    ChatSettings.objects.filter(pk=1).update(support_email="support@shop.example")
    services.chat_settings_invalidate()
    anna = make_agent("anna", online=False)

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):  # the widget re-sent the frame after a reconnect
            services.offline_message_leave(
                shopper=shopper,
                conversation_id=None,
                email="ada@example.com",
                body="Call me back",
                client_id="o1",
            )
        cid = Conversation.objects.get().pk
        for _ in range(2):
            services.agent_message_post(
                agent=anna, conversation_id=cid, body="We'll call at 10.", client_id="a1"
            )

    assert sorted(ChatEmail.objects.values_list("kind", "to", "state")) == [
        ("follow_up", "ada@example.com", "sent"),
        ("offline_notice", "support@shop.example", "sent"),
        ("offline_receipt", "ada@example.com", "sent"),
    ]
    assert sorted((m.subject, m.to[0]) for m in mail.outbox) == [
        ("Offline chat message from ada@example.com", "support@shop.example"),
        ("Re: your message", "ada@example.com"),
        ("We got your message", "ada@example.com"),
    ]
