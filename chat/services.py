"""Every state change of live chat: conversations, messages, hand-off, routing, CSAT.

The conversation state machine (docs/chat-protocol.md, "Conversation states"):

    bot ──hand off──► queued ──assign/route──► assigned ──transfer──► assigned
    bot | queued | assigned ──resolve──► resolved ──shopper writes──► bot | queued (settings)

Each public function is keyword-only and atomic, and sends its real-time events through
``core.transactions.group_send_on_commit`` so that no client hears of a change that was rolled
back. Lock order, everywhere: ``AgentStatus`` rows by pk, then the ``Conversation`` row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from chat import selectors
from chat.models import (
    AgentStatus,
    BusinessHours,
    ChatSettings,
    Conversation,
    CsatRating,
    Message,
)
from chat.origins import is_own_origin
from commerce import selectors as commerce_selectors
from commerce import services as commerce_services
from commerce.models import Shopper, WriteKey
from core.channel_layer import group_send_sync
from core.exceptions import Conflict, NotFound, PermissionDenied, ValidationError
from core.transactions import group_send_on_commit

MAX_BODY = 4000
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOKEN_SALT = "chat.shopper-token"  # noqa: S105 -- a signing namespace, not a secret
TOKEN_MAX_AGE = 180 * 24 * 3600
AGENT_SEEN_WINDOW = dt.timedelta(seconds=90)

State = Conversation.State
Author = Message.Author

# --- Groups and events ---------------------------------------------------------------------

CONSOLE_GROUP = "chat.console"


def conversation_group(conversation_id: int) -> str:
    """Everyone in a conversation: the shopper's sockets and subscribed agents."""
    return f"chat.c.{conversation_id}"


def staff_group(conversation_id: int) -> str:
    """Agents subscribed to a conversation: notes, shopper typing, live context."""
    return f"chat.s.{conversation_id}"


def agent_group(user_id: int) -> str:
    return f"chat.a.{user_id}"


def _emit(group: str, event: dict[str, Any], *, conversation_id: int | None = None) -> None:
    group_send_on_commit(group, {"type": "chat.event", "event": event, "cid": conversation_id})


def _emit_state(conversation_id: int, *, previous_agent_id: int | None = None) -> None:
    """Tell the shopper, the agents in the conversation and every console about a change."""
    conversation = Conversation.objects.select_related("shopper", "assigned_agent").get(
        pk=conversation_id
    )
    summary = selectors.conversation_summary(conversation)
    open_now = business_hours_open()
    shopper_view = selectors.conversation_shopper_view(conversation, business_hours_open=open_now)
    # The shopper's sockets drop agent-side frames by "audience"; agents get the summary.
    _emit(
        conversation_group(conversation_id),
        {"type": "conversation.state", "conversation": shopper_view, "audience": "shopper"},
        conversation_id=conversation_id,
    )
    _emit(
        staff_group(conversation_id),
        {"type": "conversation.state", "conversation": summary},
        conversation_id=conversation_id,
    )
    _emit(CONSOLE_GROUP, {"type": "inbox.update", "conversation": summary})
    agent = conversation.assigned_agent if conversation.state == State.ASSIGNED else None
    assignment = {
        "type": "assignment",
        "conversation_id": conversation_id,
        "agent": {"id": agent.pk, "name": selectors.agent_name(agent)} if agent else None,
    }
    if agent is not None or previous_agent_id is not None:
        _emit(
            conversation_group(conversation_id),
            {
                "type": "assignment",
                "conversation_id": conversation_id,
                "agent": {"name": selectors.agent_name(agent)} if agent else None,
                "audience": "shopper",
            },
            conversation_id=conversation_id,
        )
    for user_id in {previous_agent_id, agent.pk if agent else None} - {None}:
        assert user_id is not None
        _emit(agent_group(user_id), assignment, conversation_id=conversation_id)


def _emit_queue_positions() -> None:
    queued = list(
        Conversation.objects.filter(state=State.QUEUED, channel=Conversation.Channel.CHAT)
        .order_by("queued_at", "pk")
        .values_list("pk", flat=True)
    )
    online = _online_agents().count()
    for position, conversation_id in enumerate(queued, start=1):
        _emit(
            conversation_group(conversation_id),
            {
                "type": "queue.position",
                "conversation_id": conversation_id,
                "position": position,
                "agents_online": online,
                "audience": "shopper",
            },
            conversation_id=conversation_id,
        )


# --- Settings, hours, identity -------------------------------------------------------------

_settings_cache: tuple[float, ChatSettings] | None = None
SETTINGS_TTL = 2.0


def chat_settings_get(*, fresh: bool = False) -> ChatSettings:
    """The one settings row (created with defaults); cached in-process for a moment."""
    global _settings_cache
    now = time.monotonic()
    if not fresh and _settings_cache is not None and now - _settings_cache[0] < SETTINGS_TTL:
        return _settings_cache[1]
    settings_row, _ = ChatSettings.objects.get_or_create(pk=1)
    _settings_cache = (now, settings_row)
    return settings_row


def chat_settings_invalidate() -> None:
    global _settings_cache
    _settings_cache = None


def business_hours_open(*, at: dt.datetime | None = None) -> bool:
    """Open when there are no business-hours rows, or ``at`` falls inside one of them."""
    rows = list(BusinessHours.objects.all())
    if not rows:
        return True
    zone = zoneinfo.ZoneInfo(chat_settings_get().time_zone or "UTC")
    local = (at or timezone.now()).astimezone(zone)
    return any(row.contains(local) for row in rows)


def shopper_token_issue(*, shopper_id: int) -> str:
    return signing.dumps({"s": shopper_id}, salt=TOKEN_SALT, compress=True)


def shopper_token_verify(*, token: str) -> int:
    try:
        data = signing.loads(token, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE)
    except signing.BadSignature:
        raise PermissionDenied("The chat token is invalid or expired.", code="forbidden") from None
    if not isinstance(data, dict) or not isinstance(data.get("s"), int):
        raise PermissionDenied("The chat token is invalid.", code="forbidden")
    return int(data["s"])


def customer_hash(*, customer_id: str, secret: str) -> str:
    """The proof of ``customer_id`` (``commerce.selectors.identity_hash``), kept for callers."""
    return commerce_selectors.identity_hash(customer_id=customer_id, secret=secret)


@dataclass(frozen=True)
class ChatIdentity:
    shopper: Shopper
    token: str
    identified: bool


def chat_origin_allowed(*, write_key: WriteKey, origin: str | None) -> bool:
    """May a page at ``origin`` chat with ``write_key``? Patron's own hosts always may (the
    demo shop, the help pages); other sites only when the merchant listed their origin in the
    key's ``allowed_origins``. No Origin at all counts as a foreign page."""
    if is_own_origin(origin):
        return True
    return origin is not None and write_key.allows_origin(origin)


def chat_identify(
    *,
    write_key: str,
    origin: str | None,
    token: str | None = None,
    anonymous_id: str | None = None,
    customer_id: str | None = None,
    customer_hash_value: str | None = None,
) -> ChatIdentity:
    """Who is on the shopper socket: by a verified customer id, by token, or by anonymous id.

    ``origin`` is the socket handshake's Origin header (None when absent). The key and the
    origin are checked first, before anything is created or merged.

    The verified-identity rule (``commerce.services.visitor_resolve``, docs/identity.md): a
    customer is recognised only by ``customer_id`` with ``customer_hash``. Neither a token nor
    an anonymous id that leads to a known customer carries that identity: without the hash
    the visitor gets a new anonymous shopper, with none of the customer's conversations,
    orders or context. ``identified`` is True only for a verified customer.

    Raises ``PermissionDenied`` for an unknown write key, an origin the key does not allow, a
    bad token or a wrong customer hash.
    """
    key = commerce_selectors.write_key_active(key=write_key)
    if key is None:
        raise PermissionDenied("Unknown write key.", code="forbidden")
    if not chat_origin_allowed(write_key=key, origin=origin):
        raise PermissionDenied(
            f"Pages at {origin or 'an unknown origin'} may not use this write key.",
            code="forbidden",
        )
    customer_id = (customer_id or "").strip() or None
    anonymous_id = (anonymous_id or "").strip() or None
    shopper: Shopper | None = None
    if customer_id is not None:
        if not commerce_selectors.identity_verified(
            customer_id=customer_id, proof=customer_hash_value
        ):
            raise PermissionDenied("customer_hash does not match customer_id.", code="forbidden")
        shopper = commerce_services.visitor_resolve(
            customer_id=customer_id, anonymous_id=anonymous_id, proof=customer_hash_value
        ).shopper
        if token:
            # A token from before login: that visitor's conversations follow the customer.
            previous = Shopper.objects.filter(pk=shopper_token_verify(token=token)).first()
            if previous is not None and previous.pk != shopper.pk and not previous.customer_id:
                Conversation.objects.filter(shopper=previous).update(shopper=shopper)
        identified = True
    else:
        if token:
            found = Shopper.objects.filter(pk=shopper_token_verify(token=token)).first()
            if found is None:
                raise PermissionDenied("The chat token names no shopper.", code="forbidden")
            found = commerce_services.shopper_current(found)
            # A token held by a known customer (issued while they were logged in, or to a
            # visitor who logged in since) proves nothing without the customer hash: the page
            # after a logout keeps the token and the anonymous id, and the next person on the
            # browser must not get the customer's conversations. They start over anonymously.
            if not found.customer_id:
                shopper = found
        if shopper is None:
            if anonymous_id is not None:
                shopper = commerce_services.visitor_resolve(anonymous_id=anonymous_id).shopper
            elif token:
                raise PermissionDenied(
                    "This chat token belongs to a signed-in customer: send customer_hash.",
                    code="forbidden",
                )
            else:
                raise ValidationError("hello needs a token, an anonymous_id or a customer_id.")
        identified = False
    return ChatIdentity(
        shopper=shopper,
        token=shopper_token_issue(shopper_id=shopper.pk),
        identified=identified,
    )


def conversation_for_shopper(
    *, shopper: Shopper, conversation_id: int | None
) -> Conversation | None:
    """The shopper's conversation ``conversation_id`` (``PermissionDenied`` when it is not
    theirs), or their current one when no id is given."""
    if conversation_id is None:
        return selectors.conversation_current(shopper_id=shopper.pk)
    conversation = (
        Conversation.objects.select_related("assigned_agent").filter(pk=conversation_id).first()
    )
    if conversation is None or conversation.shopper_id != shopper.pk:
        raise PermissionDenied("This conversation is not yours.", code="forbidden")
    return conversation


# --- Messages --------------------------------------------------------------------------------


def clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ValidationError("body must be text")
    text = body.strip()
    if not text:
        raise ValidationError("body must not be empty")
    if len(text) > MAX_BODY:
        raise ValidationError(f"body must be at most {MAX_BODY} characters")
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


# --- Conversation lifecycle ------------------------------------------------------------------


@transaction.atomic
def conversation_start(
    *, shopper: Shopper, language: str = "", page_url: str = "", page_title: str = ""
) -> Conversation:
    """A new conversation, answered by the bot (or queued at once when the bot is off)."""
    now = timezone.now()
    conversation = Conversation.objects.create(
        shopper=shopper,
        state=State.BOT,
        language=language[:16],
        page_url=page_url[:2000],
        page_title=page_title[:300],
        page_seen_at=now if page_url else None,
        created_at=now,
        updated_at=now,
    )
    _emit_inbox_update(conversation.pk)
    return conversation


@dataclass(frozen=True)
class ShopperPost:
    conversation_id: int
    posted: PostedMessage
    conversation_started: bool
    # Set when this message made the bot hand off outside business hours (see ``HandOff``).
    offline_prompt: dict[str, Any] | None = None


def shopper_message_post(
    *,
    shopper: Shopper,
    body: str,
    client_id: str | None,
    conversation_id: int | None = None,
    language: str = "",
    page_url: str = "",
    page_title: str = "",
) -> ShopperPost:
    """A shopper writes: start or reopen the conversation as needed, store the message, and let
    the bot answer when the conversation is the bot's."""
    body = clean_body(body)
    client_id = clean_client_id(client_id)
    if conversation_id is not None:
        # The hot path: one statement, which also checks the conversation is this shopper's.
        try:
            posted = message_post(
                conversation_id=conversation_id,
                author_kind=Author.SHOPPER,
                body=body,
                client_id=client_id,
                shopper_id=shopper.pk,
            )
        except Conflict:
            pass  # resolved: reopened below
        else:
            handoff = None
            if posted.created and posted.state == State.BOT:
                handoff = bot_respond(conversation_id=conversation_id, text=body)
            return ShopperPost(
                conversation_id=conversation_id,
                posted=posted,
                conversation_started=False,
                offline_prompt=handoff.offline_prompt if handoff else None,
            )
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    started = False
    if conversation is None:
        conversation = conversation_start(
            shopper=shopper, language=language, page_url=page_url, page_title=page_title
        )
        started = True
    try:
        posted = message_post(
            conversation_id=conversation.pk,
            author_kind=Author.SHOPPER,
            body=body,
            client_id=client_id,
        )
    except Conflict:
        conversation_reopen(conversation_id=conversation.pk)
        posted = message_post(
            conversation_id=conversation.pk,
            author_kind=Author.SHOPPER,
            body=body,
            client_id=client_id,
        )
    handoff = None
    if posted.created and posted.state == State.BOT:
        handoff = bot_respond(conversation_id=conversation.pk, text=body)
    return ShopperPost(
        conversation_id=conversation.pk,
        posted=posted,
        conversation_started=started,
        offline_prompt=handoff.offline_prompt if handoff else None,
    )


def bot_respond(*, conversation_id: int, text: str) -> HandOff | None:
    """Let the bot answer ``text``; hands off on request, on low confidence after a clarifying
    question, or after ``bot_max_failures`` failures in a row. Silent unless state is ``bot``.
    Returns the hand-off when it handed off."""
    from chat import bot

    settings_row = chat_settings_get()
    conversation = Conversation.objects.select_related("shopper").get(pk=conversation_id)
    if conversation.state != State.BOT:
        return None
    if not settings_row.bot_enabled:
        return conversation_hand_off(conversation_id=conversation_id, reason="bot_disabled")
    reply = bot.bot_answer(conversation=conversation, text=text, settings_row=settings_row)
    if reply.failed:
        failures = _bot_failures_bump(conversation_id)
        if failures >= settings_row.bot_max_failures:
            return conversation_hand_off(conversation_id=conversation_id, reason="bot_failures")
    elif reply.handoff:
        if reply.text:
            _bot_say(conversation_id, reply.text, reply.intent)
        return conversation_hand_off(
            conversation_id=conversation_id, reason=reply.intent or "requested"
        )
    else:
        Conversation.objects.filter(pk=conversation_id, bot_failures__gt=0).update(bot_failures=0)
    if reply.text:
        _bot_say(conversation_id, reply.text, reply.intent)
    return None


def _bot_failures_bump(conversation_id: int) -> int:
    Conversation.objects.filter(pk=conversation_id).update(bot_failures=F("bot_failures") + 1)
    return int(Conversation.objects.values_list("bot_failures", flat=True).get(pk=conversation_id))


def _bot_say(conversation_id: int, text: str, intent: str) -> None:
    # Conflict: an agent took over meanwhile, and the bot stays silent, which is the point.
    with contextlib.suppress(Conflict):
        message_post(
            conversation_id=conversation_id,
            author_kind=Author.BOT,
            body=text[:MAX_BODY],
            intent=intent,
        )


def _lock(conversation_id: int) -> Conversation:
    try:
        return Conversation.objects.select_for_update().get(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound("No such conversation.") from None


def _system_say(conversation_id: int, text: str) -> None:
    if text:
        message_post(conversation_id=conversation_id, author_kind=Author.SYSTEM, body=text)


@dataclass(frozen=True)
class HandOff:
    conversation: Conversation
    # The offline.prompt frame sent to the conversation's sockets (outside business hours).
    # A socket that joins the conversation only after this call (the hand-off started it) did
    # not hear it, and sends it itself.
    offline_prompt: dict[str, Any] | None = None


def conversation_hand_off(*, conversation_id: int, reason: str = "requested") -> HandOff:
    """bot → queued (then routed to an agent). Outside business hours the shopper is asked for
    an email address instead (``offline.prompt``). Queued or assigned: nothing changes.
    Resolved: reopened straight into the queue."""
    settings_row = chat_settings_get()
    open_now = business_hours_open()
    prompt: dict[str, Any] | None = None
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state in (State.QUEUED, State.ASSIGNED):
            return HandOff(conversation=conversation)
        now = timezone.now()
        conversation.state = State.QUEUED
        conversation.queued_at = now
        conversation.handed_off_at = conversation.handed_off_at or now
        conversation.assigned_agent = None
        conversation.updated_at = now
        conversation.save(
            update_fields=["state", "queued_at", "handed_off_at", "assigned_agent", "updated_at"]
        )
        if open_now:
            _system_say(conversation_id, settings_row.handoff_message)
        else:
            _system_say(conversation_id, settings_row.offline_message)
            prompt = {
                "type": "offline.prompt",
                "conversation_id": conversation_id,
                "message": settings_row.offline_message,
            }
            _emit(
                conversation_group(conversation_id),
                {**prompt, "audience": "shopper"},
                conversation_id=conversation_id,
            )
        _emit_state(conversation_id)
    if open_now:
        return HandOff(conversation=conversation_route(conversation_id=conversation_id))
    return HandOff(conversation=conversation, offline_prompt=prompt)


def _online_agents() -> Any:
    cutoff = timezone.now() - AGENT_SEEN_WINDOW
    return AgentStatus.objects.filter(
        status=AgentStatus.Status.ONLINE,
        connections__gt=0,
        last_seen_at__gte=cutoff,
        user__in=selectors.agents_queryset(),
    )


def _pick_agent(
    agents: list[AgentStatus], loads: dict[int, int], routing: str
) -> AgentStatus | None:
    free = [a for a in agents if loads.get(a.user_id, 0) < a.capacity]
    if not free:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    if routing == ChatSettings.Routing.ROUND_ROBIN:
        return min(free, key=lambda a: (a.last_assigned_at or epoch, a.pk))
    return min(
        free,
        key=lambda a: (
            loads.get(a.user_id, 0) / max(a.capacity, 1),
            a.last_assigned_at or epoch,
            a.pk,
        ),
    )


def _assign(conversation: Conversation, agent_user: Any, *, now: dt.datetime) -> int | None:
    """Make ``agent_user`` answer ``conversation`` (row locked by the caller)."""
    previous = conversation.assigned_agent_id
    conversation.state = State.ASSIGNED
    conversation.assigned_agent = agent_user
    conversation.assigned_at = now
    conversation.updated_at = now
    conversation.save(update_fields=["state", "assigned_agent", "assigned_at", "updated_at"])
    AgentStatus.objects.filter(user=agent_user).update(last_assigned_at=now)
    _system_say(conversation.pk, f"{selectors.agent_name(agent_user)} joined the conversation.")
    return previous


def conversation_route(*, conversation_id: int) -> Conversation:
    """Assign a queued conversation to an online agent with free capacity (least busy or round
    robin, as configured), or leave it queued and tell every queued shopper their place.

    Locks every online agent's status row in pk order before the conversation, so concurrent
    hand-offs see each other's assignments and never overfill an agent.
    """
    routing = chat_settings_get().routing
    with transaction.atomic():
        agents = list(_online_agents().select_for_update().order_by("pk"))
        conversation = _lock(conversation_id)
        if conversation.state != State.QUEUED or conversation.channel != Conversation.Channel.CHAT:
            return conversation
        chosen = _pick_agent(agents, selectors.agent_loads(), routing)
        if chosen is None:
            _emit_queue_positions()
            return conversation
        now = timezone.now()
        previous = _assign(conversation, chosen.user, now=now)
        _emit_state(conversation_id, previous_agent_id=previous)
        _emit_queue_positions()
    return conversation


def queue_drain() -> int:
    """Assign queued chat conversations, oldest first, while agents have free capacity."""
    routing = chat_settings_get().routing
    assigned = 0
    with transaction.atomic():
        agents = list(_online_agents().select_for_update().order_by("pk"))
        if not agents:
            return 0
        loads = selectors.agent_loads()
        free = sum(max(a.capacity - loads.get(a.user_id, 0), 0) for a in agents)
        if free == 0:
            return 0
        waiting = list(
            Conversation.objects.select_for_update(skip_locked=True)
            .filter(state=State.QUEUED, channel=Conversation.Channel.CHAT)
            .order_by("queued_at", "pk")[:free]
        )
        now = timezone.now()
        for conversation in waiting:
            chosen = _pick_agent(agents, loads, routing)
            if chosen is None:
                break
            previous = _assign(conversation, chosen.user, now=now)
            chosen.last_assigned_at = now
            loads[chosen.user_id] = loads.get(chosen.user_id, 0) + 1
            _emit_state(conversation.pk, previous_agent_id=previous)
            assigned += 1
        if assigned:
            _emit_queue_positions()
    return assigned


def _check_agent(user: Any) -> None:
    if not selectors.is_agent(user):
        raise PermissionDenied("Only agents can do this.", code="forbidden")


def conversation_assign(*, conversation_id: int, agent: Any, by: Any) -> Conversation:
    """Assign to ``agent`` (an agent taking a conversation, or a manager assigning it); works
    from ``bot`` or ``queued`` (the bot falls silent) and from ``assigned`` (a transfer)."""
    _check_agent(by)
    _check_agent(agent)
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state == State.RESOLVED:
            raise Conflict("This conversation is resolved.", code="conflict")
        if conversation.state == State.ASSIGNED and conversation.assigned_agent_id == agent.pk:
            return conversation
        now = timezone.now()
        if conversation.handed_off_at is None:
            conversation.handed_off_at = now
            conversation.save(update_fields=["handed_off_at"])
        previous = _assign(conversation, agent, now=now)
        _emit_state(conversation_id, previous_agent_id=previous)
        _emit_queue_positions()
    return conversation


def conversation_transfer(*, conversation_id: int, to_agent: Any, by: Any) -> Conversation:
    """assigned → assigned to another agent."""
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state != State.ASSIGNED:
            raise Conflict("Only an assigned conversation can be transferred.", code="conflict")
        return conversation_assign(conversation_id=conversation_id, agent=to_agent, by=by)


def conversation_resolve(*, conversation_id: int, by: Any = None) -> Conversation:
    """Close the conversation and ask the shopper for a CSAT rating; frees the agent's slot.

    The agent who held it keeps it (``assigned_agent`` stays, no ``assignment`` event), so
    their console stays subscribed and hears the rating; it lets go when the conversation is
    reopened (``conversation_reopen``) or when they leave it."""
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state == State.RESOLVED:
            return conversation
        if by is not None:
            _check_agent(by)
        now = timezone.now()
        _system_say(conversation_id, "This conversation has been resolved.")
        conversation.state = State.RESOLVED
        conversation.resolved_at = now
        conversation.resolved_by = by
        conversation.csat_requested_at = now
        conversation.updated_at = now
        conversation.save(
            update_fields=["state", "resolved_at", "resolved_by", "csat_requested_at", "updated_at"]
        )
        _emit_state(conversation_id)
        _emit(
            conversation_group(conversation_id),
            {"type": "csat.request", "conversation_id": conversation_id, "audience": "shopper"},
            conversation_id=conversation_id,
        )
        freed = conversation.assigned_agent_id is not None
    if freed:
        queue_drain()
    return conversation


def conversation_reopen(*, conversation_id: int) -> Conversation:
    """resolved → bot or queued (``ChatSettings.reopen_state``); other states: unchanged."""
    reopen_to = chat_settings_get().reopen_state
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state != State.RESOLVED:
            return conversation
        now = timezone.now()
        previous_agent_id = conversation.assigned_agent_id
        conversation.state = reopen_to
        conversation.assigned_agent = None
        conversation.bot_failures = 0
        conversation.resolved_at = None
        conversation.csat_requested_at = None
        conversation.queued_at = now if reopen_to == State.QUEUED else None
        conversation.updated_at = now
        conversation.save(
            update_fields=[
                "state",
                "assigned_agent",
                "bot_failures",
                "resolved_at",
                "csat_requested_at",
                "queued_at",
                "updated_at",
            ]
        )
        # The agent who resolved it lets go now (an ``assignment`` with agent null).
        _emit_state(conversation_id, previous_agent_id=previous_agent_id)
    if reopen_to == State.QUEUED:
        return conversation_route(conversation_id=conversation_id)
    return conversation


def shopper_hand_off_request(
    *, shopper: Shopper, conversation_id: int | None, language: str = ""
) -> HandOff:
    """The shopper pressed "talk to a person": start, reopen or hand off as needed."""
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    if conversation is None:
        conversation = conversation_start(shopper=shopper, language=language)
    if conversation.state == State.RESOLVED:
        with transaction.atomic():
            locked = _lock(conversation.pk)
            if locked.state == State.RESOLVED:
                previous_agent_id = locked.assigned_agent_id
                locked.state = State.BOT
                locked.assigned_agent = None
                locked.resolved_at = None
                locked.csat_requested_at = None
                locked.save(
                    update_fields=["state", "assigned_agent", "resolved_at", "csat_requested_at"]
                )
                _emit_state(locked.pk, previous_agent_id=previous_agent_id)
    return conversation_hand_off(conversation_id=conversation.pk, reason="requested")


def offline_message_leave(
    *, shopper: Shopper, conversation_id: int | None, email: str, body: str, client_id: str | None
) -> PostedMessage:
    """Outside business hours: keep the shopper's message and address; the conversation becomes
    an email follow-up (agents' replies are emailed) and the support inbox is told."""
    from django.core.validators import validate_email

    try:
        validate_email(email)
    except Exception:
        raise ValidationError("email is not a valid address") from None
    body = clean_body(body)
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    if conversation is None:
        conversation = conversation_start(shopper=shopper)
    with transaction.atomic():
        locked = _lock(conversation.pk)
        previous_agent_id = locked.assigned_agent_id if locked.state == State.RESOLVED else None
        now = timezone.now()
        locked.follow_up_email = email
        locked.channel = Conversation.Channel.EMAIL
        if locked.state != State.ASSIGNED:
            locked.state = State.QUEUED
            locked.assigned_agent = None
            locked.queued_at = locked.queued_at or now
            locked.handed_off_at = locked.handed_off_at or now
        locked.updated_at = now
        locked.save(
            update_fields=[
                "follow_up_email",
                "channel",
                "state",
                "assigned_agent",
                "queued_at",
                "handed_off_at",
                "updated_at",
            ]
        )
        if not shopper.email:
            Shopper.objects.filter(pk=shopper.pk, email="").update(email=email)
        posted = message_post(
            conversation_id=locked.pk, author_kind=Author.SHOPPER, body=body, client_id=client_id
        )
        if posted.created:
            offline_emails_fire(
                shopper=shopper,
                conversation_id=locked.pk,
                message_id=posted.message["id"],
                seq=posted.message["seq"],
                email=email,
            )
        _emit_state(locked.pk, previous_agent_id=previous_agent_id)
    return posted


def csat_record(
    *, shopper: Shopper, conversation_id: int, rating: Any, comment: str = ""
) -> CsatRating:
    """The shopper's rating of a resolved conversation; once per conversation."""
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise ValidationError("rating must be a whole number from 1 to 5")
    if not isinstance(comment, str) or len(comment) > 1000:
        raise ValidationError("comment must be text of at most 1000 characters")
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    assert conversation is not None
    if conversation.csat_requested_at is None:
        raise Conflict("Ratings are asked for after a conversation is resolved.", code="conflict")
    try:
        with transaction.atomic():
            csat = CsatRating.objects.create(
                conversation=conversation,
                agent_id=conversation.assigned_agent_id,
                rating=rating,
                comment=comment.strip(),
            )
    except IntegrityError:
        raise Conflict("This conversation has already been rated.", code="conflict") from None
    with transaction.atomic():
        event = {
            "type": "csat.recorded",
            "conversation_id": conversation.pk,
            "rating": rating,
            "comment": csat.comment,
        }
        _emit(staff_group(conversation.pk), event, conversation_id=conversation.pk)
        _emit(
            conversation_group(conversation.pk),
            {
                "type": "csat.recorded",
                "conversation_id": conversation.pk,
                "rating": rating,
                "audience": "shopper",
            },
            conversation_id=conversation.pk,
        )
    return csat


def transcript_send(
    *, conversation_id: int, email: str | None, shopper: Shopper | None = None
) -> str:
    """Queue the conversation's transcript (without notes) to ``email`` or the shopper's.

    Sent once per request (``emails.transcript_occurrence_key``: a repeated request for the
    same transcript to the same address within the hour sends nothing more). Returns the
    address.
    """
    from django.core.validators import validate_email

    from chat import emails

    conversation = Conversation.objects.select_related("shopper").filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    if shopper is not None and conversation.shopper_id != shopper.pk:
        raise PermissionDenied("This conversation is not yours.", code="forbidden")
    address = (email or "").strip() or conversation.shopper.email or conversation.follow_up_email
    if not address:
        raise ValidationError("email is required: we don't know the shopper's address")
    try:
        validate_email(address)
    except Exception:
        raise ValidationError("email is not a valid address") from None
    # The transcript as of now (what the shopper sees); notes do not make it a new one.
    upto_seq = (
        Message.objects.filter(conversation_id=conversation_id, internal=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    ) or 0
    _email_fire(
        trigger=emails.TRANSCRIPT,
        shopper=conversation.shopper,
        occurrence_key=emails.transcript_occurrence_key(
            conversation_id=conversation_id, upto_seq=upto_seq, address=address, at=timezone.now()
        ),
        data={"conversation_id": conversation_id, "upto_seq": upto_seq},
        email_to=address,
    )
    return address


def conversation_page_view(
    *, shopper: Shopper, conversation_id: int | None, url: str, title: str = ""
) -> None:
    """The shopper is on ``url`` now: update the conversation and every open context panel."""
    if not isinstance(url, str) or not isinstance(title, str):
        raise ValidationError("url and title must be text")
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    if conversation is None:
        return
    now = timezone.now()
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(
            page_url=url[:2000], page_title=title[:300], page_seen_at=now
        )
        _emit(
            staff_group(conversation.pk),
            {
                "type": "context.update",
                "conversation_id": conversation.pk,
                "section": {
                    "key": "current_page",
                    "title": "Current page",
                    "data": {"url": url[:2000], "title": title[:300], "at": now.isoformat()},
                },
            },
            conversation_id=conversation.pk,
        )


# --- Emails ---------------------------------------------------------------------------------
# Chat's emails are engagement campaigns (``chat/emails.py``): firing a trigger writes the
# outbox rows in the caller's transaction, keyed so that a repeated decision sends nothing
# more; engagement delivers them, retries, re-queues what a dead worker left, and skips
# suppressed addresses. The merchant edits their templates as campaigns in the admin.


def _email_fire(
    *,
    trigger: str,
    shopper: Shopper,
    occurrence_key: str,
    data: dict[str, Any],
    email_to: str,
    email_reply_to: str = "",
) -> int:
    from engagement import services as engagement_services

    runs = engagement_services.trigger_fire(
        trigger=trigger,
        shopper=shopper,
        occurrence_key=occurrence_key,
        data=data,
        email_to=email_to,
        email_reply_to=email_reply_to,
    )
    return len(runs)


def offline_emails_fire(
    *, shopper: Shopper, conversation_id: int, message_id: int, seq: int, email: str
) -> int:
    """The receipt to ``email`` and the notice to the support inbox for the shopper's offline
    message ``message_id``; once per message however often it is called. Call in the
    transaction that stored the message."""
    from email.utils import parseaddr

    from chat import emails

    support = (
        chat_settings_get(fresh=True).support_email or parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    )
    data = {"conversation_id": conversation_id, "message_id": message_id, "upto_seq": seq}
    key = f"chat-message:{message_id}"
    return _email_fire(
        trigger=emails.OFFLINE_RECEIPT,
        shopper=shopper,
        occurrence_key=key,
        data=data,
        email_to=email,
    ) + _email_fire(
        trigger=emails.OFFLINE_NOTICE,
        shopper=shopper,
        occurrence_key=key,
        data={**data, "shopper_email": email},
        email_to=support,
        email_reply_to=email,
    )


def follow_up_email_fire(*, conversation_id: int, message_id: int) -> int:
    """Email the agent's reply ``message_id`` to the conversation's follow-up address; once per
    message however often it is called."""
    from chat import emails

    conversation = Conversation.objects.select_related("shopper").filter(pk=conversation_id).first()
    if conversation is None or not conversation.follow_up_email:
        return 0
    return _email_fire(
        trigger=emails.FOLLOW_UP,
        shopper=conversation.shopper,
        occurrence_key=f"chat-message:{message_id}",
        data={"conversation_id": conversation_id, "message_id": message_id},
        email_to=conversation.follow_up_email,
    )


# --- Agents ---------------------------------------------------------------------------------


def _emit_presence(user: Any) -> None:
    status = AgentStatus.objects.get(user=user)
    load = selectors.agent_loads().get(user.pk, 0)
    _emit(
        CONSOLE_GROUP,
        {
            "type": "presence",
            "agent": {"id": user.pk, "name": selectors.agent_name(user)},
            "status": status.status,
            "load": load,
            "capacity": status.capacity,
        },
    )


def agent_connect(*, user: Any) -> AgentStatus:
    """A console socket opened: the agent is online; queued conversations may now route."""
    _check_agent(user)
    now = timezone.now()
    with transaction.atomic():
        status, _ = AgentStatus.objects.get_or_create(user=user)
        AgentStatus.objects.filter(pk=status.pk).update(
            connections=F("connections") + 1, status=AgentStatus.Status.ONLINE, last_seen_at=now
        )
        _emit_presence(user)
    queue_drain()
    status.refresh_from_db()
    return status


def agent_disconnect(*, user: Any) -> None:
    with transaction.atomic():
        status = AgentStatus.objects.select_for_update().filter(user=user).first()
        if status is None:
            return
        connections = max(status.connections - 1, 0)
        AgentStatus.objects.filter(pk=status.pk).update(
            connections=Greatest(F("connections") - 1, 0),
            status=AgentStatus.Status.OFFLINE if connections == 0 else status.status,
        )
        _emit_presence(user)


def agent_heartbeat(*, user: Any) -> None:
    AgentStatus.objects.filter(user=user).update(last_seen_at=timezone.now())


def agent_presence_set(*, user: Any, status: str) -> AgentStatus:
    if status not in (AgentStatus.Status.ONLINE, AgentStatus.Status.AWAY):
        raise ValidationError("status must be online or away")
    _check_agent(user)
    with transaction.atomic():
        row, _ = AgentStatus.objects.get_or_create(user=user)
        AgentStatus.objects.filter(pk=row.pk).update(status=status, last_seen_at=timezone.now())
        _emit_presence(user)
    if status == AgentStatus.Status.ONLINE:
        queue_drain()
    row.refresh_from_db()
    return row


def agent_message_post(
    *, agent: Any, conversation_id: int, body: str, client_id: str | None, internal: bool = False
) -> PostedMessage:
    """An agent writes. A public reply in a conversation nobody holds assigns it to the writer
    first, so the bot can never answer over a person."""
    _check_agent(agent)
    if not internal:
        state, holder = Conversation.objects.filter(pk=conversation_id).values_list(
            "state", "assigned_agent_id"
        ).first() or (None, None)
        if state is None:
            raise NotFound("No such conversation.")
        if state == State.RESOLVED:
            raise Conflict("This conversation is resolved.", code="conflict")
        if state in (State.BOT, State.QUEUED) or holder is None:
            conversation_assign(conversation_id=conversation_id, agent=agent, by=agent)
    return message_post(
        conversation_id=conversation_id,
        author_kind=Author.AGENT,
        body=body,
        agent=agent,
        client_id=client_id,
        internal=internal,
    )
