"""The console API by Django permissions: what the Agents group gets, and personal data.

An agent sees the shopper's name, email and phone in the conversations assigned to them; the
queue and colleagues' conversations show them only to holders of
``commerce.view_shopper_personal_data``. Metrics need ``chat.view_chat_metrics``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat import services
from chat.models import Conversation
from commerce.models import Shopper
from tests.chat.conftest import make_agent
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def queued() -> Conversation:
    shopper = Shopper.objects.create(
        first_name="Ada", last_name="Lovelace", email="ada@example.com", phone="+371 2000 0000"
    )
    cid = services.shopper_message_post(shopper=shopper, body="hi", client_id="s1").conversation_id
    Conversation.objects.filter(pk=cid).update(state=Conversation.State.QUEUED)
    return Conversation.objects.get(pk=cid)


def _profile(client: Client, cid: int) -> dict[str, Any]:
    sections = client.get(f"/api/chat/conversations/{cid}/context/").json()
    return next(s["data"] for s in sections if s["key"] == "profile")


def _brief(client: Client, query: str = "") -> list[dict[str, Any]]:
    return [
        row["shopper"]
        for row in client.get(f"/api/chat/conversations/?view=all{query}").json()["results"]
    ]


def test_an_agent_sees_personal_data_only_in_conversations_assigned_to_them(queued):
    anna, ben = make_agent("anna"), make_agent("ben")
    as_anna = logged_in(anna)

    before = (_profile(as_anna, queued.pk), _brief(as_anna))
    Conversation.objects.filter(pk=queued.pk).update(
        state=Conversation.State.ASSIGNED, assigned_agent=anna
    )
    mine = (_profile(as_anna, queued.pk), _brief(as_anna))
    colleague = (_profile(logged_in(ben), queued.pk), _brief(logged_in(ben)))

    blank = {"name": "", "email": "", "phone": ""}
    shown = {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+371 2000 0000"}
    assert {k: before[0][k] for k in blank} == blank
    assert [(b["name"], b["email"]) for b in before[1]] == [("", "")]
    assert {k: mine[0][k] for k in shown} == shown
    assert [(b["name"], b["email"]) for b in mine[1]] == [("Ada Lovelace", "ada@example.com")]
    assert {k: colleague[0][k] for k in blank} == blank
    assert [(b["name"], b["email"]) for b in colleague[1]] == [("", "")]
    # Non-personal parts of the panel stay.
    assert before[0]["orders_count"] == 0


def test_the_personal_data_permission_shows_every_shopper_and_allows_searching_them(queued):
    supervisor = logged_in(grant(make_agent("sue"), "commerce.view_shopper_personal_data"))
    agent = logged_in(make_agent("anna"))

    assert _profile(supervisor, queued.pk)["email"] == "ada@example.com"
    assert [b["email"] for b in _brief(supervisor, "&q=lovelace")] == ["ada@example.com"]
    # Without it, a name or email search cannot find other shoppers' conversations.
    assert _brief(agent, "&q=lovelace") == []
    assert _brief(agent, "&q=ada%40example") == []


def test_the_agents_group_gets_the_console_but_not_metrics(queued):
    agent = logged_in(make_agent("anna"))
    manager = logged_in(grant(make_agent("max"), "chat.view_chat_metrics"))

    console = [
        agent.get(path).status_code
        for path in (
            "/api/chat/conversations/",
            f"/api/chat/conversations/{queued.pk}/messages/",
            f"/api/chat/conversations/{queued.pk}/context/",
            "/api/chat/canned-responses/",
            "/api/chat/agents/",
        )
    ]

    assert console == [200] * 5
    assert agent.get("/api/chat/metrics/").status_code == 403
    assert manager.get("/api/chat/metrics/").status_code == 200


def test_the_agent_permission_alone_no_longer_opens_the_console_api(queued):
    from django.contrib.auth import get_user_model

    from tests.chat.conftest import agent_permission

    user = get_user_model().objects.create_user(username="old", is_staff=True)
    user.user_permissions.add(agent_permission())

    client = logged_in(user)

    assert client.get(f"/api/chat/conversations/{queued.pk}/messages/").status_code == 403
    assert client.get("/api/chat/canned-responses/").status_code == 403
