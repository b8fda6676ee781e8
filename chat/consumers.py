"""The chat WebSocket consumers: transport only.

Identity comes from the ``hello`` frame (shoppers) or the session in ``scope`` (agents);
permission is checked before a socket joins a conversation's groups; every write goes through
``chat.services``; handlers are named after the frame types of docs/chat-protocol.md.

Delivery guarantee per socket: every message of a subscribed conversation is sent once, in
``seq`` order. The socket remembers the highest seq it sent per conversation, drops events at or
below it, and when an event skips ahead it reads the skipped messages from PostgreSQL first (a
publisher that lost a race, or an event lost while Redis restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from chat import selectors, services
from chat.models import Conversation
from chat.origins import scope_origin
from chat.threads import db
from chat.writer import writer
from core.exceptions import (
    ApplicationError,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from core.ratelimit import RateLimited, TokenBucket, rate_limit_hit, scope_client_address

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024
HELLO_TIMEOUT = 10.0

CLOSE_PROTOCOL = 4000
CLOSE_HELLO = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_TOO_LARGE = 4009
CLOSE_UNAVAILABLE = 1011


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, close_code: int):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


# Frame schemas: field -> (accepted types, required). Wrong types are protocol errors (4000);
# bad values (an empty body) are application errors that do not close the socket.
Schema = dict[str, tuple[tuple[type, ...], bool]]
STR = (str,)
INT = (int,)
BOOL = (bool,)
OPT_INT = (int, type(None))
OPT_STR = (str, type(None))

SHOPPER_FRAMES: dict[str, Schema] = {
    "hello": {
        "write_key": (STR, True),
        "token": (OPT_STR, False),
        "anonymous_id": (OPT_STR, False),
        "customer_id": (OPT_STR, False),
        "customer_hash": (OPT_STR, False),
        "conversation_id": (OPT_INT, False),
        "last_seq": (OPT_INT, False),
        "locale": (OPT_STR, False),
        "page": ((dict, type(None)), False),
    },
    "message.send": {"client_id": (STR, True), "body": (STR, True)},
    "typing": {"active": (BOOL, True)},
    "read": {"seq": (INT, True)},
    "handoff.request": {},
    "page.view": {"url": (STR, True), "title": (OPT_STR, False)},
    "csat.submit": {"rating": (INT, True), "comment": (OPT_STR, False)},
    "transcript.request": {"email": (OPT_STR, False)},
    "offline.submit": {"email": (STR, True), "body": (STR, True), "client_id": (OPT_STR, False)},
    "ping": {},
}

AGENT_FRAMES: dict[str, Schema] = {
    "inbox.query": {
        "view": (STR, True),
        "state": (OPT_STR, False),
        "q": (OPT_STR, False),
        "limit": (OPT_INT, False),
    },
    "conversation.open": {"conversation_id": (INT, True), "last_seq": (OPT_INT, False)},
    "conversation.leave": {"conversation_id": (INT, True)},
    "message.send": {
        "conversation_id": (INT, True),
        "client_id": (STR, True),
        "body": (STR, True),
        "internal": (BOOL, False),
    },
    "typing": {"conversation_id": (INT, True), "active": (BOOL, True)},
    "read": {"conversation_id": (INT, True), "seq": (INT, True)},
    "conversation.assign": {"conversation_id": (INT, True), "agent_id": (OPT_INT, False)},
    "conversation.transfer": {"conversation_id": (INT, True), "agent_id": (INT, True)},
    "conversation.resolve": {"conversation_id": (INT, True)},
    "transcript.send": {"conversation_id": (INT, True), "email": (OPT_STR, False)},
    "presence.set": {"status": (STR, True)},
    "canned.list": {},
    "ping": {},
}


def parse_frame(
    text: str | None, binary: bytes | None, frames: dict[str, Schema]
) -> dict[str, Any]:
    """Decode and check one client frame, or raise ``ProtocolError``."""
    if binary is not None:
        raise ProtocolError("protocol_error", "Binary frames are not accepted.", CLOSE_PROTOCOL)
    raw = (text or "").encode()
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes.", CLOSE_TOO_LARGE
        )
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("protocol_error", "Frames must be JSON.", CLOSE_PROTOCOL) from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError(
            "protocol_error", "A frame is a JSON object with a string type.", CLOSE_PROTOCOL
        )
    schema = frames.get(frame["type"])
    if schema is None:
        raise ProtocolError(
            "protocol_error", f"Unknown frame type {frame['type']!r}.", CLOSE_PROTOCOL
        )
    for field, (types, required) in schema.items():
        if field not in frame:
            if required:
                raise ProtocolError(
                    "protocol_error", f"{frame['type']} needs {field}.", CLOSE_PROTOCOL
                )
            continue
        value = frame[field]
        # bool is an int subclass: refuse true where a number is expected.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ProtocolError(
                "protocol_error", f"{frame['type']}.{field} has the wrong type.", CLOSE_PROTOCOL
            )
    ref = frame.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
        raise ProtocolError(
            "protocol_error", "ref must be a string of at most 64 chars.", CLOSE_PROTOCOL
        )
    for field in MAX_FIELD_CHARS.keys() & frame.keys():
        value = frame[field]
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS[field]:
            raise ProtocolError(
                "field_too_long",
                f"{frame['type']}.{field} is limited to {MAX_FIELD_CHARS[field]} characters.",
                CLOSE_PROTOCOL,
            )
    # PostgreSQL stores no NUL character in text: refused here, not a dropped socket later.
    if b"\\u0000" in raw and _contains_nul(frame):
        raise ProtocolError(
            "invalid_character", "NUL characters (\\u0000) are not accepted.", CLOSE_PROTOCOL
        )
    return frame


# Identifiers a frame carries, at most the length of the columns and keys they end up in.
MAX_FIELD_CHARS: dict[str, int] = {
    "write_key": 64,
    "token": 2048,
    "anonymous_id": 255,
    "customer_id": 255,
    "customer_hash": 128,
    "client_id": 64,
    "locale": 64,
}


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


class ChatSocket(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels ships no type information
    """What both sockets share: framing, errors, groups and exactly-once ordered delivery."""

    frames: dict[str, Schema] = {}
    include_internal = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' own loop (``await_many_dispatch``) waits on the client and the channel layer
        with ``asyncio.wait`` and makes a new task for every frame and every event. Here each
        source has one long-lived reader, and a lock runs handlers one at a time, in the order
        their messages came, as Channels does."""
        self.scope = scope
        self.base_send = send
        self.dispatch_lock = asyncio.Lock()
        self.writer = writer()
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        events: asyncio.Future[None] | None = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            events = asyncio.ensure_future(self._events())
        try:
            await self._pump(receive)
        except StopConsumer:
            pass
        finally:
            if events is not None:
                events.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await events

    async def _pump(self, source: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        while True:
            message = await source()
            async with self.dispatch_lock:
                await self.dispatch(message)

    async def _events(self) -> None:
        try:
            await self._pump(self.channel_receive)
        except (RedisError, OSError) as exc:
            logger.warning("chat socket closing, channel layer unavailable: %r", exc)
            with contextlib.suppress(Exception):
                await self.fail("unavailable", "Please reconnect.", CLOSE_UNAVAILABLE)
        except Exception:
            logger.exception("chat socket closing: an event failed")
            with contextlib.suppress(Exception):
                await self.fail("internal_error", "Please reconnect.", CLOSE_UNAVAILABLE)

    async def connect(self) -> None:
        self.groups_joined: set[str] = set()
        self.delivered: dict[int, int] = {}
        # The seqs this socket itself sent as message.new since the conversation was last
        # opened (``delivered`` is a cursor, which may be set from the database unsent).
        self.pushed: dict[int, set[int]] = {}
        self.closed = False
        await self.accept()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' own dispatch runs ``close_old_connections`` in the one thread-sensitive
        thread before *every* frame and event, which serializes all sockets of a process behind
        a thread hop; ``db()`` already does that upkeep in the threads that use connections."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        self.closed = True
        for group in list(self.groups_joined):
            with contextlib.suppress(RedisError, OSError):
                await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined.clear()

    async def send_json(self, payload: dict[str, Any]) -> None:
        if not self.closed:
            try:
                await self.send(text_data=orjson.dumps(payload).decode())
            except OSError as exc:
                if type(exc).__name__ != "ClientDisconnected":
                    raise
                # The client went away while we were sending (uvicorn's ClientDisconnected).
                # Raised out of a handler it would end this consumer silently, and
                # disconnect() would never run: an agent would stay online with a connection
                # counted for ever. Swallowed, the websocket.disconnect that follows runs it.
                self.closed = True

    async def fail(self, code: str, message: str, close_code: int) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})
        self.closed = True
        await self.close(code=close_code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return
        try:
            frame = parse_frame(text_data, bytes_data, self.frames)
        except ProtocolError as exc:
            await self.fail(exc.code, exc.message, exc.close_code)
            return
        ref = frame.get("ref")
        handler = getattr(self, "on_" + frame["type"].replace(".", "_"))
        bucket = getattr(self, "frame_bucket", None)
        wait = bucket.take() if bucket is not None else 0.0
        if wait:
            # Over the connection's frame rate: this frame is dropped, the socket stays open,
            # and the client is told when to send again (docs/chat-protocol.md, rate_limited).
            retry_ms = max(1, math.ceil(wait * 1000))
            limited: dict[str, Any] = {
                "type": "error",
                "code": "rate_limited",
                "message": "Too many frames; slow down.",
                "retry_after_ms": retry_ms,
            }
            if ref is not None:
                limited["ref"] = ref
            await self.send_json(limited)
            return
        try:
            await self.before_frame(frame)
            await handler(frame)
        except ProtocolError as exc:
            await self.fail(exc.code, exc.message, exc.close_code)
        except PermissionDenied as exc:
            await self.fail("forbidden", exc.message, CLOSE_FORBIDDEN)
        except ApplicationError as exc:
            error: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
            if isinstance(exc, RateLimited):
                error["retry_after_ms"] = exc.retry_after * 1000
            if ref is not None:
                error["ref"] = ref
            await self.send_json(error)
        except (RedisError, OSError) as exc:
            if type(exc).__name__ == "ClientDisconnected":  # uvicorn: the client went away
                return
            # The channel layer is down (Redis restarting): what was stored is stored; the
            # client reconnects, resumes from its last seq and re-sends unacknowledged frames.
            logger.warning("chat socket closing, channel layer unavailable: %r", exc)
            await self.fail("unavailable", "Please reconnect.", CLOSE_UNAVAILABLE)

    async def before_frame(self, frame: dict[str, Any]) -> None:
        return None

    async def join(self, *groups: str) -> None:
        for group in groups:
            if group not in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups_joined.add(group)

    async def leave(self, *groups: str) -> None:
        for group in groups:
            if group in self.groups_joined:
                self.groups_joined.discard(group)
                await self.channel_layer.group_discard(group, self.channel_name)

    async def fill(self, conversation_id: int, *, below: int | None = None) -> None:
        """Send the stored messages after the last one this socket sent (up to ``below``)."""
        after = self.delivered.get(conversation_id, 0)
        if below is not None and below <= after + 1:
            return
        missing = await db(selectors.messages_after)(
            conversation_id=conversation_id,
            after_seq=after,
            include_internal=self.include_internal,
        )
        for message in missing:
            if below is not None and message["seq"] >= below:
                break
            await self.send_json({"type": "message.new", "message": message})
            self.delivered[conversation_id] = message["seq"]
            self.remember_pushed(conversation_id, message["seq"])
        if below is not None:
            # Gaps that stay gaps are notes the shopper may not see (or a lost seq): move on.
            self.delivered[conversation_id] = max(self.delivered.get(conversation_id, 0), below - 1)

    async def deliver(self, message: dict[str, Any]) -> None:
        cid = message["conversation_id"]
        if cid not in self.delivered:
            return  # not subscribed (left the conversation): no stray frames
        if message.get("internal") and not self.include_internal:
            return
        seq = message["seq"]
        if seq <= self.delivered[cid]:
            return
        await self.fill(cid, below=seq)
        await self.send_json({"type": "message.new", "message": message})
        self.delivered[cid] = seq
        self.remember_pushed(cid, seq)

    def remember_pushed(self, conversation_id: int, seq: int) -> None:
        pushed = self.pushed.setdefault(conversation_id, set())
        pushed.add(seq)
        if len(pushed) > 1000:  # bounded: only a re-open racing recent pushes needs them
            self.pushed[conversation_id] = set(sorted(pushed)[-500:])

    async def chat_event(self, payload: dict[str, Any]) -> None:
        """Events fanned out by ``chat.services`` through the channel layer."""
        event = payload["event"]
        if event["type"] == "message.new":
            await self.deliver(event["message"])
            return
        await self.forward(event)

    async def forward(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def chat_ephemeral(self, payload: dict[str, Any]) -> None:
        """Typing and read receipts, relayed by consumers without touching the database."""
        await self.forward(payload["event"])

    async def acknowledge(
        self, conversation_id: int, frame: dict[str, Any], posted: services.PostedMessage
    ) -> None:
        """Ack a message this socket posted, after whatever of the conversation came before it."""
        seq = posted.message["seq"]
        await self.fill(conversation_id, below=seq)
        ack = {"type": "message.ack", "client_id": frame["client_id"], "message": posted.message}
        if frame.get("ref") is not None:
            ack["ref"] = frame["ref"]
        await self.send_json(ack)
        self.delivered[conversation_id] = max(self.delivered.get(conversation_id, 0), seq)

    async def on_ping(self, frame: dict[str, Any]) -> None:
        # Pings double as a sweep: anything lost while the channel layer was down arrives now.
        for cid in list(self.delivered):
            await self.fill(cid)
        await self.send_json({"type": "pong"})

    async def relay(self, group: str, event: dict[str, Any]) -> None:
        await self.channel_layer.group_send(group, {"type": "chat.ephemeral", "event": event})


class ShopperConsumer(ChatSocket):
    """``/ws/chat/``: one shopper, their current conversation."""

    frames = SHOPPER_FRAMES
    include_internal = False

    async def connect(self) -> None:
        self.identity: services.ChatIdentity | None = None
        self.conversation_id: int | None = None
        self.client_address = scope_client_address(self.scope)
        self.frame_bucket = TokenBucket(
            rate=settings.PATRON_CHAT_FRAMES_PER_SECOND, burst=settings.PATRON_CHAT_FRAMES_BURST
        )
        self.language = ""
        self.page: dict[str, str] = {}
        await super().connect()
        self.hello_timer = asyncio.get_running_loop().call_later(
            HELLO_TIMEOUT, lambda: asyncio.ensure_future(self._hello_timeout())
        )

    async def _hello_timeout(self) -> None:
        if self.identity is None and not self.closed:
            await self.fail("hello_required", "Send hello first.", CLOSE_HELLO)

    async def disconnect(self, code: int) -> None:
        self.hello_timer.cancel()
        await super().disconnect(code)

    async def before_frame(self, frame: dict[str, Any]) -> None:
        if self.identity is None and frame["type"] != "hello":
            raise ProtocolError("hello_required", "The first frame must be hello.", CLOSE_HELLO)

    @property
    def shopper(self) -> Any:
        assert self.identity is not None
        return self.identity.shopper

    async def subscribe(
        self, conversation_id: int, *, last_seq: int | None
    ) -> list[dict[str, Any]]:
        """Join the conversation's group, then read what the client has not seen."""
        await self.join(services.conversation_group(conversation_id))
        self.conversation_id = conversation_id
        history: list[dict[str, Any]] = await db(selectors.messages_after)(
            conversation_id=conversation_id, after_seq=last_seq or 0, include_internal=False
        )
        self.delivered[conversation_id] = max([m["seq"] for m in history] + [last_seq or 0])
        return history

    async def on_hello(self, frame: dict[str, Any]) -> None:
        if self.identity is not None:
            raise ProtocolError("protocol_error", "hello was already sent.", CLOSE_PROTOCOL)
        self.hello_timer.cancel()
        identity = await db(services.chat_identify)(
            write_key=frame["write_key"],
            # The handshake let any Origin through (chat/origins.py): the key decides here.
            origin=scope_origin(self.scope),
            token=frame.get("token"),
            anonymous_id=frame.get("anonymous_id"),
            customer_id=frame.get("customer_id"),
            customer_hash_value=frame.get("customer_hash"),
        )
        self.identity = identity
        self.language = (frame.get("locale") or "")[:2].lower()
        page = frame.get("page") or {}
        self.page = {
            "url": str(page.get("url") or "")[:2000],
            "title": str(page.get("title") or "")[:300],
        }
        conversation = await db(services.conversation_for_shopper)(
            shopper=identity.shopper, conversation_id=frame.get("conversation_id")
        )
        messages: list[dict[str, Any]] = []
        conversation_view = None
        settings_row = await db(services.chat_settings_get)()
        open_now = await db(services.business_hours_open)()
        if conversation is not None:
            messages = await self.subscribe(conversation.pk, last_seq=frame.get("last_seq"))
            conversation = await db(services.conversation_for_shopper)(
                shopper=identity.shopper, conversation_id=conversation.pk
            )
            conversation_view = await db(selectors.conversation_shopper_view)(
                conversation, business_hours_open=open_now
            )
            if self.page["url"]:
                await db(services.conversation_page_view)(
                    shopper=identity.shopper, conversation_id=conversation.pk, **self.page
                )
        await self.send_json(
            {
                "type": "welcome",
                "token": identity.token,
                "shopper": {"name": identity.shopper.first_name, "identified": identity.identified},
                "conversation": conversation_view,
                "messages": messages,
                "settings": {
                    "greeting": settings_row.greeting,
                    "business_hours_open": open_now,
                    "languages": settings_row.languages,
                },
            }
        )

    async def on_message_send(self, frame: dict[str, Any]) -> None:
        cid = self.conversation_id
        if cid is not None and cid in self.delivered:
            # The hot path: an open conversation this socket follows, through the writer.
            request = services.post_request(
                conversation_id=cid,
                author_kind=services.Author.SHOPPER,
                body=frame["body"],
                client_id=frame["client_id"],
                shopper_id=self.shopper.pk,
            )
            try:
                posted = await self.writer.post(request, sender=self.channel_name)
            except Conflict:
                pass  # resolved: shopper_message_post below reopens it
            else:
                await self.acknowledge(cid, frame, posted)
                if posted.created and posted.state == services.State.BOT:
                    await db(services.bot_respond)(conversation_id=cid, text=request.body)
                return
        await self.limit_new_conversation()
        result = await db(services.shopper_message_post)(
            shopper=self.shopper,
            body=frame["body"],
            client_id=frame["client_id"],
            conversation_id=self.conversation_id,
            language=self.language,
            page_url=self.page.get("url", ""),
            page_title=self.page.get("title", ""),
        )
        cid = result.conversation_id
        joined_now = cid not in self.delivered
        if joined_now:
            # The first message started the conversation: subscribe, and catch up on what was
            # said meanwhile (the bot may already have answered) after the ack.
            await self.join(services.conversation_group(cid))
            self.conversation_id = cid
            self.delivered[cid] = 0
        await self.acknowledge(cid, frame, result.posted)
        if result.conversation_started:
            await self.fill(cid)
        if joined_now:
            # What the conversation's group heard before this socket joined it (the bot may
            # have handed off already): the offline prompt, and the state as it is now.
            if result.offline_prompt is not None:
                await self.send_json(result.offline_prompt)
            view = await db(self._view)(cid)
            await self.send_json({"type": "conversation.state", "conversation": view})

    async def on_typing(self, frame: dict[str, Any]) -> None:
        if self.conversation_id is None:
            return
        await self.relay(
            services.staff_group(self.conversation_id),
            {
                "type": "typing",
                "conversation_id": self.conversation_id,
                "author": {"kind": "shopper", "name": self.shopper.name or "Shopper", "id": None},
                "active": frame["active"],
            },
        )

    async def on_read(self, frame: dict[str, Any]) -> None:
        if self.conversation_id is None:
            return
        await self.relay(
            services.staff_group(self.conversation_id),
            {
                "type": "read",
                "conversation_id": self.conversation_id,
                "reader": "shopper",
                "seq": frame["seq"],
            },
        )

    async def limit_new_conversation(self) -> None:
        """New conversations per client address (``PATRON_RATE_LIMITS["chat_conversation"]``).

        Counted when this socket has no conversation yet, so the frame may start one."""
        if self.conversation_id is None:
            await db(rate_limit_hit)(scope="chat_conversation", key=(self.client_address,))

    async def limit_email(self, recipient: str | None) -> None:
        """Emails to a typed address: per client address, and per recipient whoever asks."""
        await db(rate_limit_hit)(scope="email_sender", key=(self.client_address,))
        if recipient:
            await db(rate_limit_hit)(scope="email_recipient", key=(recipient.strip().lower(),))

    async def on_handoff_request(self, frame: dict[str, Any]) -> None:
        await self.limit_new_conversation()
        handoff = await db(services.shopper_hand_off_request)(
            shopper=self.shopper, conversation_id=self.conversation_id, language=self.language
        )
        conversation = handoff.conversation
        joined_now = conversation.pk not in self.delivered
        if joined_now:
            await self.join(services.conversation_group(conversation.pk))
            self.conversation_id = conversation.pk
            self.delivered[conversation.pk] = 0
        await self.fill(conversation.pk)
        if joined_now and handoff.offline_prompt is not None:
            # The hand-off started the conversation and told its group before this socket
            # could join it: send the prompt here, after the offline message it follows.
            await self.send_json(handoff.offline_prompt)
        view = await db(self._view)(conversation.pk)
        await self.send_json({"type": "conversation.state", "conversation": view})

    def _view(self, conversation_id: int) -> dict[str, Any]:
        conversation = services.conversation_for_shopper(
            shopper=self.shopper, conversation_id=conversation_id
        )
        assert conversation is not None
        return selectors.conversation_shopper_view(
            conversation, business_hours_open=services.business_hours_open()
        )

    async def on_page_view(self, frame: dict[str, Any]) -> None:
        self.page = {"url": frame["url"][:2000], "title": (frame.get("title") or "")[:300]}
        if self.conversation_id is not None:
            await db(services.conversation_page_view)(
                shopper=self.shopper, conversation_id=self.conversation_id, **self.page
            )

    async def on_csat_submit(self, frame: dict[str, Any]) -> None:
        if self.conversation_id is None:
            raise Conflict("There is no conversation to rate.", code="conflict")
        await db(services.csat_record)(
            shopper=self.shopper,
            conversation_id=self.conversation_id,
            rating=frame["rating"],
            comment=frame.get("comment") or "",
        )

    async def on_transcript_request(self, frame: dict[str, Any]) -> None:
        if self.conversation_id is None:
            raise Conflict("There is no conversation yet.", code="conflict")
        await self.limit_email(frame.get("email"))
        address = await db(services.transcript_send)(
            conversation_id=self.conversation_id, email=frame.get("email"), shopper=self.shopper
        )
        await self.send_json(
            {"type": "transcript.queued", "conversation_id": self.conversation_id, "email": address}
        )

    async def on_offline_submit(self, frame: dict[str, Any]) -> None:
        await self.limit_new_conversation()
        await self.limit_email(frame["email"])
        posted = await db(services.offline_message_leave)(
            shopper=self.shopper,
            conversation_id=self.conversation_id,
            email=frame["email"],
            body=frame["body"],
            client_id=frame.get("client_id"),
        )
        cid = posted.message["conversation_id"]
        if cid not in self.delivered:
            await self.join(services.conversation_group(cid))
            self.conversation_id = cid
            self.delivered[cid] = 0
        await self.fill(cid, below=posted.message["seq"])
        await self.send_json(
            {"type": "message.ack", "client_id": frame.get("client_id"), "message": posted.message}
        )
        self.delivered[cid] = max(self.delivered[cid], posted.message["seq"])

    async def forward(self, event: dict[str, Any]) -> None:
        if event.get("audience") not in (None, "shopper"):
            return
        event = {k: v for k, v in event.items() if k != "audience"}
        await self.send_json(event)


class AgentConsumer(ChatSocket):
    """``/ws/console/``: a staff user with ``chat.answer_conversations``.

    The agent's rights are read again from the database every
    ``PATRON_AGENT_RECHECK_SECONDS`` while the socket is open: an agent deactivated, deleted or
    removed from the agent group (in the admin, by a management command, by any process) is
    closed with 4003 within that time, and a change of their personal-data permission applies
    to the frames sent after it.
    """

    frames = AGENT_FRAMES
    include_internal = True

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not await db(selectors.is_agent)(user):
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        self.user = user
        self.sees_all = await db(selectors.sees_all_personal_data)(user)
        self.opened: set[int] = set()
        self.online = False
        await super().connect()
        self.rights_watch = asyncio.ensure_future(self._watch_rights())
        await self.join(services.CONSOLE_GROUP, services.agent_group(user.pk))
        await db(services.agent_connect)(user=user)
        self.online = True
        for cid in await db(selectors.conversations_for_agent)(agent_id=user.pk):
            await self.subscribe(cid, history_after=None)
        await self.send_json(
            await db(selectors.inbox_snapshot)(
                view="unassigned", agent_id=user.pk, personal=self.sees_all
            )
        )
        await self.send_json(
            {"type": "canned.list", "responses": await db(selectors.canned_responses)()}
        )

    async def disconnect(self, code: int) -> None:
        watch = getattr(self, "rights_watch", None)
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
        if getattr(self, "online", False):
            self.online = False
            await db(services.agent_disconnect)(user=self.user)
        if hasattr(self, "groups_joined"):
            await super().disconnect(code)

    async def _watch_rights(self) -> None:
        """Close the socket once the user is no longer an agent (see the class docstring).

        One primary-key read of the user and their permissions per interval and socket; a
        database error skips a round rather than closing a working console.
        """
        interval = settings.PATRON_AGENT_RECHECK_SECONDS
        while not self.closed:
            await asyncio.sleep(interval)
            try:
                allowed, sees_all = await db(selectors.agent_rights)(user_id=self.user.pk)
            except DatabaseError as exc:
                logger.warning("console: could not re-check agent %s: %r", self.user.pk, exc)
                continue
            if allowed:
                self.sees_all = sees_all
                continue
            async with self.dispatch_lock:
                if not self.closed:
                    logger.info("console: agent %s lost their rights, closing", self.user.pk)
                    with contextlib.suppress(RedisError, OSError):
                        await self.fail(
                            "forbidden", "Your agent access was withdrawn.", CLOSE_FORBIDDEN
                        )
            return

    async def before_frame(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "ping":
            await db(services.agent_heartbeat)(user=self.user)

    def _last_seq(self, conversation_id: int) -> int:
        return int(Conversation.objects.values_list("last_seq", flat=True).get(pk=conversation_id))

    async def subscribe(
        self, conversation_id: int, *, history_after: int | None
    ) -> list[dict[str, Any]]:
        await self.join(
            services.conversation_group(conversation_id), services.staff_group(conversation_id)
        )
        if history_after is None:
            if conversation_id not in self.delivered:
                self.delivered[conversation_id] = await db(self._last_seq)(conversation_id)
            return []
        history: list[dict[str, Any]] = await db(selectors.messages_after)(
            conversation_id=conversation_id, after_seq=history_after, include_internal=True
        )
        self.delivered[conversation_id] = max(
            [m["seq"] for m in history] + [history_after, self.delivered.get(conversation_id, 0)]
        )
        return history

    async def unsubscribe(self, conversation_id: int) -> None:
        await self.leave(
            services.conversation_group(conversation_id), services.staff_group(conversation_id)
        )
        self.delivered.pop(conversation_id, None)

    def _conversation_exists(self, conversation_id: int) -> bool:
        return Conversation.objects.filter(pk=conversation_id).exists()

    async def on_inbox_query(self, frame: dict[str, Any]) -> None:
        view = frame["view"]
        if view not in ("unassigned", "mine", "all"):
            raise ValidationError("view must be unassigned, mine or all")
        limit = min(max(frame.get("limit") or 50, 1), 200)
        snapshot = await db(selectors.inbox_snapshot)(
            view=view,
            agent_id=self.user.pk,
            state=frame.get("state"),
            q=frame.get("q"),
            limit=limit,
            personal=self.sees_all,
        )
        if frame.get("ref") is not None:
            snapshot["ref"] = frame["ref"]
        await self.send_json(snapshot)

    async def on_conversation_open(self, frame: dict[str, Any]) -> None:
        cid = frame["conversation_id"]
        if not await db(self._conversation_exists)(cid):
            raise NotFound("No such conversation.")
        self.opened.add(cid)
        # Re-opening resends from last_seq; drop the socket's cursor so nothing is skipped.
        last_seq = frame.get("last_seq") or 0
        self.delivered.pop(cid, None)
        messages = await self.subscribe(cid, history_after=last_seq)
        pushed = self.pushed.pop(cid, set())
        if frame.get("last_seq") is not None:
            # What this socket pushed after the client's last_seq reaches the client ahead of
            # this answer, on the same socket: sending it again would show it twice.
            messages = [m for m in messages if m["seq"] not in pushed]
        summary = selectors.summary_for_viewer(
            await db(selectors.summary_by_id)(cid), viewer_id=self.user.pk, sees_all=self.sees_all
        )
        agent = summary.get("assigned_agent") or {}
        context = selectors.context_for_viewer(
            await db(self._context)(cid),
            personal=selectors.personal_data_visible(
                viewer_id=self.user.pk, sees_all=self.sees_all, assigned_agent_id=agent.get("id")
            ),
        )
        opened = {
            "type": "conversation.opened",
            "conversation": summary,
            "messages": messages,
            "context": context,
        }
        if frame.get("ref") is not None:
            opened["ref"] = frame["ref"]
        await self.send_json(opened)

    def _context(self, conversation_id: int) -> list[dict[str, Any]]:
        conversation = Conversation.objects.select_related("shopper").get(pk=conversation_id)
        return selectors.conversation_context(conversation)

    async def on_conversation_leave(self, frame: dict[str, Any]) -> None:
        cid = frame["conversation_id"]
        self.opened.discard(cid)
        mine = await db(selectors.conversations_for_agent)(agent_id=self.user.pk)
        if cid not in mine:
            await self.unsubscribe(cid)

    async def on_message_send(self, frame: dict[str, Any]) -> None:
        cid = frame["conversation_id"]
        internal = bool(frame.get("internal", False))
        if cid in self.delivered:
            # The hot path, through the writer: a note, or a reply in a live chat assigned to
            # this agent (anything else goes to agent_message_post, which may assign it).
            # The agent permission was checked at connect, as agent_message_post's check on
            # this cached user would.
            request = services.post_request(
                conversation_id=cid,
                author_kind=services.Author.AGENT,
                body=frame["body"],
                agent=self.user,
                client_id=frame["client_id"],
                internal=internal,
                states=None if internal else (services.State.ASSIGNED,),
                holder_id=None if internal else self.user.pk,
                # A reply in an email follow-up is emailed, in the reply's transaction: that
                # is agent_message_post's, not a batch's.
                channel=None if internal else Conversation.Channel.CHAT,
            )
            try:
                posted = await self.writer.post(request, sender=self.channel_name)
            except Conflict:
                pass
            else:
                await self.acknowledge(cid, frame, posted)
                return
        posted = await db(services.agent_message_post)(
            agent=self.user,
            conversation_id=cid,
            body=frame["body"],
            client_id=frame["client_id"],
            internal=internal,
        )
        if cid not in self.delivered:
            await self.subscribe(cid, history_after=None)
        await self.acknowledge(cid, frame, posted)

    async def on_typing(self, frame: dict[str, Any]) -> None:
        cid = frame["conversation_id"]
        if cid not in self.delivered:
            return
        await self.relay(
            services.conversation_group(cid),
            {
                "type": "typing",
                "conversation_id": cid,
                "author": {
                    "kind": "agent",
                    "name": selectors.agent_name(self.user),
                    "id": self.user.pk,
                },
                "active": frame["active"],
            },
        )

    async def on_read(self, frame: dict[str, Any]) -> None:
        cid = frame["conversation_id"]
        if cid not in self.delivered:
            return
        await self.relay(
            services.conversation_group(cid),
            {"type": "read", "conversation_id": cid, "reader": "agent", "seq": frame["seq"]},
        )

    def _user(self, user_id: int | None) -> Any:
        if user_id is None:
            return self.user
        agent = selectors.agents_queryset().filter(pk=user_id).first()
        if agent is None:
            raise NotFound("No such agent.")
        return agent

    async def on_conversation_assign(self, frame: dict[str, Any]) -> None:
        agent = await db(self._user)(frame.get("agent_id"))
        await db(services.conversation_assign)(
            conversation_id=frame["conversation_id"], agent=agent, by=self.user
        )

    async def on_conversation_transfer(self, frame: dict[str, Any]) -> None:
        agent = await db(self._user)(frame["agent_id"])
        await db(services.conversation_transfer)(
            conversation_id=frame["conversation_id"], to_agent=agent, by=self.user
        )

    async def on_conversation_resolve(self, frame: dict[str, Any]) -> None:
        await db(services.conversation_resolve)(
            conversation_id=frame["conversation_id"], by=self.user
        )

    async def on_transcript_send(self, frame: dict[str, Any]) -> None:
        address = await db(services.transcript_send)(
            conversation_id=frame["conversation_id"], email=frame.get("email")
        )
        await self.send_json(
            {
                "type": "transcript.queued",
                "conversation_id": frame["conversation_id"],
                "email": address,
            }
        )

    async def on_presence_set(self, frame: dict[str, Any]) -> None:
        await db(services.agent_presence_set)(user=self.user, status=frame["status"])

    async def on_canned_list(self, frame: dict[str, Any]) -> None:
        await self.send_json(
            {"type": "canned.list", "responses": await db(selectors.canned_responses)()}
        )

    async def forward(self, event: dict[str, Any]) -> None:
        if event.get("audience") == "shopper":
            return
        if event["type"] == "assignment":
            cid = event["conversation_id"]
            agent = event.get("agent")
            if agent is not None and agent.get("id") == self.user.pk:
                await self.subscribe(cid, history_after=None)
            elif cid not in self.opened:
                await self.unsubscribe(cid)
        if event["type"] == "typing" and (event.get("author") or {}).get("id") == self.user.pk:
            return
        summary = event.get("conversation")
        if isinstance(summary, dict) and "shopper" in summary:
            event = {
                **event,
                "conversation": selectors.summary_for_viewer(
                    summary, viewer_id=self.user.pk, sees_all=self.sees_all
                ),
            }
        await self.send_json(event)
