"""An agent who loses their rights is disconnected from the console within seconds.

Real uvicorn process, real WebSocket clients; the change is made in the database as the admin,
a management command or any other process would make it (no signal, no message to the server),
and the console must close with 4003 within the re-check interval plus scheduling slack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.test import Client
from websockets.exceptions import ConnectionClosed

from chat import presence
from chat.models import AgentStatus
from chat.selectors import AGENT_GROUP_PERMISSIONS
from tests.chat.wsclient import ChatClient
from tests.support.processes import asgi_server_fixture
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM

RECHECK_SECONDS = 1
# The interval, plus a round that may just have started, plus slack for a loaded machine.
CLOSE_BOUND_SECONDS = 2 * RECHECK_SECONDS + 3


server = asgi_server_fixture(PATRON_AGENT_RECHECK_SECONDS=str(RECHECK_SECONDS))


def agents_group() -> Group:
    """The Agents group as chat's migrations make it (again: transactional tests flush)."""
    for label in ("chat", "commerce"):
        create_permissions(apps.get_app_config(label), verbosity=0)
    group, _ = Group.objects.get_or_create(name="Agents")
    for name in AGENT_GROUP_PERMISSIONS:
        app_label, codename = name.split(".")
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return group


def make_group_agent(username: str) -> Any:
    user = get_user_model().objects.create_user(username=username, is_staff=True)
    user.groups.add(agents_group())
    AgentStatus.objects.create(user=user, status=AgentStatus.Status.OFFLINE)
    return user


async def open_console(server: str, user: Any) -> ChatClient:
    client = Client()
    await asyncio.to_thread(client.force_login, user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    console = await ChatClient(server, "/ws/console/", cookie=cookie).connect()
    await console.expect("inbox.snapshot")
    await console.expect("canned.list")
    return console


async def seconds_until_closed(console: ChatClient, limit: float) -> tuple[float, int | None]:
    """Read frames until the server closes; (seconds it took, close code)."""
    assert console.ws is not None
    started = time.monotonic()
    try:
        while time.monotonic() - started < limit:
            await asyncio.wait_for(console.ws.recv(), limit)
    except (ConnectionClosed, TimeoutError):
        pass
    return time.monotonic() - started, console.ws.close_code


def _deactivate(user: Any) -> None:
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)


def _remove_from_group(user: Any) -> None:
    user.groups.remove(Group.objects.get(name="Agents"))


def _delete(user: Any) -> None:
    get_user_model().objects.filter(pk=user.pk).delete()


@pytest.mark.parametrize(
    "withdraw",
    [_deactivate, _remove_from_group, _delete],
    ids=["deactivated", "removed_from_agents", "deleted"],
)
def test_an_agent_who_loses_their_rights_is_disconnected_within_seconds(
    server: str, withdraw: Callable[[Any], None]
) -> None:
    user = make_group_agent("ana")

    async def scenario() -> tuple[float, int | None]:
        console = await open_console(server, user)
        # Still an agent: the console keeps working past several re-checks.
        await asyncio.sleep(2.5 * RECHECK_SECONDS)
        await console.send({"type": "ping"})
        await console.expect("pong")
        await asyncio.to_thread(withdraw, user)
        return await seconds_until_closed(console, limit=CLOSE_BOUND_SECONDS + 5)

    elapsed, code = asyncio.run(scenario())

    assert code == 4003
    assert elapsed < CLOSE_BOUND_SECONDS, f"closed after {elapsed:.1f} s"
    # The console's disconnect bookkeeping runs too: the agent is no longer counted online.
    deadline = time.monotonic() + 10
    while presence.live_connections().get(user.pk):
        assert time.monotonic() < deadline, "the closed console is still counted"
        time.sleep(0.05)


def test_a_colleague_keeps_their_console_when_another_agent_is_removed(server: str) -> None:
    staying = make_group_agent("bea")
    leaving = make_group_agent("cem")

    async def scenario() -> None:
        kept = await open_console(server, staying)
        gone = await open_console(server, leaving)
        await asyncio.to_thread(_deactivate, leaving)
        _, code = await seconds_until_closed(gone, limit=CLOSE_BOUND_SECONDS + 5)
        assert code == 4003
        await kept.send({"type": "ping"})
        await kept.expect("pong")
        assert kept.ws is not None
        assert kept.ws.close_code is None
        await kept.ws.close()

    asyncio.run(scenario())


def test_the_console_socket_shows_personal_data_only_for_the_agents_own_conversations(
    server: str,
) -> None:
    """The socket's inbox and opened conversation follow the API's rule: a colleague's
    conversation shows no name or email to an agent without
    ``commerce.view_shopper_personal_data``."""
    from chat.models import Conversation
    from commerce.models import Shopper

    colleague = make_group_agent("eve")
    shopper = Shopper.objects.create(first_name="Ada", email="ada@example.com")
    conversation = Conversation.objects.create(
        shopper=shopper, state=Conversation.State.ASSIGNED, assigned_agent=colleague
    )
    agent = make_group_agent("dan")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        console = await open_console(server, agent)
        await console.send({"type": "inbox.query", "view": "all"})
        snapshot = await console.expect("inbox.snapshot", view="all")
        await console.send({"type": "conversation.open", "conversation_id": conversation.pk})
        opened = await console.expect("conversation.opened")
        assert console.ws is not None
        await console.ws.close()
        return snapshot, opened

    snapshot, opened = asyncio.run(scenario())

    assert [
        (c["id"], c["shopper"]["name"], c["shopper"]["email"]) for c in snapshot["conversations"]
    ] == [(conversation.pk, "", "")]
    shopper_brief = opened["conversation"]["shopper"]
    assert (shopper_brief["name"], shopper_brief["email"]) == ("", "")
    profile = next(s["data"] for s in opened["context"] if s["key"] == "profile")
    assert (profile["name"], profile["email"]) == ("", "")
    assert opened["conversation"]["assigned_agent"]["id"] == colleague.pk
