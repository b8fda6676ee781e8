"""Messages: cleaning, storing (one or a batch), rejection rules and their real-time follow-ups."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext

from chat import selectors
from chat.models import Conversation, Message
from chat.services._common import (
    CLIENT_ID_RE,
    CONSOLE_GROUP,
    MAX_BODY,
    Author,
    State,
    conversation_group,
    staff_group,
)
from chat.services.language import conversation_language, translate
from chat.services.transcripts import follow_up_email_fire
from core.channel_layer import group_send_sync
from core.exceptions import Conflict, NotFound, PermissionDenied, ValidationError

# --- Messages --------------------------------------------------------------------------------


def clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ValidationError("body must be text")
    text = body.strip()
    if not text:
        raise ValidationError(gettext("body must not be empty"))
    if len(text) > MAX_BODY:
        raise ValidationError(
            gettext("body must be at most %(max)s characters") % {"max": MAX_BODY}
        )
    return text


def clean_client_id(client_id: Any) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise ValidationError("client_id must be 1-64 letters, digits, '-' or '_'")
    return client_id


@dataclass(frozen=True)
class PostedMessage:
    message: dict[str, Any]
    created: bool
    state: str


_STATES_FOR = {
    Author.SHOPPER: (State.BOT, State.QUEUED, State.ASSIGNED),
    Author.BOT: (State.BOT,),
    Author.AGENT: (State.BOT, State.QUEUED, State.ASSIGNED),
    Author.SYSTEM: (State.BOT, State.QUEUED, State.ASSIGNED, State.RESOLVED),
}


@dataclass(frozen=True)
class PostRequest:
    """One message to store, checked (``post_request``) but not yet stored."""

    conversation_id: int
    author_kind: str
    body: str
    agent: Any = None
    client_id: str | None = None
    internal: bool = False
    intent: str = ""
    shopper_id: int | None = None
    # Store only while the conversation is in one of these states and, with ``holder_id``,
    # assigned to that agent; else the row comes back empty and ``post_rejected`` says why.
    states: tuple[str, ...] = ()
    holder_id: int | None = None
    # With a channel, store only in a conversation on that channel (``Conversation.Channel``).
    channel: str | None = None


def post_request(
    *,
    conversation_id: int,
    author_kind: str,
    body: Any,
    agent: Any = None,
    client_id: Any = None,
    internal: bool = False,
    intent: str = "",
    shopper_id: int | None = None,
    states: tuple[str, ...] | None = None,
    holder_id: int | None = None,
    channel: str | None = None,
) -> PostRequest:
    """Check one message's fields (``ValidationError``) and make its ``PostRequest``."""
    body = clean_body(body)
    client_id = clean_client_id(client_id)
    if internal and author_kind != Author.AGENT:
        raise ValidationError("only agents write notes")
    return PostRequest(
        conversation_id=conversation_id,
        author_kind=str(author_kind),
        body=body,
        agent=agent,
        client_id=client_id,
        internal=internal,
        intent=intent,
        shopper_id=shopper_id,
        states=tuple(str(s) for s in (states or _STATES_FOR[Author(author_kind)])),
        holder_id=holder_id,
        channel=channel,
    )


# A stored message as ``chat_messages_post`` returns it: id, seq, the conversation's state and
# channel after the insert. None when the message was not stored.
StoredRow = tuple[int, int, str, str]


def messages_store(requests: Sequence[PostRequest], *, now: dt.datetime) -> list[StoredRow | None]:
    """Store ``requests`` in one statement (and, outside an atomic block, one transaction); see
    chat/migrations/0006 for what each row does. Rows come back in the requests' order.

    Callers that pass many conversations sort them by conversation id: rows are locked in the
    order given, and two batches that lock in the same order cannot deadlock.
    """
    if not requests:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r_id, r_seq, r_state, r_channel FROM chat_messages_post("
            "%s, %s::bigint[], %s::text[], %s::text[], %s::text[], %s::integer[], %s::text[], "
            "%s::boolean[], %s::text[], %s::boolean[], %s::bigint[], %s::integer[], %s::text[]) "
            "ORDER BY r_index",
            [
                now,
                [r.conversation_id for r in requests],
                [",".join(r.states) for r in requests],
                [r.client_id for r in requests],
                [r.author_kind for r in requests],
                [r.agent.pk if r.agent is not None else None for r in requests],
                [r.body for r in requests],
                [r.internal for r in requests],
                [r.intent for r in requests],
                [r.author_kind == Author.AGENT and not r.internal for r in requests],
                [r.shopper_id for r in requests],
                [r.holder_id for r in requests],
                [r.channel for r in requests],
            ],
        )
        rows = cursor.fetchall()
    return [None if row[0] is None else (row[0], row[1], row[2], row[3]) for row in rows]


def message_dict(request: PostRequest, row: StoredRow, *, now: dt.datetime) -> dict[str, Any]:
    """The ``message`` object of docs/chat-protocol.md for a message just stored."""
    agent = request.agent
    return {
        "id": row[0],
        "conversation_id": request.conversation_id,
        "seq": row[1],
        "author": {
            "kind": request.author_kind,
            "name": _author_name(request.author_kind, agent),
            "id": agent.pk if request.author_kind == Author.AGENT and agent is not None else None,
        },
        "body": request.body,
        "internal": request.internal,
        "client_id": request.client_id,
        "created_at": now.isoformat(),
    }


def message_event(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The group and channel-layer payload that carry a new message to its sockets."""
    cid = message["conversation_id"]
    group = staff_group(cid) if message["internal"] else conversation_group(cid)
    event = {"type": "message.new", "message": message}
    return group, {"type": "chat.event", "event": event, "cid": cid, "seq": message["seq"]}


def post_rejected(request: PostRequest) -> PostedMessage:
    """Why ``request`` was not stored: the message already stored under its ``client_id``
    (``created`` False), or ``PermissionDenied``, ``NotFound`` or ``Conflict``."""
    cid = request.conversation_id
    current = Conversation.objects.filter(pk=cid).values_list("shopper_id", "state").first()
    if current is None:
        raise NotFound("No such conversation.")
    owner, state = current
    if request.shopper_id is not None and owner != request.shopper_id:
        raise PermissionDenied("This conversation is not yours.", code="forbidden")
    existing = _message_by_client_id(cid, request.client_id)
    if existing is not None:
        return PostedMessage(message=selectors.message_dict(existing), created=False, state=state)
    raise Conflict(
        f"A {request.author_kind} message cannot be posted while the conversation is {state}.",
        code="conflict",
        extra={"state": state},
    )


def message_posted(request: PostRequest, posted: PostedMessage, *, channel: str) -> None:
    """What follows a stored message besides its own event: the consoles' inbox while nobody
    holds the conversation, and the emailed reply in an email follow-up."""
    if posted.state in (State.BOT, State.QUEUED) and not request.internal:
        _emit_inbox_update(request.conversation_id)
    if (
        channel == Conversation.Channel.EMAIL
        and request.author_kind == Author.AGENT
        and not request.internal
    ):
        follow_up_email_fire(
            conversation_id=request.conversation_id, message_id=posted.message["id"]
        )


def message_post(
    *,
    conversation_id: int,
    author_kind: str,
    body: str,
    agent: Any = None,
    client_id: str | None = None,
    internal: bool = False,
    intent: str = "",
    shopper_id: int | None = None,
) -> PostedMessage:
    """Store one message with the next seq and send it to the conversation after commit.

    With ``shopper_id`` the conversation must be that shopper's (``PermissionDenied``).

    A ``client_id`` already stored in this conversation returns that message (``created`` is
    False) and sends nothing. Raises ``Conflict`` when the conversation's state does not accept
    this author (the bot outside ``bot``, anyone but the system in ``resolved``).

    ``chat.writer`` does the same for many messages at once, from the event loop.
    """
    request = post_request(
        conversation_id=conversation_id,
        author_kind=author_kind,
        body=body,
        agent=agent,
        client_id=client_id,
        internal=internal,
        intent=intent,
        shopper_id=shopper_id,
    )
    now = timezone.now()
    # One transaction with what follows it (an emailed reply is stored with the reply); the
    # events go out when it has committed.
    with transaction.atomic():
        [row] = messages_store([request], now=now)
        if row is None:
            return post_rejected(request)
        posted = PostedMessage(
            message=message_dict(request, row, now=now), created=True, state=row[2]
        )
        # After commit, publish from this thread (no hop to the event loop and back).
        transaction.on_commit(partial(group_send_sync, *message_event(posted.message)))
        message_posted(request, posted, channel=row[3])
    return posted


def _author_name(author_kind: str, agent: Any) -> str:
    if author_kind == Author.AGENT:
        return selectors.agent_name(agent)
    return {"bot": "Bot", "shopper": "You"}.get(str(author_kind), "")


def _message_by_client_id(conversation_id: int, client_id: str | None) -> Message | None:
    if client_id is None:
        return None
    return (
        Message.objects.select_related("author_agent")
        .filter(conversation_id=conversation_id, client_id=client_id)
        .first()
    )


def _emit_inbox_update(conversation_id: int) -> None:
    def send() -> None:
        summary = selectors.summary_by_id(conversation_id)
        group_send_sync(
            CONSOLE_GROUP,
            {"type": "chat.event", "event": {"type": "inbox.update", "conversation": summary}},
        )

    transaction.on_commit(send)


def _system_say(conversation_id: int, text: str, **params: object) -> None:
    """Post a system message: ``text`` (an English msgid, or a merchant's own sentence) said in
    the conversation's language (``chat.services.language``), ``params`` filled in after."""
    if text:
        body = translate(text, language=conversation_language(conversation_id), **params)
        message_post(conversation_id=conversation_id, author_kind=Author.SYSTEM, body=body)
