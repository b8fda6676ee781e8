from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from chat import services
from chat.models import AgentStatus, BotIntent, ChatSettings, KnowledgeArticle
from commerce.models import Shopper, WriteKey

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
    row, _ = ChatSettings.objects.update_or_create(
        pk=1,
        defaults={
            "handoff_phrases": HANDOFF,
            "languages": ["en", "lv", "tr"],
            "identity_secret": "s3cret",
            "bot_confidence_threshold": 0.55,
            "bot_max_failures": 2,
        },
    )
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
    yield row
    services.chat_settings_invalidate()


@pytest.fixture
def write_key(db: Any) -> WriteKey:
    return WriteKey.objects.create(name="shop")


@pytest.fixture
def shopper(db: Any) -> Shopper:
    return Shopper.objects.create(first_name="Ada", email="ada@example.com")


def make_agent(username: str, *, capacity: int = 5, online: bool = True, **extra: Any) -> Any:
    user = get_user_model().objects.create_user(
        username=username, password="pw", is_staff=True, first_name=username.title(), **extra
    )
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="chat", codename="answer_conversations")
    )
    user = get_user_model().objects.get(pk=user.pk)  # drop the permission cache
    AgentStatus.objects.create(
        user=user,
        capacity=capacity,
        status=AgentStatus.Status.ONLINE if online else AgentStatus.Status.OFFLINE,
        connections=1 if online else 0,
        last_seen_at=timezone.now() if online else None,
    )
    return user
