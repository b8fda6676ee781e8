"""The shopper's chat socket."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.utils import translation

from chat import selectors, services
from chat.consumers.base import ChatSocket
from chat.consumers.frames import (
    CLOSE_HELLO,
    CLOSE_PROTOCOL,
    SHOPPER_FRAMES,
    ProtocolError,
)
from chat.origins import scope_host, scope_origin
from chat.threads import db
from core.checkpoints import checkpoint
from core.exceptions import Conflict
from core.ratelimit import TokenBucket, rate_limit_hit, scope_client_address


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
            settings.PATRON_CHAT_HELLO_TIMEOUT_MS / 1000,
            lambda: asyncio.ensure_future(self._hello_timeout()),
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
    ) -> tuple[list[dict[str, Any]], bool]:
        """Join the conversation's group, then read what the client has not seen: the first
        page after ``last_seq`` and whether more follow (``fill`` sends them), or, without
        ``last_seq``, the newest page.

        In this order, a message stored meanwhile is in the history, or its event reaches the
        socket (and ``delivered`` drops the copy): never neither. The checkpoint between the
        two steps lets a system test post there (tests/system/test_chat_protocol_rules.py).
        """
        await self.join(services.conversation_group(conversation_id))
        self.conversation_id = conversation_id
        await checkpoint("chat.subscribed")
        more = False
        if last_seq is None:
            history: list[dict[str, Any]] = await db(selectors.messages_latest)(
                conversation_id=conversation_id, include_internal=False
            )
        else:
            history, more = await db(selectors.messages_page)(
                conversation_id=conversation_id, after_seq=last_seq, include_internal=False
            )
        self.delivered[conversation_id] = max([m["seq"] for m in history] + [last_seq or 0])
        return history, more

    async def on_hello(self, frame: dict[str, Any]) -> None:
        if self.identity is not None:
            raise ProtocolError("protocol_error", "hello was already sent.", CLOSE_PROTOCOL)
        self.hello_timer.cancel()
        identity = await db(services.chat_identify)(
            write_key=frame["write_key"],
            # The handshake let any Origin through (chat/origins.py): the key decides here.
            origin=scope_origin(self.scope),
            host=scope_host(self.scope),
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
        # This socket's errors and notices speak the conversation's language, else the page's
        # (chat.services.language); the activation lasts for the socket's task.
        translation.activate(
            services.language_normalise(conversation.language if conversation else "")
            or services.language_normalise(self.language)
            or await db(services.language_fallback)()
        )
        messages: list[dict[str, Any]] = []
        more = False
        conversation_view = None
        settings_row = await db(services.chat_settings_get)()
        open_now = await db(services.business_hours_open)()
        if conversation is not None:
            messages, more = await self.subscribe(conversation.pk, last_seq=frame.get("last_seq"))
            conversation = await db(services.conversation_for_shopper)(
                shopper=identity.shopper, conversation_id=conversation.pk
            )
            conversation_view = await db(services.conversation_shopper_state)(conversation)
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
                "has_more": more,
                "settings": {
                    "greeting": await db(services.translate)(
                        settings_row.greeting, language=translation.get_language() or ""
                    ),
                    "business_hours_open": open_now,
                    "languages": settings_row.languages,
                },
            }
        )
        if more and conversation is not None:
            # The rest of what the client missed, page by page, before any live message (the
            # dispatch lock holds live events until this handler returns).
            await self.fill(conversation.pk)
        if conversation is not None:
            # Still in the queue (a reloaded page, a reconnect): the place in it, now.
            await self.send_queue_position(conversation.pk)

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
                writer=True,
            )
            try:
                posted = await self.writer.post(request, sender=self.channel_name)
            except Conflict:
                pass  # resolved: shopper_message_post below reopens it
            else:
                await self.acknowledge(cid, frame, posted)
                if services.bot_answers(posted):
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
            # The queue moved (this message queued it) before this socket joined.
            await self.send_queue_position(cid)

    async def send_queue_position(self, conversation_id: int) -> None:
        """Send ``queue.position`` when the conversation waits in the live queue."""
        frame = await db(services.queue_position_now)(conversation_id)
        if frame is not None:
            await self.send_json(frame)

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
        if not joined_now:
            return  # the socket follows the conversation: its group's events tell it the rest
        if handoff.offline_prompt is not None:
            # The hand-off started the conversation and told its group before this socket
            # could join it: send the prompt here, after the offline message it follows.
            await self.send_json(handoff.offline_prompt)
        view = await db(self._view)(conversation.pk)
        await self.send_json({"type": "conversation.state", "conversation": view})
        if joined_now:
            await self.send_queue_position(conversation.pk)

    def _view(self, conversation_id: int) -> dict[str, Any]:
        conversation = services.conversation_for_shopper(
            shopper=self.shopper, conversation_id=conversation_id
        )
        assert conversation is not None
        return services.conversation_shopper_state(conversation)

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
        queued = {"type": "transcript.queued", "conversation_id": self.conversation_id}
        await self.send_json({**queued, "email": address, **self.ref_of(frame)})

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
