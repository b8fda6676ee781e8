"""Smart sending: a shopper who got marketing on a channel within the store's window (16 hours by
default) is skipped by the next campaign there, at send time, with the reason recorded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from commerce.models import Product, Shopper
from engagement import registry, services
from engagement.models import Campaign, EngagementSettings, Message
from engagement.registry import register_trigger
from tests.engagement.conftest import make_campaign, make_shopper, process, track

pytestmark = pytest.mark.django_db

RECEIPT = "test_smart_receipt"
SKIPPED_16H = ("skipped", "smart sending: marketing received within 16 h")


@pytest.fixture(autouse=True)
def receipt_trigger() -> Iterator[None]:
    register_trigger(RECEIPT, label="Test receipt", preview=lambda shopper: {})
    yield
    registry._triggers.pop(RECEIPT, None)


def deliver() -> dict[str, int]:
    return services.outbox_deliver_batch(worker="w1", limit=100)


def fire(trigger: str, shopper: Shopper, key: str = "k") -> None:
    services.trigger_fire(trigger=trigger, shopper=shopper, occurrence_key=key)


def sent_hours_ago(campaign: Campaign, hours: float) -> None:
    """The campaign's sent messages went out ``hours`` ago."""
    Message.objects.filter(campaign=campaign, state="sent").update(
        sent_at=timezone.now() - dt.timedelta(hours=hours)
    )


def outcome(campaign: Campaign, shopper: Shopper) -> tuple[str, str]:
    message = Message.objects.get(campaign=campaign, shopper=shopper)
    return message.state, message.reason


def test_a_second_campaign_within_16_hours_is_skipped_and_says_why():
    newsletter = make_campaign("win_back", name="newsletter")
    offer = make_campaign("welcome", name="offer")
    recent, earlier = make_shopper(), make_shopper()
    fire("win_back", recent)
    fire("win_back", earlier)
    deliver()
    Message.objects.filter(campaign=newsletter, shopper=recent).update(
        sent_at=timezone.now() - dt.timedelta(hours=15)
    )
    Message.objects.filter(campaign=newsletter, shopper=earlier).update(
        sent_at=timezone.now() - dt.timedelta(hours=17)
    )
    mail.outbox.clear()

    fire("welcome", recent)
    fire("welcome", earlier)
    deliver()

    assert outcome(offer, recent) == SKIPPED_16H
    assert outcome(offer, earlier) == ("sent", "")
    assert [m.to for m in mail.outbox] == [[earlier.email]]


def test_two_campaigns_due_in_one_batch_send_one_message():
    make_campaign(name="a")
    make_campaign(name="b")
    shopper = make_shopper()

    fire("welcome", shopper)
    deliver()

    assert sorted(Message.objects.values_list("state", "reason")) == [("sent", ""), SKIPPED_16H]
    assert len(mail.outbox) == 1


def test_another_run_of_the_same_campaign_counts_but_the_runs_own_steps_do_not():
    campaign = make_campaign(
        "price_drop",
        steps=[
            {"subject": "Cheaper"},
            {"subject": "Still cheaper", "delay": dt.timedelta(hours=2)},
        ],
    )
    shopper = make_shopper()
    fire("price_drop", shopper, "change:1")
    deliver()
    Message.objects.filter(state="scheduled").update(due_at=timezone.now())

    fire("price_drop", shopper, "change:2")
    deliver()

    outcomes = sorted(
        Message.objects.filter(campaign=campaign).values_list(
            "occurrence_key", "step__position", "state", "reason"
        )
    )
    assert outcomes == [
        ("change:1", 1, "sent", ""),
        ("change:1", 2, "sent", ""),  # its own sequence: the delay is the merchant's choice
        ("change:2", 1, *SKIPPED_16H),
        ("change:2", 2, "scheduled", ""),  # due in two hours, decided then
    ]


def test_a_campaign_can_opt_out_and_transactional_messages_neither_wait_nor_count():
    make_campaign("win_back", name="newsletter")
    opted_out = make_campaign("welcome", name="opted out", smart_sending=False)
    kept_on = make_campaign("welcome", name="kept on")
    receipt = make_campaign(RECEIPT, requires_consent=False, transactional=True)
    shopper = make_shopper()
    fire("win_back", shopper)
    deliver()

    fire("welcome", shopper)
    fire(RECEIPT, shopper)
    deliver()

    assert outcome(opted_out, shopper) == ("sent", "")
    assert outcome(kept_on, shopper) == SKIPPED_16H
    assert outcome(receipt, shopper) == ("sent", "")

    # A receipt alone is not marketing: a newsletter after it goes.
    other = make_shopper()
    fire(RECEIPT, other)
    deliver()
    fire("win_back", other)
    deliver()
    assert Message.objects.get(campaign__name="newsletter", shopper=other).state == "sent"


def test_the_message_the_shopper_asked_for_is_never_held_back(write_key):
    product = Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)
    make_campaign("win_back", name="newsletter")
    notify = make_campaign("back_in_stock", steps=[{"subject": "{{ product.title }} is back"}])
    asker, viewer = make_shopper(), make_shopper()
    services.product_watch_create(shopper=asker, product=product, kind="back_in_stock")
    process(track(write_key, viewer, "Product Viewed", properties={"sku": "LAMP"}))
    services.product_changes_detect()
    fire("win_back", asker)
    fire("win_back", viewer)
    deliver()

    Product.objects.filter(pk=product.pk).update(stock=5)
    services.product_changes_detect()
    deliver()

    assert outcome(notify, asker) == ("sent", "")  # their "notify me"
    assert outcome(notify, viewer) == SKIPPED_16H  # a recent viewer did not ask


def test_the_store_sets_the_window_and_zero_turns_it_off():
    newsletter = make_campaign("win_back", name="newsletter")
    offer = make_campaign("welcome", name="offer")
    a, b, c = make_shopper(), make_shopper(), make_shopper()
    fire("win_back", a)
    deliver()
    sent_hours_ago(newsletter, 3)
    fire("win_back", c)
    deliver()
    Message.objects.filter(shopper=c).update(sent_at=timezone.now() - dt.timedelta(hours=1))
    EngagementSettings.objects.create(pk=1, smart_sending_hours=2)

    fire("welcome", a)
    fire("welcome", c)
    deliver()
    assert outcome(offer, a) == ("sent", "")  # 3 hours ago, outside a 2-hour window
    assert outcome(offer, c) == ("skipped", "smart sending: marketing received within 2 h")

    EngagementSettings.objects.filter(pk=1).update(smart_sending_hours=0)
    fire("win_back", b)
    fire("welcome", b)
    deliver()
    assert Message.objects.filter(shopper=b, state="sent").count() == 2


def test_smart_sending_is_per_channel(sms_outbox, settings):
    settings.PATRON_SMS_BACKEND = "engagement.channels.sms.MemorySMSBackend"
    make_campaign("win_back", name="sms", steps=[{"channel": "sms", "body": "Sale"}])
    email = make_campaign("welcome", name="email")
    second_email = make_campaign("welcome", name="second email")
    shopper = make_shopper(phone="+37120000000", sms_consent=True)
    fire("win_back", shopper)
    deliver()
    assert len(sms_outbox) == 1

    fire("welcome", shopper)
    deliver()

    assert outcome(email, shopper) == ("sent", "")  # the SMS does not hold back an email
    assert outcome(second_email, shopper) == SKIPPED_16H  # the first email does
