"""The bot's order-status intent and intents registered by other apps through chat.registry."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal

import pytest
from django.apps import apps
from django.utils import timezone

from chat import registry, services
from chat.models import ChatSettings, Conversation, Message
from commerce.models import Order, Shopper

pytestmark = pytest.mark.django_db


def bot_replies(conversation_id: int) -> list[tuple[str, str]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id, author_kind="bot")
        .order_by("seq")
        .values_list("intent", "body")
    )


def order(number: str, shopper: Shopper | None, *, days_ago: int, **fields: object) -> Order:
    defaults: dict[str, object] = {
        "email": shopper.email if shopper else "",
        "status": Order.Status.PAID,
        "total": Decimal("40.00"),
        "currency": "GBP",
    }
    defaults.update(fields)
    return Order.objects.create(
        number=number,
        shopper=shopper,
        placed_at=timezone.now().replace(hour=12) - dt.timedelta(days=days_ago),
        **defaults,
    )


def day(days_ago: int) -> str:
    return f"{timezone.now().replace(hour=12) - dt.timedelta(days=days_ago):%Y-%m-%d}"


def test_an_identified_shopper_hears_their_three_latest_orders():
    ada = Shopper.objects.create(customer_id="c-9", first_name="Ada", email="ada@example.com")
    grace = Shopper.objects.create(customer_id="c-7", email="grace@example.com")
    order("1001", ada, days_ago=20)
    order("1002", ada, days_ago=10, status=Order.Status.FULFILLED, total=Decimal("12.50"))
    order("1003", ada, days_ago=5)
    order("1004", ada, days_ago=1, status=Order.Status.PENDING, currency="EUR")
    order("2001", grace, days_ago=0)

    result = services.shopper_message_post(shopper=ada, body="Where is my order?", client_id="c1")

    assert bot_replies(result.conversation_id) == [
        (
            "order_status",
            "Here's what I found:\n"
            f"Order 1004: pending (placed {day(1)}, total 40.00 EUR)\n"
            f"Order 1003: paid (placed {day(5)}, total 40.00 GBP)\n"
            f"Order 1002: fulfilled (placed {day(10)}, total 12.50 GBP)",
        )
    ]
    assert Conversation.objects.get(pk=result.conversation_id).bot_failures == 0


def test_an_identified_shopper_without_orders_is_told_so():
    ada = Shopper.objects.create(customer_id="c-9", email="ada@example.com")
    order("2001", Shopper.objects.create(customer_id="c-7"), days_ago=0)

    result = services.shopper_message_post(shopper=ada, body="order status", client_id="c1")

    assert bot_replies(result.conversation_id) == [
        ("order_status", "I can't see any orders on your account yet.")
    ]


def test_an_anonymous_shopper_is_asked_for_the_number_and_email_then_told_the_status():
    visitor = Shopper.objects.create()
    owner = Shopper.objects.create(customer_id="c-9", email="ada@example.com")
    order("1001", owner, days_ago=3, status=Order.Status.FULFILLED, total=Decimal("99.90"))

    first = services.shopper_message_post(shopper=visitor, body="where is my order", client_id="c1")
    services.shopper_message_post(
        shopper=visitor,
        body="It's #1001, ADA@example.com",
        client_id="c2",
        conversation_id=first.conversation_id,
    )

    assert bot_replies(first.conversation_id) == [
        (
            "order_status",
            "I can look that up. Please send your order number and the email address you "
            'ordered with, e.g. "1001 ada@example.com".',
        ),
        (
            "order_status",
            f"Here's what I found:\nOrder 1001: fulfilled (placed {day(3)}, total 99.90 GBP)",
        ),
    ]


def test_a_wrong_email_reveals_nothing_about_the_order():
    visitor = Shopper.objects.create()
    owner = Shopper.objects.create(customer_id="c-9", email="ada@example.com")
    order("1001", owner, days_ago=3, total=Decimal("99.90"))

    result = services.shopper_message_post(
        shopper=visitor, body="1001 mallory@example.com", client_id="c1"
    )

    [(intent, body)] = bot_replies(result.conversation_id)
    assert (intent, body) == (
        "order_status",
        "I couldn't find an order with that number and email address. "
        "Please check both, or ask for a person.",
    )
    assert "99.90" not in body
    assert "paid" not in body
    # A miss counts towards the hand-off, like any answer the bot could not give.
    assert Conversation.objects.get(pk=result.conversation_id).bot_failures == 1


def test_an_intent_registered_by_another_app_answers_and_stops_when_unregistered(
    chat_settings,
):
    """With the seeded example phrases (the conftest's trimmed ones leave "gift ideas" of
    recommendations as the only near match, above the threshold), an unknown question gets the
    clarifying question once the intent is gone."""
    seed = importlib.import_module("chat.migrations.0013_seed_bot_example_phrases")
    seed.seed(apps, None)
    calls: list[registry.BotRequest] = []

    def gift_card_balance(request: registry.BotRequest) -> str:
        calls.append(request)
        return f"{request.shopper.first_name}, your gift card holds 25.00 GBP."

    ada = Shopper.objects.create(first_name="Ada", email="ada@example.com")
    registry.register_bot_intent(
        "gift_card_balance", {"en": ["gift card balance"]}, gift_card_balance
    )
    try:
        started = services.shopper_message_post(
            shopper=ada, body="What is my gift card balance?", client_id="c1"
        )
    finally:
        registry.unregister("gift_card_balance")
    services.shopper_message_post(
        shopper=ada,
        body="What is my gift card balance?",
        client_id="c2",
        conversation_id=started.conversation_id,
    )

    assert bot_replies(started.conversation_id) == [
        ("gift_card_balance", "Ada, your gift card holds 25.00 GBP."),
        ("clarify", ChatSettings.objects.get().clarify_message),
    ]
    assert [(c.shopper.pk, c.conversation.pk, c.text, c.language) for c in calls] == [
        (ada.pk, started.conversation_id, "What is my gift card balance?", "en")
    ]
    assert registry.bot_intent("gift_card_balance") is None


def test_a_merchant_configured_registered_intent_uses_the_apps_handler():
    """``points_balance`` is configured in the admin (kind "registered"): its phrases are the
    merchant's, the answer is the app's handler's; without a handler the bot says it can't."""
    ada = Shopper.objects.create(first_name="Ada")
    registry.register_bot_intent(
        "points_balance", ["zzz never matched"], lambda r: "You have 120 points."
    )
    try:
        with_handler = services.shopper_message_post(
            shopper=ada, body="how many points do I have", client_id="c1"
        )
    finally:
        registry.unregister("points_balance")
    grace = Shopper.objects.create(first_name="Grace")
    without = services.shopper_message_post(
        shopper=grace, body="how many points do I have", client_id="c1"
    )

    assert bot_replies(with_handler.conversation_id) == [("points_balance", "You have 120 points.")]
    assert bot_replies(without.conversation_id) == [
        ("points_balance", ChatSettings.objects.get().unsupported_message)
    ]


def test_a_handler_that_cannot_answer_gets_the_unsupported_reply():
    ada = Shopper.objects.create(first_name="Ada")
    registry.register_bot_intent("store_hours", ["opening hours"], lambda request: None)
    try:
        result = services.shopper_message_post(shopper=ada, body="opening hours", client_id="c1")
    finally:
        registry.unregister("store_hours")

    assert bot_replies(result.conversation_id) == [
        ("store_hours", ChatSettings.objects.get().unsupported_message)
    ]
