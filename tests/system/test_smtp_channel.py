"""The email channel's own SMTP client against a real SMTP server (aiosmtpd): replies it must
understand. A 4xx is retried, a 5xx fails the message with the server's reason, and a
connection lost after the data is recorded as possibly delivered and never sent again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import timezone

from commerce.models import Coupon
from engagement import services
from engagement.models import Broadcast, Message
from tests.engagement.conftest import make_campaign, make_shopper
from tests.support.smtp import SMTPSink

pytestmark = [pytest.mark.system, pytest.mark.django_db]


@pytest.fixture
def sink(settings) -> Iterator[SMTPSink]:
    server = SMTPSink()
    server.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.PATRON_OUTBOX_RETRY_BASE_SECONDS = 0
    yield server
    server.stop()


def _one_message() -> Message:
    make_campaign("welcome", steps=[{"subject": "Hello {{ first_name }}"}])
    shopper = make_shopper(first_name="Aija")
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    return Message.objects.get()


def _deliver_due() -> dict[str, int]:
    Message.objects.filter(state="scheduled").update(due_at=timezone.now())
    return services.outbox_deliver_batch()


def test_a_4xx_at_the_end_of_data_is_retried_then_sent_once(sink):
    message = _one_message()
    sink.refuse_with = "451 4.3.0 Mailbox temporarily unavailable"
    sink.refuse_times = 1

    first = _deliver_due()

    message.refresh_from_db()
    assert first == {"claimed": 1, "scheduled": 1}
    assert (message.state, message.attempts, message.reason) == (
        "scheduled",
        1,
        "retrying after attempt 1",
    )
    assert message.last_error == "message refused: 451 4.3.0 Mailbox temporarily unavailable"
    assert (message.handed_at, message.claimed_by) == (None, "")

    second = _deliver_due()

    message.refresh_from_db()
    assert second == {"claimed": 1, "sent": 1}
    assert (message.state, message.confirmed, message.attempts) == ("sent", True, 2)
    assert message.provider_message_id == "2.0.0 OK queued"
    # The server saw it twice (refused once, then accepted once): one delivery.
    assert len(sink.messages()) == 2
    assert {r.message_id for r in sink.messages()} == {message.message_id_header}


def test_a_5xx_fails_the_message_with_the_servers_reason_and_never_retries(sink):
    message = _one_message()
    sink.refuse_with = "550 5.1.1 No such user here"

    assert _deliver_due() == {"claimed": 1, "failed": 1}
    assert _deliver_due() == {"claimed": 0}

    message.refresh_from_db()
    assert (message.state, message.attempts) == ("failed", 1)
    assert message.reason == "message refused: 550 5.1.1 No such user here"
    assert len(sink.messages()) == 1


def test_a_5xx_refused_offer_withdraws_its_coupon(sink):
    campaign = make_campaign(
        "limited_offer",
        trigger_options={"coupon": {"kind": "percent", "value": "10"}},
        steps=[{"subject": "Offer", "body": "<p>{{ coupon.code }}</p>"}],
    )
    make_shopper()
    services.broadcast_send(broadcast_id=Broadcast.objects.create(campaign=campaign).pk)
    sink.refuse_with = "554 5.7.1 Rejected"

    assert _deliver_due() == {"claimed": 1, "failed": 1}

    coupon = Coupon.objects.get()
    assert coupon.active is False
    assert coupon.code in sink.messages()[0].data.decode()


def test_a_connection_lost_after_the_data_is_recorded_as_possibly_sent_and_not_resent(sink):
    message = _one_message()
    sink.drop_after_data = True

    assert _deliver_due() == {"claimed": 1, "sent": 1}
    sink.drop_after_data = False
    assert _deliver_due() == {"claimed": 0}
    assert services.outbox_sweep(lease_seconds=0) == {"requeued": 0, "unconfirmed": 0}

    message.refresh_from_db()
    assert (message.state, message.confirmed) == ("sent", False)
    assert message.reason == "outcome unknown after hand-over; not sent again"
    assert message.last_error.startswith("connection lost after end of data")
    assert message.handed_at is not None
    assert len(sink.messages()) == 1
