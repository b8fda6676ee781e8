"""Flow controls (#15 section 2): flow filters and exits, the conditional split, A/B tests of a
step. Conditions are evaluated against real rows (events, orders, messages, shoppers); the
outbox is delivered by the service the worker runs."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from commerce.models import Order, Shopper
from core.exceptions import ValidationError
from engagement import services
from engagement.models import Campaign, CampaignStep, Message, Run, StepTest, StepVariant
from engagement.services.conditions import ConditionContext
from tests.engagement.conftest import make_campaign, make_shopper, track

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def deliver_all_due() -> None:
    """What the worker does: deliver everything due, after pulling later steps forward."""
    Message.objects.filter(state=Message.State.SCHEDULED).update(due_at=timezone.now())
    services.outbox_deliver_batch()


def sent_subjects() -> list[tuple[str, str]]:
    return sorted((m.to[0], str(m.subject)) for m in mail.outbox)


def holds(conditions: list[dict[str, Any]], shopper: Shopper, *, started: dt.datetime) -> bool:
    return services.conditions_hold(
        conditions,
        context=ConditionContext(shopper=shopper, flow_started_at=started, now=NOW),
    )


# --- The condition language ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"type": "orders"}, "flow filters must be a list of conditions"),
        ([{"type": "ordrs"}], "flow filters, condition 1: type must be one of event, orders"),
        (
            [{"type": "orders", "op": "eq", "value": 0}, {"type": "orders", "op": "eq", "valu": 0}],
            "flow filters, condition 2: unknown key 'valu' for a orders condition",
        ),
        ([{"type": "orders", "op": "=", "value": 0}], "condition 1: op must be one of eq, ne"),
        ([{"type": "orders", "op": "eq", "value": -1}], "value must be a whole number, 0 or more"),
        ([{"type": "orders", "op": "eq", "value": True}], "value must be a whole number"),
        (
            [{"type": "orders", "op": "eq", "value": 0, "since": "flow_start", "days": 3}],
            'give either "since" or "days", not both',
        ),
        ([{"type": "orders", "op": "eq", "value": 0, "days": 0}], "days must be a whole number"),
        ([{"type": "orders", "op": "eq", "value": 0, "since": "signup"}], "since must be"),
        ([{"type": "event", "op": "eq", "value": 0}], "event must be the event's name"),
        ([{"type": "email", "metric": "read", "op": "eq", "value": 0}], "metric must be one of"),
        (
            [{"type": "property", "field": "password", "op": "eq", "value": "x"}],
            "condition 1: unknown audience field 'password'",
        ),
        ([{"type": "any", "conditions": []}], "conditions must be a non-empty list"),
        (
            [{"type": "any", "conditions": [{"type": "orders", "op": "lt"}]}],
            "flow filters, condition 1, alternative 1: value must be a whole number",
        ),
    ],
)
def test_bad_conditions_are_refused_with_a_message_naming_the_condition(conditions, message):
    with pytest.raises(ValidationError) as error:
        services.conditions_validate(conditions, field="flow filters")

    assert message in error.value.message


def test_event_counts_over_the_flow_the_last_days_or_all_history(write_key):
    shopper = make_shopper()
    started = NOW - dt.timedelta(days=2)
    track(write_key, shopper, "Checkout Started", at=NOW - dt.timedelta(days=20))
    track(write_key, shopper, "Checkout Started", at=NOW - dt.timedelta(days=1))
    track(write_key, shopper, "Product Viewed", at=NOW - dt.timedelta(hours=1))

    def count_is(value: int, **window: Any) -> bool:
        condition = {"type": "event", "event": "Checkout Started", "op": "eq", "value": value}
        return holds([{**condition, **window}], shopper, started=started)

    assert count_is(1, since="flow_start")
    assert count_is(1, days=7)
    assert count_is(2, days=30)
    assert count_is(2)
    assert not count_is(0, since="flow_start")


def test_orders_since_the_flow_started_leave_out_cancelled_ones_and_other_shoppers():
    shopper, other = make_shopper(), make_shopper()
    started = NOW - dt.timedelta(days=3)
    Order.objects.create(number="OLD", shopper=shopper, placed_at=NOW - dt.timedelta(days=10))
    Order.objects.create(
        number="X", shopper=shopper, placed_at=NOW - dt.timedelta(days=1), status="cancelled"
    )
    Order.objects.create(number="O", shopper=other, placed_at=NOW - dt.timedelta(days=1))
    no_order_since = [{"type": "orders", "op": "eq", "value": 0, "since": "flow_start"}]

    assert holds(no_order_since, shopper, started=started)
    Order.objects.create(number="NEW", shopper=shopper, placed_at=NOW - dt.timedelta(days=1))
    assert not holds(no_order_since, shopper, started=started)
    assert holds([{"type": "orders", "op": "gte", "value": 2}], shopper, started=started)


def test_emails_opened_in_the_last_ninety_days_count_opens_of_any_campaign():
    shopper = make_shopper()
    make_campaign(steps=[{"subject": "one"}, {"subject": "two"}])
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")
    deliver_all_due()
    first, second = Message.objects.order_by("pk")
    Message.objects.filter(pk=first.pk).update(opened_at=NOW - dt.timedelta(days=100))
    opened_lately = [{"type": "email", "metric": "opened", "op": "gte", "value": 1, "days": 90}]

    assert not holds(opened_lately, shopper, started=NOW)
    Message.objects.filter(pk=second.pk).update(opened_at=NOW - dt.timedelta(days=89))
    assert holds(opened_lately, shopper, started=NOW)
    received = [{"type": "email", "metric": "received", "op": "eq", "value": 2}]
    assert holds(received, shopper, started=NOW)


def test_property_conditions_and_alternatives():
    latvian = make_shopper(country="LV", tags=["vip"])
    turkish = make_shopper(country="TR")
    in_lv = {"type": "property", "field": "country", "op": "eq", "value": "LV"}
    vip = {"type": "property", "field": "tags", "op": "contains", "value": "vip"}
    in_tr = {"type": "property", "field": "country", "op": "eq", "value": "TR"}

    assert holds([in_lv, vip], latvian, started=NOW)
    assert not holds([in_lv], turkish, started=NOW)
    assert holds([{"type": "any", "conditions": [in_lv, in_tr]}], turkish, started=NOW)
    assert not holds([{"type": "any", "conditions": [vip, in_lv]}], turkish, started=NOW)


# --- Flow filters and exits ------------------------------------------------------------------


def test_a_shopper_who_orders_after_starting_the_flow_exits_before_the_next_step():
    buyer, browser = make_shopper(), make_shopper()
    make_campaign(
        steps=[
            {"subject": "Welcome"},
            {"subject": "Still thinking?", "delay": dt.timedelta(days=2)},
        ],
        flow_filters=[{"type": "orders", "op": "eq", "value": 0, "since": "flow_start"}],
    )
    for shopper in (buyer, browser):
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    services.outbox_deliver_batch()
    Order.objects.create(number="A-1", shopper=buyer)

    deliver_all_due()

    assert sent_subjects() == sorted(
        [
            (buyer.email, "Welcome"),
            (browser.email, "Welcome"),
            (browser.email, "Still thinking?"),
        ]
    )
    run = Run.objects.get(shopper=buyer)
    assert (run.state, run.stop_reason) == (
        Run.State.STOPPED,
        "flow filter: orders since the flow started = 0",
    )
    follow_up = Message.objects.get(shopper=buyer, step__position=2)
    assert (follow_up.state, follow_up.reason) == (
        Message.State.CANCELLED,
        "sequence ended: flow filter: orders since the flow started = 0",
    )
    assert Run.objects.get(shopper=browser).state == Run.State.ACTIVE


def test_the_filter_is_checked_before_the_first_step_too(write_key):
    never_opens = make_shopper()
    make_campaign(
        steps=[{"subject": "We miss you"}],
        flow_filters=[
            {"type": "email", "metric": "opened", "op": "gte", "value": 1, "days": 90},
            {"type": "event", "event": "Checkout Started", "op": "eq", "value": 0, "days": 7},
        ],
    )
    services.trigger_fire(trigger="welcome", shopper=never_opens, occurrence_key="welcome")

    services.outbox_deliver_batch()

    assert mail.outbox == []
    message = Message.objects.get()
    assert (message.state, message.reason) == (
        Message.State.CANCELLED,
        "sequence ended: flow filter: emails opened in the last 90 days ≥ 1",
    )


def test_an_event_since_starting_the_flow_ends_it(write_key):
    shopper = make_shopper()
    make_campaign(
        steps=[{"subject": "one"}, {"subject": "two", "delay": dt.timedelta(hours=4)}],
        flow_filters=[
            {
                "type": "event",
                "event": "Checkout Started",
                "op": "eq",
                "value": 0,
                "since": "flow_start",
            }
        ],
    )
    track(write_key, shopper, "Checkout Started", at=timezone.now() - dt.timedelta(days=1))
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    services.outbox_deliver_batch()
    track(write_key, shopper, "Checkout Started")

    deliver_all_due()

    assert sent_subjects() == [(shopper.email, "one")]
    assert Run.objects.get().stop_reason == (
        "flow filter: Checkout Started events since the flow started = 0"
    )


def test_a_filter_broken_outside_the_admin_sends_nothing():
    shopper = make_shopper()
    campaign = make_campaign(steps=[{"subject": "one"}])
    Campaign.objects.filter(pk=campaign.pk).update(flow_filters=[{"type": "orders", "op": "~"}])
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

    services.outbox_deliver_batch()

    assert mail.outbox == []
    assert Run.objects.get().stop_reason.startswith(
        "flow filter: invalid: flow filters, condition 1: op must be one of"
    )


def test_activation_refuses_bad_filters_and_changes_nothing():
    campaign = make_campaign(
        status=Campaign.Status.DRAFT,
        flow_filters=[{"type": "orders", "op": "eq", "value": "none"}],
    )

    with pytest.raises(ValidationError) as error:
        services.campaign_status_set(campaign=campaign, status=Campaign.Status.ACTIVE)

    assert error.value.message == (
        "flow filters, condition 1: value must be a whole number, 0 or more"
    )
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


# --- The conditional split -------------------------------------------------------------------


def _split_campaign(**fields: Any) -> Campaign:
    return make_campaign(
        steps=[
            {"subject": "Welcome"},
            {"subject": "Made for Latvia", "branch": "yes", "delay": dt.timedelta(hours=1)},
            {"subject": "Latvia only: still?", "branch": "yes", "delay": dt.timedelta(days=1)},
            {"subject": "Our best sellers", "branch": "no", "delay": dt.timedelta(hours=2)},
        ],
        split_condition=[{"type": "property", "field": "country", "op": "eq", "value": "LV"}],
        **fields,
    )


def test_the_split_sends_each_shopper_down_one_branch_and_records_it():
    latvian, german = make_shopper(country="LV"), make_shopper(country="DE")
    _split_campaign()
    for shopper in (latvian, german):
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

    deliver_all_due()  # every step due at once: both branches in one claimed batch
    deliver_all_due()

    assert sent_subjects() == sorted(
        [
            (latvian.email, "Welcome"),
            (latvian.email, "Made for Latvia"),
            (latvian.email, "Latvia only: still?"),
            (german.email, "Welcome"),
            (german.email, "Our best sellers"),
        ]
    )
    assert dict(Run.objects.values_list("shopper_id", "branch")) == {
        latvian.pk: "yes",
        german.pk: "no",
    }
    cancelled = Message.objects.filter(state=Message.State.CANCELLED)
    assert sorted(cancelled.values_list("shopper_id", "step__position", "reason")) == sorted(
        [
            (latvian.pk, 4, "split: the shopper took the yes branch"),
            (german.pk, 2, "split: the shopper took the no branch"),
            (german.pk, 3, "split: the shopper took the no branch"),
        ]
    )


def test_each_branch_counts_its_delays_from_the_last_step_before_the_split():
    shopper = make_shopper()
    campaign = _split_campaign()

    (run,) = services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

    due = {
        m.step.position: m.due_at - run.started_at
        for m in Message.objects.filter(campaign=campaign).select_related("step")
    }
    assert due == {
        1: dt.timedelta(0),
        2: dt.timedelta(hours=1),
        3: dt.timedelta(days=1, hours=1),
        4: dt.timedelta(hours=2),
    }


def test_the_split_reads_behaviour_when_the_first_branch_step_is_due(write_key):
    viewer, idle = make_shopper(), make_shopper()
    make_campaign(
        steps=[
            {"subject": "Welcome"},
            {"subject": "Still looking?", "branch": "yes", "delay": dt.timedelta(hours=1)},
            {"subject": "Start here", "branch": "no", "delay": dt.timedelta(hours=1)},
        ],
        split_condition=[
            {
                "type": "event",
                "event": "Product Viewed",
                "op": "gte",
                "value": 1,
                "since": "flow_start",
            }
        ],
    )
    for shopper in (viewer, idle):
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    services.outbox_deliver_batch()
    track(write_key, viewer, "Product Viewed", properties={"sku": "MUG"})

    deliver_all_due()

    assert sent_subjects() == sorted(
        [
            (viewer.email, "Welcome"),
            (viewer.email, "Still looking?"),
            (idle.email, "Welcome"),
            (idle.email, "Start here"),
        ]
    )


@pytest.mark.parametrize(
    ("steps", "split", "message"),
    [
        (
            [{"branch": ""}, {"branch": "yes"}],
            [],
            "steps on the yes or no branch need a split condition",
        ),
        (
            [{"branch": ""}],
            [{"type": "orders", "op": "eq", "value": 0}],
            "a split condition needs steps on the yes or no branch",
        ),
        (
            [{"branch": "yes"}, {"branch": ""}],
            [{"type": "orders", "op": "eq", "value": 0}],
            "step 2 is before the split but placed after a branch step",
        ),
    ],
)
def test_activation_refuses_a_split_that_does_not_fit_its_steps(steps, split, message):
    campaign = make_campaign(status=Campaign.Status.DRAFT, steps=steps, split_condition=split)

    with pytest.raises(ValidationError) as error:
        services.campaign_status_set(campaign=campaign, status=Campaign.Status.ACTIVE)

    assert message in error.value.message
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


# --- A/B tests of a step ---------------------------------------------------------------------


def _ab_campaign(*, metric: str = StepTest.Metric.CLICK_RATE, weights=(1, 1)) -> StepTest:
    campaign = make_campaign(
        steps=[
            {
                "subject": "Hello {{ first_name }}",
                "body": '<p><a href="https://shop.example/new">New in</a></p>',
                "body_text": "New in: https://shop.example/new",
            }
        ]
    )
    test = StepTest.objects.create(
        step=campaign.steps.get(), metric=metric, decide_after=dt.timedelta(hours=4)
    )
    StepVariant.objects.create(test=test, label="A", weight=weights[0])
    StepVariant.objects.create(
        test=test,
        label="B",
        weight=weights[1],
        subject="{{ first_name }}, 15% off today",
        body='<p><a href="https://shop.example/sale">Sale</a></p>',
    )
    return test


def _enrol(count: int) -> list[Shopper]:
    shoppers = [make_shopper() for _ in range(count)]
    for shopper in shoppers:
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    return shoppers


def test_the_draw_is_stable_per_run_and_follows_the_weights():
    test = _ab_campaign(weights=(1, 3))
    variants = list(test.variants.order_by("label"))

    draws = [
        services.variant_pick(variants=variants, run_id=run_id, step_id=test.step_id).label
        for run_id in range(1, 4001)
    ]
    again = [
        services.variant_pick(variants=variants, run_id=run_id, step_id=test.step_id).label
        for run_id in range(1, 4001)
    ]

    assert draws == again
    assert 0.22 < Counter(draws)["A"] / 4000 < 0.28


def test_each_recipient_gets_their_drawn_variant_recorded_on_the_message():
    test = _ab_campaign()
    shoppers = _enrol(8)

    services.outbox_deliver_batch()

    variants = list(test.variants.order_by("label"))
    by_email = {m.to[0]: m for m in mail.outbox}
    for message in Message.objects.select_related("run", "variant", "shopper"):
        drawn = services.variant_pick(
            variants=variants, run_id=message.run_id, step_id=test.step_id
        )
        assert message.variant == drawn
        email = by_email[message.shopper.email]
        first_name = message.shopper.first_name
        if drawn.label == "A":
            assert email.subject == f"Hello {first_name}"
            assert email.body.startswith("New in: https://shop.example/new\n")
        else:
            assert email.subject == f"{first_name}, 15% off today"
            assert "Sale" in email.body
            assert "New in" not in email.body
    assert len(mail.outbox) == len(shoppers)
    test.refresh_from_db()
    assert test.started_at is not None
    assert test.winner is None


def test_after_the_set_time_the_best_click_rate_wins_and_later_recipients_get_it():
    test = _ab_campaign()
    _enrol(16)
    services.outbox_deliver_batch()
    sent = {label: list(Message.objects.filter(variant__label=label)) for label in ("A", "B")}
    assert sent["A"], "the draw of sixteen runs gave both variants"
    assert sent["B"], "the draw of sixteen runs gave both variants"
    clicked = {"A": sent["A"][:1], "B": sent["B"][:2]}
    for messages in clicked.values():
        for message in messages:
            Message.objects.filter(pk=message.pk).update(
                opened_at=timezone.now(), clicked_at=timezone.now()
            )

    # Before the set time, later recipients still draw.
    StepTest.objects.filter(pk=test.pk).update(started_at=timezone.now() - dt.timedelta(hours=3))
    _enrol(4)
    services.outbox_deliver_batch()
    test.refresh_from_db()
    assert test.winner is None
    # Once it has passed, the next claim chooses the winner on the figures so far.
    StepTest.objects.filter(pk=test.pk).update(started_at=timezone.now() - dt.timedelta(hours=5))
    figures = {f["label"]: f for f in services.ab_test_figures(test=test)}
    rates = {label: Decimal(len(clicked[label])) / figures[label]["sent"] for label in "AB"}
    expected = "B" if rates["B"] > rates["A"] else "A"
    later = _enrol(6)
    services.outbox_deliver_batch()

    decided = StepTest.objects.select_related("winner").get(pk=test.pk)
    assert decided.winner is not None
    assert decided.winner.label == expected
    assert decided.decided_at is not None
    assert set(
        Message.objects.filter(shopper__in=later).values_list("variant__label", flat=True)
    ) == {expected}
    a, b = figures["A"], figures["B"]
    assert decided.decision == (
        f"{expected} won on click rate: "
        f"A {len(clicked['A'])}/{a['sent']} ({rates['A'] * 100:.1f}%), "
        f"B {len(clicked['B'])}/{b['sent']} ({rates['B'] * 100:.1f}%)"
    )


def test_figures_per_variant_and_a_tie_goes_to_the_first_label():
    test = _ab_campaign(metric=StepTest.Metric.OPEN_RATE)
    _enrol(6)
    services.outbox_deliver_batch()
    counts = Counter(Message.objects.values_list("variant__label", flat=True))

    figures = services.ab_test_figures(test=test)
    winner = services.ab_test_decide(test=test)

    assert [(f["label"], f["sent"], f["opened"], f["open_rate"]) for f in figures] == [
        ("A", counts["A"], 0, Decimal("0.0000") if counts["A"] else None),
        ("B", counts["B"], 0, Decimal("0.0000") if counts["B"] else None),
    ]
    assert winner is not None
    assert winner.label == ("A" if counts["A"] else "B")
    assert services.ab_test_decide(test=test) == winner  # decided once


def test_beat_decides_tests_whose_time_has_come_and_leaves_the_others():
    due, running = _ab_campaign(), _ab_campaign()
    _enrol(2)
    services.outbox_deliver_batch()
    StepTest.objects.filter(pk=due.pk).update(started_at=timezone.now() - dt.timedelta(hours=5))
    StepTest.objects.filter(pk=running.pk).update(started_at=timezone.now() - dt.timedelta(hours=1))

    assert services.ab_tests_decide_due() == 1

    assert StepTest.objects.get(pk=due.pk).winner is not None
    assert StepTest.objects.get(pk=running.pk).winner is None


def test_a_message_sent_again_after_a_lost_worker_keeps_its_variant():
    test = _ab_campaign()
    (shopper,) = _enrol(1)
    services.outbox_deliver_batch()
    message = Message.objects.get()
    first = message.variant
    assert first is not None
    StepTest.objects.filter(pk=test.pk).update(winner=test.variants.exclude(pk=first.pk).get())
    # A worker claimed it again and died before handing it over: the sweeper requeues it.
    Message.objects.filter(pk=message.pk).update(
        state=Message.State.SENDING,
        claimed_by="lost-worker",
        claimed_at=timezone.now() - dt.timedelta(hours=1),
        handed_at=None,
    )
    assert services.outbox_sweep() == {"requeued": 1, "unconfirmed": 0}

    services.outbox_deliver_batch()

    message.refresh_from_db()
    assert (message.state, message.variant) == (Message.State.SENT, first)
    assert [m.to for m in mail.outbox] == [[shopper.email], [shopper.email]]
    assert mail.outbox[0].subject == mail.outbox[1].subject


def test_the_admin_shows_the_variants_figures_and_the_campaign_links_to_its_test(admin_client):
    test = _ab_campaign()
    _enrol(3)
    services.outbox_deliver_batch()
    counts = Counter(Message.objects.values_list("variant__label", flat=True))

    page = admin_client.get(f"/admin/engagement/steptest/{test.pk}/change/")
    campaign_page = admin_client.get(f"/admin/engagement/campaign/{test.step.campaign_id}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    for label in "AB":
        sent = counts[label]
        rate = "0.0%" if sent else "-"
        assert f"<tr><td>{label}</td><td>1</td><td>{sent}</td><td>0 ({rate})</td>" in html
    assert campaign_page.status_code == 200
    assert f"/admin/engagement/steptest/{test.pk}/change/" in campaign_page.content.decode()


def test_the_admin_refuses_bad_conditions_with_the_reason_and_saves_nothing(admin_client):
    campaign = make_campaign(status=Campaign.Status.DRAFT)
    step = campaign.steps.get()
    form = {
        "name": campaign.name,
        "trigger": "welcome",
        "trigger_options": "{}",
        "status": "draft",
        "audience": "all",
        "audience_rules": "[]",
        "requires_consent": "on",
        "frequency_cap_hours": "24",
        "control_percent": "0",
        "flow_filters": '[{"type": "orders", "op": "eq", "value": 0, "since": "yesterday"}]',
        "split_condition": "[]",
        "steps-TOTAL_FORMS": "1",
        "steps-INITIAL_FORMS": "1",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
        "steps-0-id": str(step.pk),
        "steps-0-campaign": str(campaign.pk),
        "steps-0-position": "1",
        "steps-0-branch": "yes",
        "steps-0-delay": "0",
        "steps-0-channel": "email",
        "steps-0-subject": "Hi",
        "steps-0-body": "<p>Body</p>",
    }

    response = admin_client.post(f"/admin/engagement/campaign/{campaign.pk}/change/", form)

    assert response.status_code == 200  # the form again, with its errors
    html = response.content.decode()
    assert "flow filters, condition 1: since must be &quot;flow_start&quot;" in html
    assert "steps on the yes or no branch need a split condition" in html
    campaign.refresh_from_db()
    assert campaign.flow_filters == []
    assert CampaignStep.objects.get(pk=step.pk).branch == ""


def test_a_campaign_with_a_finished_test_can_still_be_deleted():
    test = _ab_campaign()
    _enrol(2)
    services.outbox_deliver_batch()
    campaign = test.step.campaign

    campaign.delete()

    assert not StepVariant.objects.exists()
    assert not Message.objects.exists()


def test_a_merchant_sets_up_a_test_from_the_steps_link(admin_client):
    campaign = make_campaign()
    step = campaign.steps.get()
    add = admin_client.get(f"/admin/engagement/steptest/add/?step={step.pk}")
    form = {
        "step": str(step.pk),
        "metric": "open_rate",
        "decide_after": "06:00:00",
        "variants-TOTAL_FORMS": "2",
        "variants-INITIAL_FORMS": "0",
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
        "variants-0-label": "A",
        "variants-0-weight": "1",
        "variants-1-label": "B",
        "variants-1-weight": "3",
        "variants-1-subject": "Last chance",
    }

    response = admin_client.post("/admin/engagement/steptest/add/", form)

    assert add.status_code == 200
    assert f'value="{step.pk}"' in add.content.decode()
    assert response.status_code == 302, response.content.decode()[-2000:]
    test = StepTest.objects.get(step=step)
    assert (test.metric, test.decide_after) == ("open_rate", dt.timedelta(hours=6))
    assert list(test.variants.values_list("label", "weight", "subject")) == [
        ("A", 1, ""),
        ("B", 3, "Last chance"),
    ]


def test_on_conversion_rate_the_variant_credited_with_an_order_wins():
    test = _ab_campaign(metric=StepTest.Metric.CONVERSION_RATE)
    _enrol(16)
    services.outbox_deliver_batch()
    messages = {label: list(Message.objects.filter(variant__label=label)) for label in "AB"}
    assert messages["A"], "the draw of sixteen runs gave both variants"
    assert messages["B"], "the draw of sixteen runs gave both variants"
    hour_ago = timezone.now() - dt.timedelta(hours=1)
    buyer, clicker = messages["B"][0], messages["A"][0]
    Message.objects.filter(pk__in=[buyer.pk, clicker.pk]).update(
        opened_at=hour_ago, clicked_at=hour_ago
    )
    Order.objects.create(number="B-1", shopper_id=buyer.shopper_id, total=Decimal("30.00"))
    # Bought without opening anything: credited to no message.
    unopened = Message.objects.exclude(pk__in=[buyer.pk, clicker.pk]).first()
    assert unopened is not None
    Order.objects.create(number="N-1", shopper_id=unopened.shopper_id)

    winner = services.ab_test_decide(test=test)

    figures = {f["label"]: f for f in services.ab_test_figures(test=test)}
    assert {label: (f["clicked"], f["converted"]) for label, f in figures.items()} == {
        "A": (1, 0),
        "B": (1, 1),
    }
    assert figures["B"]["conversion_rate"] == (Decimal(1) / len(messages["B"])).quantize(
        Decimal("0.0001")
    )
    assert winner is not None
    assert winner.label == "B"
