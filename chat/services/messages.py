"""Messages: storing (one or a batch) and their real-time follow-ups.

Who may post where, and why a message was refused, is ``post_rules``'; this module stores what
a ``PostRequest`` describes, on either path, and sends what follows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from chat import selectors
from chat.models import Conversation
from chat.services._common import (
    CONSOLE_GROUP,
    Author,
    State,
    _emit_state,
    conversation_group,
    staff_group,
)
from chat.services.language import conversation_language, translate
from chat.services.post_rules import PostedMessage, PostRequest, post_rejected, post_request
from chat.services.transcripts import follow_up_email_fire
from core.channel_layer import group_send_sync
from core.exceptions import ApplicationError

logger = logging.getLogger(__name__)

# A request's outcome on the batch path: the message stored or resent, or why it was not.
Outcome = PostedMessage | Exception

# A stored message as ``chat_messages_post`` returns it: id, seq, the conversation's state and
# channel after the insert. None when the message was not stored.
StoredRow = tuple[int, int, str, str]


def messages_store(requests: Sequence[PostRequest], *, now: dt.datetime) -> list[StoredRow | None]:
    """Store ``requests`` in one statement (and, outside an atomic block, one transaction); see
    chat/sql/chat_messages_post_v3.sql for what each row does. Rows come back in the requests'
    order.

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


def _message_dict(request: PostRequest, row: StoredRow, *, now: dt.datetime) -> dict[str, Any]:
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


def _message_posted(request: PostRequest, posted: PostedMessage, *, channel: str) -> None:
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
    """Store one message with the next seq and send it to the conversation after commit; the
    rules are ``post_rules``' (``post_request`` for the arguments).

    With ``shopper_id`` the conversation must be that shopper's (``PermissionDenied``).

    A ``client_id`` already stored in this conversation returns that message (``created`` is
    False), stores nothing and publishes that message again. Raises ``Conflict`` when the
    conversation's state does not accept this author (the bot outside ``bot``, anyone but the
    system in ``resolved``).
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
    return message_post_one(request)


def message_post_one(request: PostRequest) -> PostedMessage:
    """The one-message path: store ``request`` in one transaction with what follows it (an
    emailed reply is stored with the reply); its event goes out when that has committed.
    Returns or raises as ``post_rejected`` when it is not stored."""
    now = timezone.now()
    with transaction.atomic():
        [row] = messages_store([request], now=now)
        posted = _outcome(request, row, now=now, publish=True)
        if posted.created and request.author_kind == Author.SHOPPER:
            conversations_wake_on_reply([request.conversation_id])
        return posted


def message_post_many(requests: Sequence[PostRequest]) -> list[Outcome]:
    """The batch path (``chat.writer``'s group commit): store ``requests`` in one statement, in
    autocommit, and sort out what was not stored. Each request's outcome, in order: what
    ``message_post_one`` would return, or the exception it would raise. The caller publishes the
    stored messages' events (``message_event``); the consoles' inbox updates go out here.

    A batch that fails as a whole (a deadlock, a constraint) is stored one message at a time, so
    one bad message fails alone. Call outside an atomic block.
    """
    now = timezone.now()
    # Rows are locked in the order given: by conversation, so concurrent batches cannot deadlock
    # (a stable sort keeps each conversation's messages in the order they arrived).
    order = sorted(range(len(requests)), key=lambda i: requests[i].conversation_id)
    try:
        stored = messages_store([requests[i] for i in order], now=now)
    except DatabaseError:
        logger.warning("chat: a batch of %d messages failed; storing them one by one", len(order))
    else:
        rows: list[StoredRow | None] = [None] * len(requests)
        for position, index in enumerate(order):
            rows[index] = stored[position]
        outcomes: list[Outcome] = []
        for request, row in zip(requests, rows, strict=True):
            try:
                outcomes.append(_outcome(request, row, now=now, publish=False))
            except ApplicationError as exc:  # reported to the socket that sent it
                outcomes.append(exc)
        return outcomes
    outcomes = []
    for request in requests:
        try:
            [row] = messages_store([request], now=now)
            outcomes.append(_outcome(request, row, now=now, publish=False))
        except Exception as exc:  # this message alone fails: its socket reports it
            outcomes.append(exc)
    return outcomes


def _outcome(
    request: PostRequest, row: StoredRow | None, *, now: dt.datetime, publish: bool
) -> PostedMessage:
    """What ``request`` came to, ``row`` being what ``messages_store`` returned for it: the
    message stored, with its follow-ups (and, with ``publish``, its event after commit), or
    ``post_rejected``'s answer."""
    if row is None:
        posted = post_rejected(request)
        if publish:
            # Stored before under this client_id: publish it again, as chat.writer does (its
            # first publish may have been lost; receivers drop seqs they already have).
            transaction.on_commit(partial(group_send_sync, *message_event(posted.message)))
        return posted
    posted = PostedMessage(message=_message_dict(request, row, now=now), created=True, state=row[2])
    if publish:
        # After commit, publish from this thread (no hop to the event loop and back).
        transaction.on_commit(partial(group_send_sync, *message_event(posted.message)))
    _message_posted(request, posted, channel=row[3])
    return posted


def conversations_wake_on_reply(conversation_ids: Sequence[int]) -> list[int]:
    """The shopper wrote in these conversations: the snoozed ones come back to the inbox (one
    statement that changes nothing unless one is snoozed); returns the ids woken. The batch
    path's caller (``chat.writer``) calls it once per batch, ``message_post_one`` per message."""
    if not conversation_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE chat_conversation SET snoozed_at = NULL, snoozed_until = NULL"
            " WHERE id = ANY(%s) AND snoozed_at IS NOT NULL RETURNING id",
            [sorted(set(conversation_ids))],
        )
        woken = [int(row[0]) for row in cursor.fetchall()]
    for conversation_id in woken:
        _emit_state(conversation_id)
    return woken


def conversation_wake(*, conversation_id: int) -> bool:
    """Bring a snoozed conversation back to the inbox (everyone concerned gets its new state);
    False when it was not snoozed. The one home of waking: the shopper writing, an agent's
    ``conversation.unsnooze`` and the wake-up task all come here."""
    with transaction.atomic():
        woken = Conversation.objects.filter(pk=conversation_id, snoozed_at__isnull=False).update(
            snoozed_at=None, snoozed_until=None
        )
        if woken:
            _emit_state(conversation_id)
    return bool(woken)


def _author_name(author_kind: str, agent: Any) -> str:
    if author_kind == Author.AGENT:
        return selectors.agent_name(agent)
    return {"bot": "Bot", "shopper": "You"}.get(str(author_kind), "")


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
