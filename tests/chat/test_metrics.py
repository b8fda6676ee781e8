"""Chat metrics with exact values from conversations whose timestamps the test sets."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client

from chat import metrics
from chat.models import Conversation, CsatRating
from commerce.models import Shopper
from tests.chat.conftest import make_agent
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db

State = Conversation.State
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SINCE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
UNTIL = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def conversation(**fields: Any) -> Conversation:
    created = fields.pop("created_at", T0)
    return Conversation.objects.create(
        shopper=Shopper.objects.create(), created_at=created, updated_at=created, **fields
    )


@pytest.fixture
def history() -> dict[str, object]:
    """Given: in March, one conversation the bot closed alone (60 s), two closed by agents
    (Anna: reply after 30 s, closed at 300 s, rated 5; Bob: reply after 90 s, closed at
    600 s, rated 2), one still with the bot; and one of Anna's from February."""
    anna = make_agent("anna")
    bob = make_agent("bob")
    conversation(state=State.RESOLVED, resolved_at=at(60))
    by_anna = conversation(
        state=State.RESOLVED,
        assigned_agent=anna,
        handed_off_at=at(10),
        first_agent_response_at=at(40),
        resolved_at=at(300),
    )
    by_bob = conversation(
        state=State.RESOLVED,
        assigned_agent=bob,
        handed_off_at=at(0),
        first_agent_response_at=at(90),
        resolved_at=at(600),
    )
    conversation(state=State.BOT, created_at=at(3600))
    february = conversation(
        state=State.RESOLVED,
        assigned_agent=anna,
        created_at=T0 - dt.timedelta(days=30),
        handed_off_at=T0 - dt.timedelta(days=30),
        first_agent_response_at=T0 - dt.timedelta(days=29),
        resolved_at=T0 - dt.timedelta(days=29),
    )
    CsatRating.objects.create(conversation=by_anna, agent=anna, rating=5)
    CsatRating.objects.create(conversation=by_bob, agent=bob, rating=2)
    CsatRating.objects.create(conversation=february, agent=anna, rating=1)
    return {"anna": anna, "bob": bob}


def test_overall_and_per_agent_figures(history):
    anna, bob = history["anna"], history["bob"]

    figures = metrics.chat_metrics(since=SINCE, until=UNTIL)

    assert figures == {
        "since": "2026-03-01T00:00:00+00:00",
        "until": "2026-04-01T00:00:00+00:00",
        "overall": {
            "conversations": 4,
            "resolved": 3,
            "handed_off": 2,
            "bot_resolution_rate": 0.3333,
            "first_response_s": 60.0,
            "resolution_s": 320.0,
            "csat_count": 2,
            "csat_average": 3.5,
            "csat_satisfied_share": 0.5,
        },
        "agents": [
            {
                "agent": {"id": anna.pk, "name": "Anna"},
                "conversations": 1,
                "resolved": 1,
                "handed_off": 1,
                "first_response_s": 30.0,
                "resolution_s": 300.0,
                "csat_count": 1,
                "csat_average": 5.0,
                "csat_satisfied_share": 1.0,
            },
            {
                "agent": {"id": bob.pk, "name": "Bob"},
                "conversations": 1,
                "resolved": 1,
                "handed_off": 1,
                "first_response_s": 90.0,
                "resolution_s": 600.0,
                "csat_count": 1,
                "csat_average": 2.0,
                "csat_satisfied_share": 0.0,
            },
        ],
        "labels": {},
    }


def test_an_empty_period_has_no_rates_rather_than_zeroes(history):
    figures = metrics.chat_metrics(
        since=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), until=dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    )

    assert figures["overall"] == {
        "conversations": 0,
        "resolved": 0,
        "handed_off": 0,
        "bot_resolution_rate": None,
        "first_response_s": None,
        "resolution_s": None,
        "csat_count": 0,
        "csat_average": None,
        "csat_satisfied_share": None,
    }
    assert figures["agents"] == []


def test_the_metrics_endpoint_reads_the_period_from_dates(history):
    client = Client()
    # A supervisor: metrics need chat.view_chat_metrics, which the Agents group does not hold.
    client.force_login(grant(history["anna"], "chat.view_chat_metrics"))

    response = client.get("/api/chat/metrics/?since=2026-03-01&until=2026-04-01")
    # Any offset Python accepts (PostgreSQL's stop at ±15:59); the same instant as UNTIL.
    offset = client.get("/api/chat/metrics/?since=2026-03-01&until=2026-04-01T20:04:00%2B20:04")

    assert response.status_code == 200
    assert response.json() == metrics.chat_metrics(since=SINCE, until=UNTIL)
    assert offset.json()["overall"] == response.json()["overall"]


@pytest.mark.parametrize(
    "query",
    [
        "since=2026-04-01&until=2026-03-01",
        "since=yesterday",
        "since=2026-02-30",
        "until=0001-01-01",
        "until=2026-13-01T00:00:00",
    ],
)
def test_the_metrics_endpoint_refuses_bad_periods(history, query):
    client = Client()
    # A supervisor: metrics need chat.view_chat_metrics, which the Agents group does not hold.
    client.force_login(grant(history["anna"], "chat.view_chat_metrics"))

    response = client.get(f"/api/chat/metrics/?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_labels_are_counted_once_per_conversation_most_frequent_first():
    shopper = Shopper.objects.create()
    at = dt.datetime(2025, 3, 2, tzinfo=dt.UTC)
    for labels in (["vip", "billing"], ["billing"], [], ["vip", "billing", "late"]):
        Conversation.objects.create(shopper=shopper, labels=labels, created_at=at)
    Conversation.objects.create(shopper=shopper, labels=["vip"], created_at=at.replace(year=2024))

    figures = metrics.chat_metrics(since=at.replace(day=1), until=at.replace(month=4))

    assert list(figures["labels"].items()) == [("billing", 3), ("vip", 2), ("late", 1)]
