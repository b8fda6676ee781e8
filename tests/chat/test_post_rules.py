"""Who may post a chat message where: one table, every path that stores a message.

Each row is a message (its author, the conversation's state, holder and channel, a resend of a
stored client id) and what must come of it. Every row runs through the one-message path
(``message_post_one``, which ``message_post`` and so the services, the bot and system messages
use) and through the batch path (``message_post_many``, the sockets' group commit: the SQL
function with several rows), and a representative subset through real sockets (a real uvicorn,
its writer, real ``websockets`` clients). The rules themselves are chat/services/post_rules.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from chat import services
from chat.models import Conversation, Message
from commerce.models import Shopper, WriteKey
from core.exceptions import ApplicationError, Conflict, NotFound, PermissionDenied, ValidationError
from tests.chat.conftest import consoles_disconnected, make_agent  # noqa: F401  (a fixture)
from tests.chat.wsclient import ChatClient
from tests.support.processes import asgi_server

State = Conversation.State
Channel = Conversation.Channel
Author = Message.Author

STORED, RESENT = "stored", "resent"
ERRORS: dict[str, type[ApplicationError]] = {
    "conflict": Conflict,
    "forbidden": PermissionDenied,
    "not_found": NotFound,
    "invalid": ValidationError,
}


@dataclass(frozen=True)
class World:
    ada: Shopper  # the conversation's shopper
    eve: Shopper  # another shopper
    ann: Any  # the agent who writes
    ben: Any  # another agent


# Who writes: the arguments of ``post_request`` besides the conversation, body and client id.
AUTHORS: dict[str, Callable[[World], dict[str, Any]]] = {
    "shopper": lambda w: {"author_kind": Author.SHOPPER, "shopper_id": w.ada.pk},
    "stranger": lambda w: {"author_kind": Author.SHOPPER, "shopper_id": w.eve.pk},
    "shopper note": lambda w: {"author_kind": Author.SHOPPER, "internal": True},
    "bot": lambda w: {"author_kind": Author.BOT, "intent": "shipping"},
    "system": lambda w: {"author_kind": Author.SYSTEM},
    "agent": lambda w: {"author_kind": Author.AGENT, "agent": w.ann},
    "agent, writer": lambda w: {"author_kind": Author.AGENT, "agent": w.ann, "writer": True},
    "note": lambda w: {"author_kind": Author.AGENT, "agent": w.ann, "internal": True},
    "note, writer": lambda w: {
        "author_kind": Author.AGENT,
        "agent": w.ann,
        "internal": True,
        "writer": True,
    },
}


@dataclass(frozen=True)
class Row:
    author: str
    state: str
    expected: str  # STORED, RESENT or a key of ERRORS
    holder: str | None = None  # "ann" (who writes, for agents) or "ben"
    channel: str = Channel.CHAT
    resend: bool = False  # the client id is already stored in the conversation
    missing: bool = False  # no such conversation
    socket: bool = False  # also through a real socket

    @property
    def id(self) -> str:
        parts = [self.author, "missing" if self.missing else self.state]
        if self.holder:
            parts.append(f"held by {self.holder}")
        if self.channel != Channel.CHAT:
            parts.append(self.channel)
        if self.resend:
            parts.append("resend")
        return ", ".join(parts) + " -> " + self.expected


TABLE = [
    # Shoppers: their own conversation, while it is open; a resend whatever the state.
    Row("shopper", State.BOT, STORED),
    Row("shopper", State.QUEUED, STORED, socket=True),
    Row("shopper", State.ASSIGNED, STORED, holder="ann", socket=True),
    Row("shopper", State.QUEUED, STORED, channel=Channel.EMAIL),
    Row("shopper", State.RESOLVED, "conflict"),
    Row("shopper", State.ASSIGNED, RESENT, holder="ann", resend=True, socket=True),
    Row("shopper", State.RESOLVED, RESENT, resend=True),
    Row("shopper", State.BOT, "not_found", missing=True),
    # Another shopper: refused before anything is read, a stored client id included.
    Row("stranger", State.BOT, "forbidden"),
    Row("stranger", State.RESOLVED, "forbidden"),
    Row("stranger", State.ASSIGNED, "forbidden", holder="ann", resend=True),
    Row("shopper note", State.BOT, "invalid"),
    # The bot: only while the conversation is the bot's.
    Row("bot", State.BOT, STORED),
    Row("bot", State.QUEUED, "conflict"),
    Row("bot", State.ASSIGNED, "conflict", holder="ann"),
    Row("bot", State.RESOLVED, "conflict"),
    Row("bot", State.BOT, RESENT, resend=True),
    Row("bot", State.QUEUED, RESENT, resend=True),
    # System messages: in every state.
    Row("system", State.BOT, STORED),
    Row("system", State.QUEUED, STORED),
    Row("system", State.ASSIGNED, STORED, holder="ben"),
    Row("system", State.RESOLVED, STORED),
    Row("system", State.RESOLVED, RESENT, resend=True),
    # Agents, one message at a time: any open conversation (agent_message_post assigns first).
    Row("agent", State.BOT, STORED),
    Row("agent", State.QUEUED, STORED),
    Row("agent", State.ASSIGNED, STORED, holder="ann"),
    Row("agent", State.ASSIGNED, STORED, holder="ben"),
    Row("agent", State.ASSIGNED, STORED, holder="ann", channel=Channel.EMAIL),
    Row("agent", State.RESOLVED, "conflict", holder="ann"),
    Row("agent", State.BOT, "not_found", missing=True),
    # Agents through the sockets' writer: only a live chat they hold; the rest is Conflict, which
    # the socket then posts through agent_message_post.
    Row("agent, writer", State.ASSIGNED, STORED, holder="ann", socket=True),
    Row("agent, writer", State.ASSIGNED, "conflict", holder="ben"),
    Row("agent, writer", State.ASSIGNED, "conflict", holder="ann", channel=Channel.EMAIL),
    Row("agent, writer", State.QUEUED, "conflict"),
    Row("agent, writer", State.BOT, "conflict"),
    Row("agent, writer", State.RESOLVED, "conflict", holder="ann", socket=True),
    Row("agent, writer", State.ASSIGNED, RESENT, holder="ben", resend=True, socket=True),
    Row("agent, writer", State.RESOLVED, RESENT, holder="ann", resend=True),
    Row("agent, writer", State.ASSIGNED, "not_found", holder="ann", missing=True),
    # Notes: agents only, in any open conversation, whoever holds it, on either path.
    Row("note", State.BOT, STORED),
    Row("note", State.ASSIGNED, STORED, holder="ben"),
    Row("note", State.RESOLVED, "conflict"),
    Row("note, writer", State.QUEUED, STORED),
    Row("note, writer", State.ASSIGNED, STORED, holder="ben", socket=True),
    Row("note, writer", State.ASSIGNED, STORED, holder="ann", channel=Channel.EMAIL),
    Row("note, writer", State.RESOLVED, "conflict", socket=True),
]
ROWS = [pytest.param(row, id=row.id) for row in TABLE]
SOCKET_ROWS = [pytest.param(row, id=row.id) for row in TABLE if row.socket]
BATCH_ROWS = [row for row in TABLE if row.expected != "invalid"]


def the_world() -> World:
    return World(
        ada=Shopper.objects.create(first_name="Ada", email="ada@example.com"),
        eve=Shopper.objects.create(first_name="Eve"),
        ann=make_agent("ann"),
        ben=make_agent("ben"),
    )


@dataclass(frozen=True)
class Given:
    """A row's conversation as the test set it up, and the message it asks to store."""

    row: Row
    conversation_id: int
    last_seq: int
    earlier: Message | None  # the message stored under the same client id (a resend)
    kwargs: dict[str, Any]

    def request(self) -> services.PostRequest:
        return services.post_request(**self.kwargs)


def given(row: Row, world: World, *, index: int = 0) -> Given:
    now = timezone.now()
    holder = {"ann": world.ann, "ben": world.ben, None: None}[row.holder]
    conversation = Conversation.objects.create(
        shopper=world.ada,
        state=row.state,
        channel=row.channel,
        assigned_agent=holder,
        assigned_at=now if holder else None,
        follow_up_email="ada@example.com" if row.channel == Channel.EMAIL else "",
        created_at=now,
        updated_at=now,
    )
    client_id = f"c{index}"
    earlier = None
    if row.resend:
        earlier = Message.objects.create(
            conversation=conversation,
            seq=1,
            author_kind=AUTHORS[row.author](world)["author_kind"],
            body="the first time",
            client_id=client_id,
            created_at=now,
        )
        Conversation.objects.filter(pk=conversation.pk).update(last_seq=1)
    cid = conversation.pk + 1_000_000 if row.missing else conversation.pk
    kwargs = {
        "conversation_id": cid,
        "body": f"row {index}",
        "client_id": client_id,
        **AUTHORS[row.author](world),
    }
    return Given(
        row=row,
        conversation_id=conversation.pk,
        last_seq=1 if row.resend else 0,
        earlier=earlier,
        kwargs=kwargs,
    )


def check(case: Given, outcome: services.PostedMessage | BaseException) -> None:
    """``outcome`` is what the row expects, and the database holds exactly that."""
    row = case.row
    if row.expected in ERRORS:
        error = ERRORS[row.expected]
        assert isinstance(outcome, error), outcome
        assert type(outcome) is error
        if isinstance(outcome, Conflict):
            assert outcome.extra == {"state": row.state}
    else:
        assert isinstance(outcome, services.PostedMessage), outcome
    check_stored(case, outcome if isinstance(outcome, services.PostedMessage) else None)


def check_stored(case: Given, outcome: services.PostedMessage | None) -> None:
    """The database holds what the row expects; ``outcome``, the message a post answered."""
    row = case.row
    stored = list(
        Message.objects.filter(conversation_id=case.conversation_id)
        .order_by("seq")
        .values_list("seq", "body", "author_kind", "internal", "author_agent_id")
    )
    conversation = Conversation.objects.get(pk=case.conversation_id)
    kwargs = case.kwargs
    if row.expected == STORED:
        assert isinstance(outcome, services.PostedMessage), outcome
        assert outcome.created
        assert outcome.state == row.state
        seq = case.last_seq + 1
        assert (outcome.message["seq"], outcome.message["body"]) == (seq, kwargs["body"])
        agent = kwargs.get("agent")
        assert stored[-1] == (
            seq,
            kwargs["body"],
            kwargs["author_kind"],
            kwargs.get("internal", False),
            agent.pk if agent is not None else None,
        )
        assert len(stored) == seq
        assert conversation.last_seq == seq
        public_reply = kwargs["author_kind"] == Author.AGENT and not kwargs.get("internal")
        assert (conversation.first_agent_response_at is not None) is public_reply
        return
    # Nothing stored, nothing counted.
    assert len(stored) == case.last_seq
    assert conversation.last_seq == case.last_seq
    assert conversation.first_agent_response_at is None
    if row.expected == RESENT:
        assert isinstance(outcome, services.PostedMessage), outcome
        assert not outcome.created
        assert case.earlier is not None
        assert (outcome.message["id"], outcome.message["body"]) == (
            case.earlier.pk,
            "the first time",
        )
        return
    assert outcome is None


def one_message_path(case: Given) -> services.PostedMessage | BaseException:
    try:
        return services.message_post_one(case.request())
    except ApplicationError as exc:
        return exc


def batch_path(case: Given, world: World) -> services.PostedMessage | BaseException:
    """The row's message in a batch between two others (one statement), as the writer does."""
    try:
        request = case.request()
    except ApplicationError as exc:
        return exc
    before, after = (
        given(Row("shopper", State.ASSIGNED, STORED, holder="ann"), world, index=n)
        for n in (90, 91)
    )
    outcomes = services.message_post_many([before.request(), request, after.request()])
    check(before, outcomes[0])
    check(after, outcomes[2])
    return outcomes[1]


@pytest.mark.django_db
@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("path", ["message_post", "batch"])
def test_a_message_comes_to_the_same_on_every_path(row: Row, path: str) -> None:
    world = the_world()
    case = given(row, world)

    outcome = one_message_path(case) if path == "message_post" else batch_path(case, world)

    check(case, outcome)


@pytest.mark.django_db
def test_the_whole_table_in_one_batch() -> None:
    """Every row at once, in one statement: each message still gets its own row's outcome."""
    world = the_world()
    cases = [given(row, world, index=n) for n, row in enumerate(BATCH_ROWS)]

    outcomes = services.message_post_many([case.request() for case in cases])

    for case, outcome in zip(cases, outcomes, strict=True):
        check(case, outcome)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["message_post", "batch"])
def test_a_shopper_who_sends_an_agents_note_client_id_is_refused_without_the_note(
    path: str,
) -> None:
    """A resend returns the stored message only to the kind of author who wrote it: the
    conversation is the shopper's, but the agent's note under that client id is not."""
    world = the_world()
    conversation = Conversation.objects.create(
        shopper=world.ada, state=State.ASSIGNED, assigned_agent=world.ann
    )
    services.message_post(
        conversation_id=conversation.pk,
        author_kind=Author.AGENT,
        agent=world.ann,
        body="Private: refund without asking",
        internal=True,
        client_id="note-1",
    )
    request = services.post_request(
        conversation_id=conversation.pk,
        author_kind=Author.SHOPPER,
        shopper_id=world.ada.pk,
        body="hello",
        client_id="note-1",
    )

    if path == "message_post":
        with pytest.raises(Conflict) as refused:
            services.message_post_one(request)
        error: object = refused.value
    else:
        (error,) = services.message_post_many([request])

    assert isinstance(error, Conflict)
    assert "Private" not in str(error.message)
    assert list(conversation.messages.values_list("body", flat=True)) == [
        "Private: refund without asking"
    ]


@pytest.mark.django_db
def test_the_database_runs_the_versioned_function() -> None:
    """The function migrations installed is the newest file in chat/sql/."""
    files = sorted(
        (Path(services.__file__).parent.parent / "sql").glob("chat_messages_post_v*.sql"),
        key=lambda path: int(re.findall(r"_v(\d+)\.sql$", path.name)[0]),
    )
    body = files[-1].read_text(encoding="utf-8").split("$$")[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'chat_messages_post'")
        (installed,) = cursor.fetchone()

    assert installed.strip() == body.strip()


# --- Through real sockets --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with asgi_server() as url:
        yield url


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def socket_post(server: str, case: Given, credentials: dict[str, str]) -> dict[str, Any]:
    """Send the row's message as its socket would, and return the answer (ack or error)."""
    kwargs = case.kwargs
    frame: dict[str, Any] = {
        "type": "message.send",
        "client_id": kwargs["client_id"],
        "body": kwargs["body"],
    }
    if kwargs["author_kind"] == Author.SHOPPER:
        client = await ChatClient(server, "/ws/chat/").connect()
        hello = {"type": "hello", **credentials, **_resume(case)}
        await client.send(hello)
        await client.expect("welcome")
    else:
        client = await ChatClient(server, "/ws/console/", cookie=credentials["cookie"]).connect()
        await client.expect("canned.list")
        cid = case.conversation_id
        await client.send({"type": "conversation.open", "conversation_id": cid, "ref": "open"})
        await client.expect("conversation.opened", ref="open")
        frame.update(conversation_id=cid, internal=kwargs.get("internal", False))
    try:
        await client.send({**frame, "ref": "post"})
        while True:
            answer = await client.recv()
            if answer["type"] in ("message.ack", "error") and answer.get("ref") == "post":
                return answer
    finally:
        await client.close()


def _resume(case: Given) -> dict[str, Any]:
    return {"conversation_id": case.conversation_id, "last_seq": case.last_seq}


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("consoles_disconnected")
@pytest.mark.parametrize("row", SOCKET_ROWS)
def test_a_socket_gets_the_same(row: Row, server: str) -> None:
    world = World(
        ada=Shopper.objects.create(first_name="Ada", email="ada@example.com"),
        eve=Shopper.objects.create(first_name="Eve"),
        ann=make_agent("ann", online=False),
        ben=make_agent("ben", online=False),
    )
    case = given(row, world)
    if row.author == "shopper":
        credentials = {
            "write_key": WriteKey.objects.create(name="shop").key,
            "token": services.shopper_token_issue(shopper_id=world.ada.pk),
        }
    else:
        credentials = {"cookie": session_cookie(world.ann)}

    answer = asyncio.run(socket_post(server, case, credentials))

    if row.expected in (STORED, RESENT):
        assert answer["type"] == "message.ack", answer
        state = Conversation.objects.get(pk=case.conversation_id).state
        posted = services.PostedMessage(
            message=answer["message"], created=row.expected == STORED, state=state
        )
        check_stored(case, posted)
    else:
        assert answer["type"] == "error", answer
        assert answer["code"] == ERRORS[row.expected].code
        check_stored(case, None)
