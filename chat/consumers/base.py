"""What both chat sockets share: the hello, frame limits, group membership, event delivery."""

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
from redis.exceptions import RedisError

from chat import selectors, services
from chat.consumers.frames import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAVAILABLE,
    ProtocolError,
    Schema,
    parse_frame,
)
from chat.threads import db
from chat.writer import writer
from core.exceptions import ApplicationError, PermissionDenied
from core.ratelimit import RateLimited

logger = logging.getLogger(__name__)


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
        self.accepted = False
        if self.channel_layer is not None:
            try:
                self.channel_name = await self.channel_layer.new_channel()
            except (RedisError, OSError) as exc:
                logger.warning("chat socket refused, channel layer unavailable: %r", exc)
                await self._unavailable(receive, send)
                return
            self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            events = asyncio.ensure_future(self._events())
        try:
            await self._pump(receive)
        except StopConsumer:
            pass
        except (RedisError, OSError) as exc:
            if type(exc).__name__ == "ClientDisconnected":  # uvicorn: the client went away
                return
            # Redis went away while the socket was being set up (joining its groups, marking
            # an agent present): the documented answer, one log line, no traceback.
            logger.warning("chat socket closing, channel layer unavailable: %r", exc)
            if not self.accepted:
                await self._unavailable(None, send)
            else:
                with contextlib.suppress(Exception):
                    await self.fail("unavailable", "Please reconnect.", CLOSE_UNAVAILABLE)
        finally:
            if events is not None:
                events.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await events

    @staticmethod
    async def _unavailable(
        receive: Callable[[], Awaitable[dict[str, Any]]] | None, send: Any
    ) -> None:
        """Answer a handshake while Redis is down (docs/chat-protocol.md): accept, send
        ``error`` ``unavailable``, close 1011; the client reconnects with backoff."""
        if receive is not None:
            message = await receive()
            if message["type"] != "websocket.connect":
                return
        frame = {"type": "error", "code": "unavailable", "message": "Please reconnect."}
        with contextlib.suppress(OSError):
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": orjson.dumps(frame).decode()})
            await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})

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
        self.accepted = True

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

    async def fill(
        self, conversation_id: int, *, below: int | None = None, skip: set[int] | None = None
    ) -> None:
        """Send the stored messages after the last one this socket sent (up to ``below``), as
        ``message.new``, in seq order, page by page: however many there are, none is skipped.
        ``skip``: seqs the client already has from this socket."""
        after = self.delivered.get(conversation_id, 0)
        if below is not None and below <= after + 1:
            return
        more = True
        while more and not self.closed:
            missing, more = await db(selectors.messages_page)(
                conversation_id=conversation_id,
                after_seq=after,
                before_seq=below,
                include_internal=self.include_internal,
            )
            for message in missing:
                after = message["seq"]
                if skip is None or after not in skip:
                    await self.send_json({"type": "message.new", "message": message})
                    self.remember_pushed(conversation_id, after)
                self.delivered[conversation_id] = after
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
        """Typing and read receipts, relayed by consumers without touching the database; the
        socket that sent one does not hear it back (docs/chat-protocol.md: "others get")."""
        if payload.get("sender") == self.channel_name:
            return
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
        await self.send_json({"type": "pong", **self.ref_of(frame)})

    @staticmethod
    def ref_of(frame: dict[str, Any]) -> dict[str, str]:
        """``{"ref": …}`` for the direct answer to ``frame`` when the client sent a ref."""
        ref = frame.get("ref")
        return {"ref": ref} if ref is not None else {}

    async def relay(self, group: str, event: dict[str, Any]) -> None:
        await self.channel_layer.group_send(
            group, {"type": "chat.ephemeral", "event": event, "sender": self.channel_name}
        )
