from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone

from chat import presence, services
from chat.models import AgentStatus, BotIntent, ChatSettings, Conversation, KnowledgeArticle
from chat.selectors import AGENT_GROUP_PERMISSIONS
from commerce import selectors as commerce_selectors
from commerce.models import Shopper, StoreSettings, WriteKey
from tests.support.permissions import permissions

HANDOFF = [
    "human",
    "agent",
    "operator",
    "cilvēks",
    "cilvēku",
    "operators",
    "insan",
    "temsilci",
    "canl\u0131 destek",
]


@pytest.fixture(autouse=True)
def chat_settings(db: Any) -> Iterator[ChatSettings]:
    """The merchant configuration the seed migration writes (recreated: transactional tests
    flush tables)."""
    yield chat_settings_seed()
    services.chat_settings_invalidate()


def chat_settings_seed() -> ChatSettings:
    """Write the chat configuration the tests assume (see ``chat_settings``); returns its row.
    The caller invalidates the settings cache when done."""
    row, _ = ChatSettings.objects.update_or_create(
        pk=1,
        defaults={
            "handoff_phrases": HANDOFF,
            "languages": ["en", "lv", "tr"],
            "bot_confidence_threshold": 0.55,
            "bot_max_failures": 2,
        },
    )
    StoreSettings.objects.update_or_create(pk=1, defaults={"identity_secret": "s3cret"})
    commerce_selectors.identity_secret_invalidate()
    KnowledgeArticle.objects.update_or_create(
        slug="shipping",
        language="en",
        defaults={
            "title": "Shipping and delivery",
            "question": "How long does delivery take?",
            "body": "We ship within 2 working days.",
            "keywords": ["shipping", "delivery", "deliver"],
        },
    )
    KnowledgeArticle.objects.update_or_create(
        slug="returns",
        language="en",
        defaults={
            "title": "Returns and refunds",
            "body": "You can return unused items within 30 days.",
            "keywords": ["return", "returns", "refund"],
        },
    )
    BotIntent.objects.update_or_create(
        key="order_status",
        language="en",
        defaults={
            "kind": "order_status",
            "phrases": ["where is my order", "order status", "my order"],
            "answer": "Here's what I found:\n{orders}",
        },
    )
    BotIntent.objects.update_or_create(
        key="points_balance",
        language="en",
        defaults={
            "kind": "registered",
            "phrases": ["points balance", "how many points", "my points"],
        },
    )
    services.chat_settings_invalidate()
    chat_email_campaigns_seed()
    return row


def chat_email_campaigns_seed() -> None:
    """The campaigns chat's emails go through, as migration 0004 seeds them (again after a
    transactional test flushed them; the seed skips triggers that have a campaign)."""
    from django.apps import apps

    seed = importlib.import_module("chat.migrations.0004_seed_chat_email_campaigns")
    seed.seed_campaigns(apps, None)


@pytest.fixture
def seeded(chat_settings: ChatSettings) -> ChatSettings:
    """The bot configuration migration 0013 seeds (``chat_settings`` trims some of it)."""
    seed = importlib.import_module("chat.migrations.0013_seed_bot_example_phrases")
    seed.seed(django_apps, None)
    services.chat_settings_invalidate()
    return ChatSettings.objects.get()


@pytest.fixture
def write_key(db: Any) -> WriteKey:
    return WriteKey.objects.create(name="shop")


@pytest.fixture
def shopper(db: Any) -> Shopper:
    return Shopper.objects.create(first_name="Ada", email="ada@example.com")


def agent_permission() -> Permission:
    """The agent permission, created when missing: a flush by an earlier transactional test
    (with post_migrate inhibited) may have removed what the migrations made."""
    ContentType.objects.clear_cache()  # ids from before a flush would be stale
    content_type = ContentType.objects.get_for_model(Conversation)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type,
        codename="answer_conversations",
        defaults={"name": "Can answer live chat conversations (agent)"},
    )
    return permission


def make_agent(username: str, *, capacity: int = 5, online: bool = True, **extra: Any) -> Any:
    user = get_user_model().objects.create_user(
        username=username, is_staff=True, first_name=username.title(), **extra
    )
    # What the "Agents" group holds (chat migration 0009).
    user.user_permissions.add(agent_permission(), *permissions(*AGENT_GROUP_PERMISSIONS[1:]))
    user = get_user_model().objects.get(pk=user.pk)  # drop the permission cache
    AgentStatus.objects.create(
        user=user,
        capacity=capacity,
        status=AgentStatus.Status.ONLINE if online else AgentStatus.Status.OFFLINE,
        last_seen_at=timezone.now() if online else None,
    )
    if online:
        # One live console connection, as an open console's heartbeat records it.
        presence.presence_beat(user_id=user.pk, connection_id=FIXTURE_CONNECTION)
    return user


# The connection id of the consoles ``make_agent(online=True)`` pretends are open.
FIXTURE_CONNECTION = "fixture"


def _server_connections() -> int:
    """Live console connections of real sockets (not ``make_agent``'s pretend ones)."""
    presence.live_connections()  # prunes connections whose heartbeat aged out
    suffix = b":" + FIXTURE_CONNECTION.encode()
    return len([member for member in presence.members() if not member.endswith(suffix)])


def _server_idle() -> bool:
    """Every console the tests opened has been seen closing by the server, or no server is
    connected to the test database any more (a test that stopped its own)."""
    if not _server_connections():
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        (others,) = cursor.fetchone()
    return bool(others == 0)


@pytest.fixture
def consoles_disconnected(transactional_db: None) -> Iterator[None]:
    """System tests: after the test, wait until the server has handled every console's
    disconnect (``services.agent_disconnect``), before the database is flushed.

    The disconnect's transaction locks ``chat_agentstatus`` and then reads
    ``chat_conversation``; the flush (TRUNCATE of every table) that pytest-django runs after a
    transactional test takes its locks the other way round. Flushing while a disconnect was in
    flight deadlocked: PostgreSQL killed the flush, the rows stayed, and the next test saw
    another test's conversations. Tests create their agents offline (no connections), so a
    live connection (``chat.presence``) left is a console close the server has not handled yet.
    """
    yield
    deadline = time.monotonic() + 15
    while not _server_idle():
        if time.monotonic() > deadline:
            pytest.fail("the server did not handle a console's disconnect within 15 s")
        time.sleep(0.05)
