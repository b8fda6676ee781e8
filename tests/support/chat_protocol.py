"""What the chat protocol conformance suite (tests/system/test_chat_protocol_*.py) shares.

Frames are named ``<socket><direction><type>``: ``shopper>hello`` is a client frame of
``/ws/chat/``, ``console<inbox.snapshot`` a server frame of ``/ws/console/``. Each test says
which frames it exercises with ``@covers(...)``; ``test_every_documented_frame_has_a_test``
reads docs/chat-protocol.md and fails for a documented frame no test covers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.test import Client

from commerce.models import WriteKey
from tests.chat.wsclient import ChatClient

DOC = Path(__file__).resolve().parents[2] / "docs" / "chat-protocol.md"

F = TypeVar("F", bound=Callable[..., Any])


def covers(*frames: str) -> Callable[[F], F]:
    """Record on the test which protocol frames it exercises through a real socket."""

    def mark(test: F) -> F:
        test.protocol_frames = frozenset(frames)  # type: ignore[attr-defined]  # read by the coverage test
        return test

    return mark


def covered_frames(*modules: Any) -> set[str]:
    return {
        frame
        for module in modules
        for name, test in vars(module).items()
        if name.startswith("test_")
        for frame in getattr(test, "protocol_frames", ())
    }


_BOLD = re.compile(r"\*\*([a-z]+(?:\.[a-z]+)*)\*\*")
_CODE = re.compile(r"`([a-z]+(?:\.[a-z]+)*)`")


def documented_frames(text: str | None = None) -> set[str]:
    """Every frame type docs/chat-protocol.md lists for each socket and direction.

    Shopper socket (section 2) and console server frames (section 3): the bold names that open
    a line under "Client → server" / "Server → client". Console client frames: the first
    column of section 3's table, and its "answer" column's frame names as server frames.
    """
    text = DOC.read_text() if text is None else text
    frames: set[str] = set()
    socket = direction = ""
    for line in text.splitlines():
        if line.startswith("## "):
            socket = {"## 2.": "shopper", "## 3.": "console"}.get(line[:5], "")
            direction = ""
        elif line.startswith("### "):
            direction = {"### Client → server": ">", "### Server → client": "<"}.get(
                line.strip(), ""
            )
        elif not socket or not direction:
            continue
        elif line.startswith("**"):
            frames.update(f"{socket}{direction}{name}" for name in _BOLD.findall(line))
        elif line.startswith("| `") and direction == ">":
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            frames.update(f"{socket}>{name}" for name in _CODE.findall(cells[0]))
            for answer in cells[-1].split(";"):
                if "shopper gets" not in answer:  # "the shopper gets `csat.request`"
                    frames.update(f"{socket}<{name}" for name in _CODE.findall(answer))
    return frames


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def shopper_socket(
    server: str, key: WriteKey, **hello: Any
) -> tuple[ChatClient, dict[str, Any]]:
    """A shopper socket after its ``hello``, and the ``welcome`` (the next frame)."""
    client = await ChatClient(server, "/ws/chat/").connect()
    await client.send({"type": "hello", "write_key": key.key, **hello})
    welcome = await client.recv()
    assert welcome["type"] == "welcome", welcome
    return client, welcome


async def console_socket(server: str, cookie: str) -> tuple[ChatClient, list[dict[str, Any]]]:
    """A console socket and its greeting (``inbox.snapshot``, ``canned.list``, its own
    ``presence``), in the order they came."""
    client = await ChatClient(server, "/ws/console/", cookie=cookie).connect()
    greeting = [await client.recv() for _ in range(3)]
    return client, greeting


async def hand_off_assigned(shopper: ChatClient, console: ChatClient) -> int:
    """Ask for a human on ``shopper`` and wait until the conversation is assigned: the shopper
    gets the ``assigned`` state and ``console`` (the only online agent's) its ``assignment``.
    Returns the conversation id; other frames stay in the clients' backlogs."""
    await shopper.send({"type": "handoff.request"})
    state = await shopper.expect("conversation.state", conversation__state="assigned")
    conversation_id: int = state["conversation"]["id"]
    await console.expect("assignment", conversation_id=conversation_id)
    return conversation_id


# The keys of a conversation summary (inbox rows, inbox.update, conversation.opened): one
# list for the HTTP API's tests and the socket suite's.
SUMMARY_KEYS = {
    "id",
    "state",
    "channel",
    "shopper",
    "assigned_agent",
    "last_seq",
    "last_message",
    "queued_at",
    "created_at",
    "updated_at",
    "page_url",
    "language",
    "labels",
    "snoozed",
    "snoozed_until",
}
