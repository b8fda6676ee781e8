"""Transactional campaigns and explicit recipients: a receipt goes to the address given when the
trigger fired, whatever the shopper's marketing choices, but never to a suppressed address."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.exceptions import ValidationError
from engagement import registry, services
from engagement.models import Campaign, Message, Preference, Run, Topic
from engagement.registry import register_trigger
from tests.engagement.conftest import html_of, make_campaign, make_shopper

pytestmark = pytest.mark.django_db

TRIGGER = "test_receipt"


@pytest.fixture(autouse=True)
def receipt_trigger() -> Iterator[None]:
    register_trigger(TRIGGER, label="Test receipt", preview=lambda shopper: {})
    yield
    registry._triggers.pop(TRIGGER, None)


def receipt_campaign(**fields: Any) -> Campaign:
    defaults: dict[str, Any] = {"requires_consent": False, "transactional": True}
    return make_campaign(
        TRIGGER,
        steps=fields.pop(
            "steps", [{"subject": "Receipt {{ order }}", "body": "<p>Thanks for {{ order }}</p>"}]
        ),
        **{**defaults, **fields},
    )


def deliver() -> dict[str, int]:
    return services.outbox_deliver_batch(worker="w1", limit=100)


def test_email_steps_go_to_the_address_given_and_other_channels_to_the_shopper(
    sms_outbox, settings
):
    settings.PATRON_SMS_BACKEND = "engagement.channels.sms.MemorySMSBackend"
    receipt_campaign(
        steps=[
            {"subject": "Receipt", "body": "<p>Thanks</p>"},
            {"channel": "sms", "body": "Thanks"},
        ]
    )
    shopper = make_shopper(email="stored@example.com", phone="+37120000000", sms_consent=True)

    services.trigger_fire(
        trigger=TRIGGER,
        shopper=shopper,
        occurrence_key="order:1",
        email_to="  Given@Example.COM ",
        email_reply_to="Help@Shop.example",
    )
    deliver()

    assert [(m.to, m.extra_headers["Reply-To"]) for m in mail.outbox] == [
        (["given@example.com"], "help@shop.example")
    ]
    assert [s["to"] for s in sms_outbox] == ["+37120000000"]
    run = Run.objects.get()
    assert (run.email_to, run.email_reply_to) == ("given@example.com", "help@shop.example")
    assert Message.objects.get(channel="email").recipient == "given@example.com"


@pytest.mark.parametrize(
    "bad",
    [
        "not-an-address",
        "Ada <ada@example.com>",
        "a@example.com, b@example.com",
        "ada@example.com\r\nBcc: x@example.com",
    ],
)
def test_an_address_that_is_not_one_plain_mailbox_is_refused_and_nothing_is_written(bad):
    receipt_campaign()
    shopper = make_shopper()

    with pytest.raises(ValidationError, match="email_to is not a valid email address"):
        services.trigger_fire(trigger=TRIGGER, shopper=shopper, occurrence_key="k", email_to=bad)
    with pytest.raises(ValidationError, match="email_reply_to"):
        services.trigger_fire(
            trigger=TRIGGER, shopper=shopper, occurrence_key="k", email_reply_to=bad
        )

    assert not Run.objects.exists()
    assert not Message.objects.exists()


def test_a_transactional_email_ignores_marketing_choices_but_not_suppressions():
    topic = Topic.objects.create(key="offers", name="Offers")
    receipt_campaign(topic=topic)
    marketing = make_campaign(TRIGGER, name="Upsell", requires_consent=False)
    shopper = make_shopper(email="ada@example.com", email_consent=False)
    services.shopper_unsubscribe(shopper=shopper, channel="email", source="link")
    preference = Preference.objects.create(
        shopper=shopper, paused_until=timezone.now() + dt.timedelta(days=30)
    )
    preference.topics_opted_out.add(topic)

    services.trigger_fire(trigger=TRIGGER, shopper=shopper, occurrence_key="order:1")
    services.trigger_fire(
        trigger=TRIGGER, shopper=shopper, occurrence_key="order:2", email_to="bounced@example.com"
    )
    services.suppression_add(channel="email", address="Bounced@Example.com", reason="bounce")
    deliver()

    outcomes = sorted(
        (m.campaign.name, m.occurrence_key, m.state, m.reason) for m in Message.objects.all()
    )
    assert outcomes == [
        ("Upsell", "order:1", "skipped", "unsubscribed"),
        ("Upsell", "order:2", "skipped", "suppressed (bounce)"),
        (f"{TRIGGER} campaign", "order:1", "sent", ""),
        (f"{TRIGGER} campaign", "order:2", "skipped", "suppressed (bounce)"),
    ]
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    assert marketing.messages.filter(state="sent").count() == 0


def test_a_transactional_email_has_no_unsubscribe_link_or_header():
    receipt_campaign()
    services.trigger_fire(trigger=TRIGGER, shopper=make_shopper(), occurrence_key="order:1")
    deliver()

    [email] = mail.outbox
    assert "List-Unsubscribe" not in email.extra_headers
    assert "nsubscribe" not in email.body
    assert "nsubscribe" not in html_of(email)


def test_unsubscribing_leaves_scheduled_transactional_messages_alone():
    receipt_campaign(steps=[{"body": "<p>Soon</p>", "delay": dt.timedelta(hours=1)}])
    make_campaign(TRIGGER, name="Upsell", steps=[{"delay": dt.timedelta(hours=1)}])
    shopper = make_shopper()
    services.trigger_fire(trigger=TRIGGER, shopper=shopper, occurrence_key="order:1")

    services.shopper_unsubscribe(shopper=shopper, channel="email", source="link")

    assert sorted(Message.objects.values_list("campaign__transactional", "state")) == [
        (False, "skipped"),
        (True, "scheduled"),
    ]


def test_transactional_emails_do_not_use_up_the_marketing_frequency_cap():
    receipt_campaign()
    make_campaign("welcome", frequency_cap=1, frequency_cap_hours=24)
    shopper = make_shopper()
    services.trigger_fire(trigger=TRIGGER, shopper=shopper, occurrence_key="order:1")
    services.trigger_fire(trigger=TRIGGER, shopper=shopper, occurrence_key="order:2")
    deliver()

    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    deliver()

    assert sorted(Message.objects.values_list("campaign__trigger", "state")) == [
        (TRIGGER, "sent"),
        (TRIGGER, "sent"),
        ("welcome", "sent"),
    ]


@pytest.mark.parametrize(
    "fields", [{"requires_consent": True}, {"requires_consent": False, "control_percent": 10}]
)
def test_a_transactional_campaign_cannot_wait_for_consent_or_hold_out_a_control_group(fields):
    campaign = Campaign(name="Receipt", trigger=TRIGGER, transactional=True, **fields)

    with pytest.raises(DjangoValidationError, match="needs consent off and no control group"):
        campaign.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        campaign.save()
