"""The outbox: enrolment writes rows once, send-time checks decide, delivery records the outcome."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from commerce.models import Order
from core.exceptions import ValidationError
from engagement import selectors, services
from engagement.channels.base import ChannelBackend, DeliveryError
from engagement.models import (
    Campaign,
    Message,
    Preference,
    Run,
    Suppression,
    Topic,
    Unsubscribe,
)
from engagement.services import delivery
from tests.engagement.conftest import html_of, make_campaign, make_shopper

pytestmark = pytest.mark.django_db


def test_a_trigger_fired_twice_enrols_once_and_writes_one_message_per_step():
    campaign = make_campaign(
        steps=[
            {"subject": "Welcome", "body": "<p>Hi</p>"},
            {"subject": "Tips", "body": "<p>Tips</p>", "delay": dt.timedelta(days=2)},
        ]
    )
    shopper = make_shopper()

    first = services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    second = services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

    assert len(first) == 1
    assert second == []
    assert Run.objects.filter(campaign=campaign, shopper=shopper).count() == 1
    messages = list(Message.objects.order_by("step__position"))
    assert [m.step.position for m in messages] == [1, 2]
    assert messages[1].due_at - messages[0].due_at == dt.timedelta(days=2)
    assert {m.state for m in messages} == {Message.State.SCHEDULED}


def test_control_group_shoppers_are_recorded_and_sent_nothing():
    campaign = make_campaign(control_percent=Decimal("100"))
    shopper = make_shopper()

    runs = services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

    assert [r.state for r in runs] == [Run.State.HELD_OUT]
    assert Message.objects.count() == 0
    uplift = services.campaign_attribution(campaign=campaign).uplift
    assert uplift.control.runs == 1
    assert uplift.treated.runs == 0


def test_control_draw_is_stable_and_near_the_percentage():
    campaign = make_campaign(control_percent=Decimal("20"))
    held = sum(
        services.in_control_group(campaign=campaign, shopper_id=i, occurrence_key="x")
        for i in range(5000)
    )
    again = sum(
        services.in_control_group(campaign=campaign, shopper_id=i, occurrence_key="x")
        for i in range(5000)
    )
    assert held == again
    assert 900 < held < 1100


def test_audience_filter_and_active_window_limit_enrolment():
    now = timezone.now()
    make_campaign(
        audience=Campaign.Audience.FILTER,
        audience_rules=[
            {"field": "country", "op": "eq", "value": "LV"},
            {"field": "tags", "op": "contains", "value": "vip"},
        ],
    )
    make_campaign(name="later", starts_at=now + dt.timedelta(days=1))
    make_campaign(name="draft", status=Campaign.Status.DRAFT)
    riga_vip = make_shopper(country="LV", tags=["vip"])
    riga = make_shopper(country="LV", tags=[])

    assert len(services.trigger_fire(trigger="welcome", shopper=riga_vip, occurrence_key="w")) == 1
    assert services.trigger_fire(trigger="welcome", shopper=riga, occurrence_key="w") == []
    assert Run.objects.count() == 1


def test_unknown_trigger_and_bad_rules_are_refused():
    shopper = make_shopper()
    with pytest.raises(ValidationError):
        services.trigger_fire(trigger="nope", shopper=shopper, occurrence_key="x")
    with pytest.raises(ValidationError):
        selectors.rules_q([{"field": "password", "op": "eq", "value": "x"}])
    assert Run.objects.count() == 0


def _fire(shopper, **campaign_fields):
    campaign = make_campaign(**campaign_fields)
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    return campaign, Message.objects.get(shopper=shopper, campaign=campaign)


def test_delivery_sends_html_and_text_with_one_click_unsubscribe_headers():
    shopper = make_shopper(first_name="Līga")
    _, message = _fire(
        shopper,
        steps=[
            {
                "subject": "Hello {{ first_name }}",
                "body": '<p>Hi {{ first_name }}, see <a href="https://shop.example/new">new</a>'
                ' <img src="https://shop.example/i.png"></p>',
            }
        ],
    )

    totals = services.outbox_deliver_batch()

    assert totals["sent"] == 1
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == [shopper.email]
    assert sent.subject == "Hello Līga"
    html = html_of(sent)
    assert "/e/c/" in html
    assert "https://shop.example/new" not in html
    assert "/e/o/" in html
    assert 'src="https://shop.example/i.png"' in html
    assert "new (https://shop.example/new)" in sent.body
    assert sent.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert sent.extra_headers["List-Unsubscribe"].startswith("<http")
    message.refresh_from_db()
    assert sent.extra_headers["Message-ID"] == message.message_id_header
    assert message.state == Message.State.SENT
    assert message.confirmed is True
    assert message.handed_at is not None
    assert message.subject == "Hello Līga"
    assert message.recipient == shopper.email

    assert services.outbox_deliver_batch().get("claimed") == 0
    assert len(mail.outbox) == 1


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda s: Unsubscribe.objects.create(shopper=s, channel="email"), "unsubscribed"),
        (lambda s: type(s).objects.filter(pk=s.pk).update(email_consent=False), "no consent"),
        (
            lambda s: Suppression.objects.create(channel="email", address=s.email, reason="bounce"),
            "suppressed (bounce)",
        ),
        (
            lambda s: Preference.objects.create(
                shopper=s, paused_until=timezone.now() + dt.timedelta(days=3)
            ),
            "paused by shopper",
        ),
        (lambda s: type(s).objects.filter(pk=s.pk).update(email=""), "no email address"),
        (
            lambda s: type(s).objects.filter(pk=s.pk).update(email="a@b.com\r\nBcc: x@evil.com"),
            "no email address",
        ),
    ],
)
def test_send_time_checks_skip_with_the_reason(setup, reason):
    shopper = make_shopper()
    _, message = _fire(shopper)
    setup(shopper)

    services.outbox_deliver_batch()

    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.SKIPPED, reason)
    assert mail.outbox == []


def test_topic_opt_out_skips_only_that_topic():
    offers = Topic.objects.create(key="offers", name="Offers")
    shopper = make_shopper()
    preference = Preference.objects.create(shopper=shopper)
    preference.topics_opted_out.add(offers)
    _, offer_message = _fire(shopper, topic=offers)
    other = make_campaign(name="no topic")
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="second")

    services.outbox_deliver_batch()

    offer_message.refresh_from_db()
    assert offer_message.reason == "opted out of Offers"
    assert Message.objects.get(campaign=other).state == Message.State.SENT
    assert len(mail.outbox) == 1


def test_quiet_hours_postpone_to_the_end_in_the_shoppers_zone():
    shopper = make_shopper(time_zone="Asia/Tokyo")
    now = timezone.now()
    local = now.astimezone(services.shopper_zone(shopper))
    start = (local - dt.timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (local + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0)
    _, message = _fire(shopper, quiet_hours_start=start, quiet_hours_end=end)
    Message.objects.filter(pk=message.pk).update(due_at=now)

    services.outbox_deliver_batch()

    message.refresh_from_db()
    assert message.state == Message.State.SCHEDULED
    assert message.postponed == 1
    expected = (local + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    assert message.due_at == expected
    assert mail.outbox == []


def test_quiet_hours_across_midnight():
    zone = ZoneInfo("Europe/Riga")
    late = dt.datetime(2026, 3, 1, 23, 30, tzinfo=zone)
    early = dt.datetime(2026, 3, 2, 6, 0, tzinfo=zone)
    noon = dt.datetime(2026, 3, 2, 12, 0, tzinfo=zone)
    start, end = dt.time(21, 0), dt.time(8, 0)

    assert services.quiet_hours_release(when=late, zone=zone, start=start, end=end) == dt.datetime(
        2026, 3, 2, 8, 0, tzinfo=zone
    )
    assert services.quiet_hours_release(when=early, zone=zone, start=start, end=end) == dt.datetime(
        2026, 3, 2, 8, 0, tzinfo=zone
    )
    assert services.quiet_hours_release(when=noon, zone=zone, start=start, end=end) is None


def test_frequency_cap_counts_every_campaign_on_the_channel():
    shopper = make_shopper()
    make_campaign(name="a", frequency_cap=1, frequency_cap_hours=24)
    make_campaign(name="b", frequency_cap=1, frequency_cap_hours=24)
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")

    services.outbox_deliver_batch()

    states = sorted(Message.objects.values_list("state", "reason"))
    assert states == [("sent", ""), ("skipped", "frequency cap")]
    assert len(mail.outbox) == 1


def test_end_condition_cancels_the_rest_of_the_sequence():
    shopper = make_shopper()
    make_campaign(
        "win_back",
        steps=[
            {"subject": "We miss you"},
            {"subject": "Last chance", "delay": dt.timedelta(days=3)},
        ],
    )
    services.trigger_fire(trigger="win_back", shopper=shopper, occurrence_key="lastorder:1")
    services.outbox_deliver_batch()
    Order.objects.create(number="N-1", shopper=shopper, placed_at=timezone.now())
    Message.objects.filter(state="scheduled").update(due_at=timezone.now())

    services.outbox_deliver_batch()

    second = Message.objects.get(step__position=2)
    assert second.state == Message.State.CANCELLED
    assert second.reason.startswith("sequence ended")
    assert Run.objects.get().state == Run.State.STOPPED
    assert len(mail.outbox) == 1


class _FailingBackend(ChannelBackend):
    idempotent = False

    def __init__(self, error):
        self.error = error

    def send(self, outbound, *, handing):
        if self.error.maybe_delivered:
            handing()
        raise self.error


@pytest.mark.parametrize(
    ("error", "state", "confirmed"),
    [
        (DeliveryError("421 try later", transient=True), "scheduled", False),
        (DeliveryError("550 no such user", transient=False), "failed", False),
        (DeliveryError("lost after data", transient=True, maybe_delivered=True), "sent", False),
    ],
)
def test_delivery_errors(monkeypatch, error, state, confirmed):
    shopper = make_shopper()
    _, message = _fire(shopper)
    monkeypatch.setattr(delivery, "backend_for", lambda channel: _FailingBackend(error))
    before = timezone.now()

    services.outbox_deliver_batch()

    message.refresh_from_db()
    assert message.state == state
    assert message.confirmed is confirmed
    assert message.attempts == 1
    assert str(error) in message.last_error
    if state == "scheduled":
        assert message.due_at >= before + dt.timedelta(seconds=29)
        assert message.handed_at is None


def test_sweeper_requeues_unhanded_and_never_resends_handed_email():
    shopper = make_shopper()
    make_campaign(steps=[{"subject": "one"}, {"subject": "two"}])
    make_campaign(
        name="webhook",
        steps=[{"channel": "webhook", "webhook_endpoint": _endpoint(), "subject": "x"}],
    )
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")
    long_ago = timezone.now() - dt.timedelta(hours=1)
    email_one, email_two = Message.objects.filter(channel="email").order_by("step__position")
    hook = Message.objects.get(channel="webhook")
    Message.objects.filter(pk=email_one.pk).update(
        state="sending", claimed_by="dead:1", claimed_at=long_ago
    )
    Message.objects.filter(pk__in=[email_two.pk, hook.pk]).update(
        state="sending", claimed_by="dead:1", claimed_at=long_ago, handed_at=long_ago
    )

    result = services.outbox_sweep()

    assert result == {"requeued": 2, "unconfirmed": 1}
    email_one.refresh_from_db()
    email_two.refresh_from_db()
    hook.refresh_from_db()
    assert (email_one.state, email_one.claimed_by) == ("scheduled", "")
    assert (email_two.state, email_two.confirmed, email_two.sent_at) == ("sent", False, long_ago)
    assert hook.state == "scheduled"


def test_sweeper_leaves_fresh_claims_alone():
    shopper = make_shopper()
    _, message = _fire(shopper)
    Message.objects.filter(pk=message.pk).update(
        state="sending", claimed_by="alive:1", claimed_at=timezone.now()
    )
    assert services.outbox_sweep() == {"requeued": 0, "unconfirmed": 0}
    message.refresh_from_db()
    assert message.state == "sending"


def test_a_claim_is_taken_back_once_its_thirty_second_lease_is_not_renewed():
    shopper = make_shopper()
    _, message = _fire(shopper)
    Message.objects.filter(pk=message.pk).update(
        state="sending", claimed_by="dead:1", claimed_at=timezone.now() - dt.timedelta(seconds=29)
    )
    assert services.outbox_sweep() == {"requeued": 0, "unconfirmed": 0}

    Message.objects.filter(pk=message.pk).update(
        claimed_at=timezone.now() - dt.timedelta(seconds=31)
    )
    assert services.outbox_sweep() == {"requeued": 1, "unconfirmed": 0}


@pytest.mark.django_db(transaction=True)
def test_the_lease_keeper_renews_only_its_own_workers_claims_while_it_runs():
    shopper = make_shopper()
    make_campaign(steps=[{"subject": "one"}, {"subject": "two"}])
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")
    mine, theirs = Message.objects.order_by("step__position")
    old = timezone.now() - dt.timedelta(seconds=25)
    Message.objects.filter(pk=mine.pk).update(state="sending", claimed_by="me:1", claimed_at=old)
    Message.objects.filter(pk=theirs.pk).update(
        state="sending", claimed_by="other:2", claimed_at=old
    )

    with services.LeaseKeeper("me:1", interval=0.05) as keeper:
        deadline = timezone.now() + dt.timedelta(seconds=10)
        while keeper.renewals < 2 and timezone.now() < deadline:
            time.sleep(0.05)
    stopped_at = timezone.now()
    renewals = keeper.renewals
    time.sleep(0.3)

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert renewals >= 2
    assert keeper.renewals == renewals  # it stops with its worker
    assert mine.claimed_at is not None
    assert old + dt.timedelta(seconds=25) <= mine.claimed_at <= stopped_at
    assert theirs.claimed_at == old
    assert not keeper.thread.is_alive()


def test_a_claim_taken_back_is_not_handed_over(monkeypatch):
    shopper = make_shopper()
    _, _message = _fire(shopper)

    original = delivery._render

    def render_then_lose_claim(msg):
        Message.objects.filter(pk=msg.pk).update(state="scheduled", claimed_by="")
        return original(msg)

    monkeypatch.setattr(delivery, "_render", render_then_lose_claim)
    totals = services.outbox_deliver_batch()

    assert totals.get("lost") == 1
    assert mail.outbox == []


def test_archiving_cancels_scheduled_messages_and_pausing_holds_them():
    shopper = make_shopper()
    paused, message = _fire(shopper)
    services.campaign_status_set(campaign=paused, status=Campaign.Status.PAUSED)

    assert services.outbox_deliver_batch().get("claimed") == 0
    services.campaign_status_set(campaign=paused, status=Campaign.Status.ARCHIVED)

    message.refresh_from_db()
    assert (message.state, message.reason) == ("cancelled", "campaign archived")
    assert mail.outbox == []


def _endpoint():
    from engagement.models import WebhookEndpoint

    return WebhookEndpoint.objects.create(name="crm", url="http://127.0.0.1:9/hook", secret="s")


def test_one_delivery_kick_per_transaction(django_capture_on_commit_callbacks, settings):
    settings.PATRON_OUTBOX_BATCH_SIZE = 2
    settings.PATRON_OUTBOX_PARALLELISM = 4
    make_campaign()
    shoppers = [make_shopper() for _ in range(5)]

    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        for shopper in shoppers:
            services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")

    assert len(callbacks) == 1
    assert callbacks[0].count == 5


def _claim_with_queries(ok_shoppers: int) -> tuple[list, list[str], dict[str, str]]:
    """One unsubscribed, one paused and ``ok_shoppers`` sendable shoppers, claimed in one batch."""
    make_campaign(frequency_cap=3, frequency_cap_hours=24)
    unsubscribed, paused = make_shopper(), make_shopper()
    Unsubscribe.objects.create(shopper=unsubscribed, channel="email")
    Preference.objects.create(shopper=paused, paused_until=timezone.now() + dt.timedelta(days=1))
    for shopper in [unsubscribed, paused, *(make_shopper() for _ in range(ok_shoppers))]:
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    with CaptureQueriesContext(connection) as queries:
        approved = services.outbox_claim(worker="w", limit=100)
    reasons = {m.shopper.email: m.reason for m in Message.objects.select_related("shopper").all()}
    return approved, [q["sql"] for q in queries.captured_queries], reasons


@pytest.mark.parametrize("ok_shoppers", [2, 8])
def test_the_send_time_checks_query_per_batch_not_per_message(ok_shoppers):
    approved, queries, reasons = _claim_with_queries(ok_shoppers)

    assert len(approved) == ok_shoppers
    assert {a.message.state for a in approved} == {Message.State.SENDING}
    assert sorted(r for r in reasons.values() if r) == ["paused by shopper", "unsubscribed"]
    # Claim, load, campaigns, steps, lock, unsubscribes, preferences (+ topics), suppressions,
    # the store's engagement settings (smart sending), frequency history, one outcome write per
    # settled message, and the atomic savepoint: the same number whatever the batch's size.
    assert len(queries) == 15
