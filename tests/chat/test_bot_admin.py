"""The bot's admin: intents edited with one example phrase a line, and the "test a phrase" page
showing the intent, its score and the runner-up."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from chat import bot
from chat.models import BotIntent, ChatSettings

pytestmark = pytest.mark.django_db


@pytest.fixture
def merchant() -> Client:
    user = get_user_model().objects.create_superuser("owner", "owner@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_the_intent_list_links_to_the_test_page(seeded: ChatSettings, merchant: Client):
    response = merchant.get(reverse("admin:chat_botintent_changelist"))

    assert response.status_code == 200
    assert reverse("admin:chat_botintent_test") in response.content.decode()


def test_testing_a_phrase_shows_the_intent_score_and_runner_up(
    seeded: ChatSettings, merchant: Client
):
    count_before = BotIntent.objects.count()

    response = merchant.post(reverse("admin:chat_botintent_test"), {"text": "siparisim nerde"})

    assert response.status_code == 200
    result = response.context["result"]
    expected = bot.bot_understand(text="siparisim nerde", settings_row=ChatSettings.objects.get())
    assert result == expected
    assert (result.label, result.best.intent, result.language) == (
        "order_status",
        "order_status",
        "tr",
    )
    assert result.runner_up is not None
    assert result.best.score > result.runner_up.score
    html = response.content.decode()
    assert '<td id="bot-test-intent">order_status</td>' in html
    assert f'<td id="bot-test-score">{result.best.score:.3f}</td>' in html
    assert (
        f'<td id="bot-test-runner-up">{result.runner_up.intent} ({result.runner_up.score:.3f})'
        in html
    )
    assert BotIntent.objects.count() == count_before  # testing changes nothing


def test_the_test_page_needs_the_permission_to_view_intents(seeded: ChatSettings):
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)

    denied = client.post(reverse("admin:chat_botintent_test"), {"text": "hello"})

    assert denied.status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_botintent"))
    allowed = client.post(reverse("admin:chat_botintent_test"), {"text": "hello"})
    assert allowed.status_code == 200
    assert allowed.context["result"].label == "greeting"


def test_phrases_are_saved_one_a_line_and_the_bot_learns_them(
    seeded: ChatSettings, merchant: Client
):
    assert bot.bot_understand(text="do you do gift wrap?", settings_row=seeded).label == "none"

    response = merchant.post(
        reverse("admin:chat_botintent_add"),
        {
            "key": "gift_wrap",
            "language": "en",
            "kind": "answer",
            "phrases": "gift wrapping\r\n  can you wrap it as a present \r\n\r\ngift wrap\r\n",
            "answer": "Yes, choose gift wrap at checkout.",
            "active": "on",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    intent = BotIntent.objects.get(key="gift_wrap")
    assert intent.phrases == ["gift wrapping", "can you wrap it as a present", "gift wrap"]
    assert bot.bot_understand(text="do you do gift wrap?", settings_row=seeded).label == (
        "gift_wrap"
    )
    edit = merchant.get(reverse("admin:chat_botintent_change", args=[intent.pk]))
    assert "gift wrapping\ncan you wrap it as a present\ngift wrap</textarea>" in (
        edit.content.decode()
    )
