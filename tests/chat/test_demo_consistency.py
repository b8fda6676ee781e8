"""The demo agrees with itself (#11 point 4): what the bot, the help pages and the shop say
about shipping comes from one place, the returns answer points nowhere that does not exist,
and the bot's order lookup by number and email works on the demo's own shoppers."""

from __future__ import annotations

import importlib
from decimal import Decimal
from pathlib import Path

import pytest
from django.apps import apps
from django.test import Client

from chat import services
from chat.models import KnowledgeArticle, Message
from commerce import importers
from commerce.models import Shopper, StoreSettings
from tests.commerce.test_import_online_retail_rules import sample  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

SEED = importlib.import_module("chat.migrations.0002_seed_agents_group_settings_and_bot")
QUOTE_THE_STORE = importlib.import_module("chat.migrations.0020_demo_articles_quote_the_store")


@pytest.fixture
def seeded_articles() -> None:
    """The English shipping and returns articles as the seed migration wrote them, then the
    migration that makes them agree with the shop."""
    for spec in SEED.ARTICLES:
        if spec["language"] == "en":
            KnowledgeArticle.objects.update_or_create(
                slug=spec["slug"],
                language="en",
                defaults={k: v for k, v in spec.items() if k not in ("slug", "language")},
            )
    QUOTE_THE_STORE.forwards(apps, None)
    services.chat_settings_invalidate()


def bot_reply(text: str, *, anonymous_id: str) -> str:
    """What the bot answers a new (anonymous) shopper's first message."""
    shopper = Shopper.objects.create(first_name=anonymous_id)
    posted = services.shopper_message_post(shopper=shopper, body=text, client_id="c1")
    return str(
        Message.objects.filter(conversation_id=posted.conversation_id, author_kind="bot")
        .order_by("-seq")
        .values_list("body", flat=True)
        .first()
    )


def test_the_shop_the_bot_and_the_help_page_quote_the_stores_own_threshold(seeded_articles):
    home = Client().get("/").content.decode()
    answer = bot_reply("How much is delivery?", anonymous_id="a-1")
    help_page = Client().get("/help/shipping/").content.decode()

    assert "Free delivery over £40" in home
    assert "free on orders over £40" in answer
    assert "free on orders over £40" in help_page
    assert "over 50" not in answer + help_page

    # One source of truth: the merchant changes it once, everything follows.
    StoreSettings.objects.filter(pk=1).update(
        currency="EUR", free_shipping_threshold=Decimal("49.50")
    )

    assert "Free delivery over €49.50" in Client().get("/").content.decode()
    assert "free on orders over €49.50" in bot_reply("How much is delivery?", anonymous_id="a-2")
    assert "free on orders over €49.50" in Client().get("/help/shipping/").content.decode()


def test_the_returns_answer_sends_nobody_to_an_account_page(seeded_articles):
    answer = bot_reply("How do I return an item?", anonymous_id="a-3")

    assert answer.startswith("You can return unused items within 30 days.")
    assert "account" not in answer.lower()
    assert "order number and the email address" in answer


def test_the_bot_finds_a_builtin_demo_order_by_number_and_email():
    importers.demo_catalog_load()
    shopper = Shopper.objects.get(customer_id="demo-ada")
    assert shopper.email == "ada@example.com"

    answer = bot_reply("where is my order DEMO-1001 ada@example.com", anonymous_id="a-4")

    assert answer.startswith("Here's what I found:\nOrder DEMO-1001: fulfilled")


def test_the_data_sets_shoppers_get_demo_addresses_the_bot_can_find_their_orders_with(
    sample: Path,  # noqa: F811  -- the imported fixture
):
    importers.online_retail_import(path=sample)
    shoppers = list(Shopper.objects.exclude(customer_id=None).order_by("customer_id"))
    order = shoppers[0].orders.order_by("placed_at").first()
    assert order is not None

    answer = bot_reply(f"where is my order {order.number} {shoppers[0].email}", anonymous_id="a-5")

    assert shoppers
    assert all(s.email == f"customer-{s.customer_id}@example.com" for s in shoppers)
    status = order.get_status_display().lower()
    assert answer.startswith(f"Here's what I found:\nOrder {order.number}: {status} (placed ")
