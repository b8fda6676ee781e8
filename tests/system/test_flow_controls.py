"""Flow controls (#15 section 2) end to end: a welcome flow with a flow filter, a conditional
split into two branches and an A/B-tested first step, driven as a store drives it (identify
and track calls to a real ASGI server, a shopper's click on a tracked link) with a real Celery
worker delivering to a real SMTP server."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.utils import timezone

from commerce.models import Event, Order, WriteKey
from engagement import services, tasks
from engagement.models import Message, Run, StepTest, StepVariant
from tests.engagement.conftest import make_campaign
from tests.support.processes import asgi_server_fixture, sending_worker_fixture
from tests.support.smtp import SMTPSink
from tests.support.waiting import outbox_settled, wait_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


# The suite's server, with clicks counted at once (no link-scanner quiet period).
server = asgi_server_fixture(PATRON_LINK_SCANNER_SECONDS="0")


worker = sending_worker_fixture(concurrency=1, PATRON_LINK_SCANNER_SECONDS="0")


class Store:
    """The store's backend: identify and track calls with its server-side key."""

    def __init__(self, server: str) -> None:
        self.http = httpx.Client(base_url=server, timeout=10)
        self.key = WriteKey.objects.create(name="store server", server_side=True).key
        self.sent = 0

    def batch(self, *calls: dict[str, Any]) -> None:
        batch = []
        for call in calls:
            self.sent += 1
            batch.append({"messageId": f"m-{self.sent}", **call})
        response = self.http.post("/v1/batch", json={"batch": batch}, auth=(self.key, ""))
        assert response.status_code == 200, response.text

    def sign_up(self, user_id: str, first_name: str) -> None:
        traits = {"email": f"{user_id}@example.com", "first_name": first_name}
        self.batch(
            {"type": "identify", "userId": user_id, "traits": {**traits, "email_consent": True}}
        )

    def track(self, user_id: str, name: str, **properties: Any) -> None:
        self.batch({"type": "track", "userId": user_id, "event": name, "properties": properties})


def _flow() -> StepTest:
    campaign = make_campaign(
        "welcome",
        steps=[
            {
                "subject": "Welcome, {{ first_name }}",
                "body": '<p><a href="https://shop.example/new">New in</a></p>',
            },
            {
                "subject": "Still looking, {{ first_name }}?",
                "branch": "yes",
                "delay": dt.timedelta(days=1),
            },
            {"subject": "Our best sellers", "branch": "no", "delay": dt.timedelta(days=1)},
        ],
        # Exit: has placed an order since starting this flow.
        flow_filters=[{"type": "orders", "op": "eq", "value": 0, "since": "flow_start"}],
        # Split: has viewed a product since starting this flow.
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
    test = StepTest.objects.create(
        step=campaign.steps.get(position=1),
        metric=StepTest.Metric.CLICK_RATE,
        decide_after=dt.timedelta(hours=2),
    )
    StepVariant.objects.create(test=test, label="A")
    StepVariant.objects.create(
        test=test,
        label="B",
        subject="{{ first_name }}, 10% off your first order",
        body='<p><a href="https://shop.example/offer">Your offer</a></p>',
    )
    return test


def _subject_of(variant: str, first_name: str) -> str:
    return {"A": f"Welcome, {first_name}", "B": f"{first_name}, 10% off your first order"}[variant]


def _received(sink: SMTPSink) -> list[tuple[str, str]]:
    return sorted((r.rcpt_tos[0], str(r.message["Subject"])) for r in sink.messages())


def test_a_two_branch_flow_with_a_filter_a_split_and_an_ab_step(server, worker, sink):
    store = Store(server)
    test = _flow()
    variants = list(test.variants.order_by("label"))
    names = {"c-1": "Ann", "c-2": "Ben", "c-3": "Cem", "c-4": "Dace"}

    # Wave 1: four sign-ups get the tested first step, each their run's draw.
    for user_id, name in names.items():
        store.sign_up(user_id, name)
    first = sink.wait_for(4)
    drawn = {
        run.shopper.customer_id: services.variant_pick(
            variants=variants, run_id=run.pk, step_id=test.step_id
        ).label
        for run in Run.objects.select_related("shopper")
    }
    assert sorted((r.rcpt_tos[0], str(r.message["Subject"])) for r in first) == sorted(
        (f"{u}@example.com", _subject_of(drawn[u], n)) for u, n in names.items()
    )

    # Ann clicks her email's link (through the server, in her browser).
    (ann_email,) = [r for r in first if r.rcpt_tos == ["c-1@example.com"]]
    html = ann_email.message.get_body(preferencelist=("html",)).get_content()
    found = re.search(r'href="([^"]+/e/c/[^"]+)"', html)
    assert found is not None
    link = found.group(1)
    clicked = httpx.get(link, headers={"User-Agent": BROWSER})
    assert clicked.status_code == 302
    # Ann views a product; Cem views one and buys.
    store.track("c-1", "Product Viewed", sku="MUG")
    store.track("c-3", "Product Viewed", sku="MUG")
    store.track(
        "c-3",
        "Order Completed",
        order_id="W-1",
        products=[{"sku": "MUG", "price": 20, "quantity": 1}],
    )
    wait_until(lambda: Order.objects.filter(number="W-1").exists(), what="Cem's order")
    wait_until(
        lambda: not Event.objects.filter(processed_at__isnull=True).exists(),
        what="the events to be processed",
    )

    # A day later: the branch steps fall due.
    Message.objects.filter(state=Message.State.SCHEDULED).update(due_at=timezone.now())
    tasks.outbox_deliver.delay()
    sink.wait_for(7)
    wait_until(outbox_settled, what="the branch steps to be decided")

    # The test's time passes; wave 2 gets the winner: the variant Ann clicked.
    StepTest.objects.filter(pk=test.pk).update(started_at=timezone.now() - dt.timedelta(hours=3))
    store.sign_up("c-5", "Eve")
    store.sign_up("c-6", "Fay")
    sink.wait_for(9)
    wait_until(outbox_settled, what="wave 2")

    # Ann buys two mugs after her click: the order is credited to the step she clicked.
    store.track(
        "c-1",
        "Order Completed",
        order_id="W-2",
        products=[{"sku": "MUG", "price": 20, "quantity": 2}],
    )
    wait_until(lambda: Order.objects.filter(number="W-2").exists(), what="Ann's order")

    winner = drawn["c-1"]
    assert _received(sink) == sorted(
        [
            *((f"{u}@example.com", _subject_of(drawn[u], n)) for u, n in names.items()),
            ("c-1@example.com", "Still looking, Ann?"),
            ("c-2@example.com", "Our best sellers"),
            ("c-4@example.com", "Our best sellers"),
            ("c-5@example.com", _subject_of(winner, "Eve")),
            ("c-6@example.com", _subject_of(winner, "Fay")),
        ]
    )
    assert len(sink.count_by_message_id()) == 9
    runs = {r.shopper.customer_id: r for r in Run.objects.select_related("shopper")}
    assert (runs["c-3"].state, runs["c-3"].stop_reason) == (
        Run.State.STOPPED,
        "flow filter: orders since the flow started = 0",
    )
    assert {u: runs[u].branch for u in ("c-1", "c-2", "c-4")} == {
        "c-1": "yes",
        "c-2": "no",
        "c-4": "no",
    }
    test.refresh_from_db()
    assert test.winner is not None
    assert test.winner.label == winner
    figures = {f["label"]: f for f in services.ab_test_figures(test=test)}
    wave_one = [drawn[u] for u in names]
    assert {label: (f["sent"], f["clicked"]) for label, f in figures.items()} == {
        label: (wave_one.count(label) + (2 if label == winner else 0), int(label == winner))
        for label in ("A", "B")
    }
    recorded = dict(
        Message.objects.filter(step__position=1).values_list(
            "shopper__customer_id", "variant__label"
        )
    )
    assert recorded == {**drawn, "c-5": winner, "c-6": winner}
    assert {label: f["converted"] for label, f in figures.items()} == {
        label: int(label == winner) for label in ("A", "B")
    }

    # The campaign's attribution, by hand: six welcomes, Ann's the only one opened (clicked)
    # and credited with her order of 2 x 20.00; Cem's order follows no open, so no step earns
    # it, but both buyers count for the uplift (orders within the window after enrolment).
    result = services.campaign_attribution(campaign=test.step.campaign, window=dt.timedelta(days=7))
    assert [
        (s.position, s.sent, s.opened, s.clicked, s.converted, s.orders, s.revenue)
        for s in result.steps
    ] == [
        (1, 6, 1, 1, 1, 1, Decimal("40.00")),
        (2, 1, 0, 0, 0, 0, Decimal("0")),
        (3, 2, 0, 0, 0, 0, Decimal("0")),
    ]
    assert (result.uplift.treated.runs, result.uplift.treated.converted) == (6, 2)
    assert result.uplift.treated.revenue == Decimal("60.00")
    assert result.uplift.control.runs == 0
