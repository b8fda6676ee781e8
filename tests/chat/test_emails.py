"""Chat's emails go through engagement's outbox: the offline receipt and the support notice,
agents' follow-up replies and transcripts are transactional campaigns, sent once each to the
address the shopper gave, whatever their marketing choices, never to a suppressed address, with
the merchant's template."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from chat import emails, services
from chat.models import BusinessHours, ChatSettings, Conversation
from commerce.models import Shopper
from engagement import services as engagement_services
from engagement.models import Campaign, CampaignStep, Preference, Unsubscribe
from engagement.models import Message as OutboxMessage
from tests.chat.conftest import make_agent
from tests.engagement.conftest import html_of
from tests.support.smtp import smtp_sink

pytestmark = pytest.mark.django_db

GIVEN = "ada@work.example"
SUPPORT = "support@shop.example"


@pytest.fixture
def closed(chat_settings: ChatSettings) -> None:
    """Outside business hours, with a support inbox configured."""
    closed_day = (dt.datetime.now(dt.UTC).weekday() + 3) % 7
    BusinessHours.objects.create(weekday=closed_day, opens=dt.time(9), closes=dt.time(17))
    ChatSettings.objects.filter(pk=1).update(support_email=SUPPORT)
    services.chat_settings_invalidate()


@pytest.fixture
def stranger(db: Any) -> Shopper:
    """A shopper known by an old address, who never opted in to marketing."""
    return Shopper.objects.create(first_name="Ada", email="old@example.com", email_consent=False)


def leave_offline_message(shopper: Shopper, *, client_id: str = "o1") -> int:
    posted = services.offline_message_leave(
        shopper=shopper,
        conversation_id=None,
        email=GIVEN,
        body="Please call me back about order 1001",
        client_id=client_id,
    )
    return int(posted.message["conversation_id"])


def sent_to(address: str) -> list[Any]:
    return [m for m in mail.outbox if m.to == [address]]


def test_an_offline_message_sends_a_receipt_to_the_given_address_and_a_notice_to_support(
    closed, stranger, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        cid = leave_offline_message(stranger)

    assert sorted((m.to[0], m.subject) for m in mail.outbox) == [
        (GIVEN, "We got your message"),
        (SUPPORT, f"Offline chat message from {GIVEN}"),
    ]
    [receipt] = sent_to(GIVEN)
    assert receipt.body.startswith(
        "Thanks for your message. We're offline right now and will reply to this address"
    )
    assert "You: Please call me back about order 1001" in receipt.body
    # A receipt is not a subscription: no unsubscribe link or header.
    assert "List-Unsubscribe" not in receipt.extra_headers
    assert "nsubscribe" not in receipt.body
    [notice] = sent_to(SUPPORT)
    assert notice.extra_headers["Reply-To"] == GIVEN
    assert "You: Please call me back about order 1001" in notice.body
    console = f"{settings.PATRON_BASE_URL}/console/"
    assert notice.body.rstrip().endswith(f"Reply from the agent console: {console}")
    # Recorded in engagement's outbox like every other message, under the chat campaigns.
    rows = OutboxMessage.objects.order_by("campaign__trigger")
    assert [(r.campaign.trigger, r.recipient, r.state) for r in rows] == [
        (emails.OFFLINE_NOTICE, SUPPORT, "sent"),
        (emails.OFFLINE_RECEIPT, GIVEN, "sent"),
    ]
    assert Conversation.objects.get(pk=cid).follow_up_email == GIVEN


def test_an_agent_reply_in_an_email_conversation_is_emailed_once_with_its_text(
    closed, stranger, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        cid = leave_offline_message(stranger)
    bob = make_agent("bob", online=False)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.agent_message_post(
            agent=bob, conversation_id=cid, body="Internal: VIP", client_id="n1", internal=True
        )
        for _ in range(2):  # the console re-sent the frame after a reconnect
            services.agent_message_post(
                agent=bob, conversation_id=cid, body="We'll call at 10.", client_id="a1"
            )

    follow_ups = [m for m in mail.outbox if m.subject == "Re: your message"]
    assert [(m.to, m.body) for m in follow_ups] == [([GIVEN], "We'll call at 10.\n\n— Bob\n")]
    assert not any("VIP" in m.body for m in mail.outbox)
    assert (
        OutboxMessage.objects.filter(campaign__trigger=emails.FOLLOW_UP, state="sent").count() == 1
    )


def test_an_agent_reply_in_a_live_chat_is_not_emailed(shopper, django_capture_on_commit_callbacks):
    anna = make_agent("anna")
    cid = services.shopper_message_post(shopper=shopper, body="human", client_id="c1")
    with django_capture_on_commit_callbacks(execute=True):
        services.agent_message_post(
            agent=anna, conversation_id=cid.conversation_id, body="Hello Ada", client_id="a1"
        )

    assert mail.outbox == []
    assert not OutboxMessage.objects.exists()


def test_repeated_submissions_and_duplicated_decisions_send_each_email_once(
    closed, stranger, django_capture_on_commit_callbacks
):
    bob = make_agent("bob", online=False)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):  # the widget re-sent the frame after a reconnect
            cid = leave_offline_message(stranger)
        reply = services.agent_message_post(
            agent=bob, conversation_id=cid, body="We'll call at 10.", client_id="a1"
        )
    shopper_message_id = (
        OutboxMessage.objects.filter(campaign__trigger=emails.OFFLINE_RECEIPT)
        .get()
        .run.data["message_id"]
    )

    # The same decisions taken again (an event handled twice): nothing more is written or sent.
    with django_capture_on_commit_callbacks(execute=True):
        again = services.offline_emails_fire(
            shopper=stranger,
            conversation_id=cid,
            message_id=shopper_message_id,
            seq=1,
            email=GIVEN,
        )
        again += services.follow_up_email_fire(conversation_id=cid, message_id=reply.message["id"])

    assert again == 0
    assert sorted((m.to[0], m.subject) for m in mail.outbox) == [
        (GIVEN, "Re: your message"),
        (GIVEN, "We got your message"),
        (SUPPORT, f"Offline chat message from {GIVEN}"),
    ]
    assert OutboxMessage.objects.count() == 3


def test_a_transcript_request_sends_one_email_with_the_transcript_and_no_notes(
    shopper, django_capture_on_commit_callbacks
):
    anna = make_agent("anna")
    cid = services.shopper_message_post(
        shopper=shopper, body="human", client_id="c1"
    ).conversation_id
    services.agent_message_post(
        agent=anna, conversation_id=cid, body="VIP customer", client_id="n1", internal=True
    )
    services.agent_message_post(agent=anna, conversation_id=cid, body="Hello Ada", client_id="a1")

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):  # a double click, a retried HTTP call
            address = services.transcript_send(conversation_id=cid, email=None, shopper=shopper)

    assert address == "ada@example.com"
    [email] = mail.outbox
    assert (email.to, email.subject) == (["ada@example.com"], "Your chat transcript")
    assert "You: human" in email.body
    assert "Anna: Hello Ada" in email.body
    assert "VIP customer" not in email.body

    # A new note does not make it another transcript; a new message, or another address, does.
    services.agent_message_post(
        agent=anna, conversation_id=cid, body="note 2", client_id="n2", internal=True
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.transcript_send(conversation_id=cid, email=None)
    assert len(mail.outbox) == 1
    services.agent_message_post(agent=anna, conversation_id=cid, body="Bye now", client_id="a2")
    with django_capture_on_commit_callbacks(execute=True):
        services.transcript_send(conversation_id=cid, email=None)
        services.transcript_send(conversation_id=cid, email="Ada@Home.example")
    assert [(m.to, "Anna: Bye now" in m.body) for m in mail.outbox[1:]] == [
        (["ada@example.com"], True),
        (["ada@home.example"], True),
    ]


def test_the_transcript_key_is_one_request_per_transcript_address_and_hour():
    at = dt.datetime(2026, 3, 1, 14, 5, tzinfo=dt.UTC)

    def key(**changes: Any) -> str:
        args: dict[str, Any] = {
            "conversation_id": 7,
            "upto_seq": 12,
            "address": "ada@example.com",
            "at": at,
        }
        return emails.transcript_occurrence_key(**{**args, **changes})

    assert key() == key(at=at + dt.timedelta(minutes=50)) == key(address=" ADA@example.com")
    assert (
        len({key(), key(upto_seq=13), key(address="bo@example.com"), key(at=at.replace(hour=15))})
        == 4
    )
    assert len(key(address="a" * 240 + "@example.com")) < 200


def test_a_suppressed_address_gets_nothing(closed, stranger, django_capture_on_commit_callbacks):
    engagement_services.suppression_add(channel="email", address=GIVEN.upper(), reason="bounce")

    with django_capture_on_commit_callbacks(execute=True):
        cid = leave_offline_message(stranger)
        services.transcript_send(conversation_id=cid, email=None)  # to the stored address

    assert sorted(m.to[0] for m in mail.outbox) == ["old@example.com", SUPPORT]
    receipt = OutboxMessage.objects.get(campaign__trigger=emails.OFFLINE_RECEIPT)
    assert (receipt.state, receipt.reason) == ("skipped", "suppressed (bounce)")


def test_a_shopper_who_said_no_to_marketing_still_gets_what_they_asked_for(
    stranger, django_capture_on_commit_callbacks
):
    # No consent, unsubscribed from email, every message paused for a month.
    engagement_services.shopper_unsubscribe(shopper=stranger, channel="email", source="link")
    Preference.objects.create(shopper=stranger, paused_until=timezone.now() + dt.timedelta(days=30))
    conversation = services.conversation_start(shopper=stranger)
    services.message_post(
        conversation_id=conversation.pk, author_kind="shopper", body="hi", client_id="c1"
    )

    with django_capture_on_commit_callbacks(execute=True):
        services.transcript_send(conversation_id=conversation.pk, email=None, shopper=stranger)

    assert [(m.to, m.subject) for m in mail.outbox] == [
        (["old@example.com"], "Your chat transcript")
    ]
    stranger.refresh_from_db()
    assert stranger.email_consent is False
    assert Unsubscribe.objects.filter(shopper=stranger, channel="email").exists()


def test_the_merchants_edited_template_is_used(
    closed, stranger, django_capture_on_commit_callbacks
):
    CampaignStep.objects.filter(campaign__trigger=emails.FOLLOW_UP).update(
        subject="{{ agent_name }} answered your question #{{ conversation_id }}",
        body="<p>{{ reply }}</p><p>Shop team</p>",
        body_text="{{ reply }}\n-- The Shop team, {{ agent_name }}",
    )
    with django_capture_on_commit_callbacks(execute=True):
        cid = leave_offline_message(stranger)
    bob = make_agent("bob", online=False)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.agent_message_post(agent=bob, conversation_id=cid, body="Done.", client_id="a1")

    [email] = mail.outbox
    assert email.subject == f"Bob answered your question #{cid}"
    assert email.body == "Done.\n-- The Shop team, Bob\n"
    assert "<p>Done.</p><p>Shop team</p>" in html_of(email)


def test_a_paused_campaign_holds_its_emails_until_it_is_activated(
    stranger, django_capture_on_commit_callbacks
):
    campaign = Campaign.objects.get(trigger=emails.TRANSCRIPT)
    conversation = services.conversation_start(shopper=stranger)
    with django_capture_on_commit_callbacks() as delivery:
        services.transcript_send(conversation_id=conversation.pk, email=None)
    engagement_services.campaign_status_set(campaign=campaign, status="paused")

    for callback in delivery:
        callback()
    assert mail.outbox == []
    assert OutboxMessage.objects.get().state == "scheduled"

    with django_capture_on_commit_callbacks(execute=True):
        engagement_services.campaign_status_set(campaign=campaign, status="active")
    assert [m.to for m in mail.outbox] == [["old@example.com"]]


def test_an_email_a_dead_worker_left_is_sent_again_by_the_sweeper_once(closed, stranger):
    leave_offline_message(stranger)  # on-commit delivery never ran: the worker died first
    claimed = engagement_services.outbox_claim(worker="dead-worker", limit=10)
    assert len(claimed) == 2
    assert mail.outbox == []

    assert engagement_services.outbox_sweep(lease_seconds=0) == {"requeued": 2, "unconfirmed": 0}
    engagement_services.outbox_deliver(max_seconds=5)
    engagement_services.outbox_sweep(lease_seconds=0)
    engagement_services.outbox_deliver(max_seconds=5)

    assert sorted(m.to[0] for m in mail.outbox) == [GIVEN, SUPPORT]


def test_the_emails_go_out_over_smtp_with_the_given_recipient_and_reply_to(
    closed, stranger, settings
):
    with smtp_sink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        leave_offline_message(stranger)
        engagement_services.outbox_deliver(max_seconds=10)
        received = sink.wait_for(2)

    by_rcpt = {r.rcpt_tos[0]: r.message for r in received}
    assert sorted(by_rcpt) == [GIVEN, SUPPORT]
    assert by_rcpt[SUPPORT]["Reply-To"] == GIVEN
    assert by_rcpt[GIVEN]["List-Unsubscribe"] is None
    assert by_rcpt[GIVEN]["Subject"] == "We got your message"
    assert "old@example.com" not in {r.rcpt_tos[0] for r in received}
