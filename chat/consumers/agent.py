"""The agent's console socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.utils.dateparse import parse_datetime
from redis.exceptions import RedisError

from chat import selectors, services
from chat.consumers.base import ChatSocket
from chat.consumers.frames import AGENT_FRAMES, CLOSE_FORBIDDEN, ProtocolError, parse_resume
from chat.models import Conversation
from chat.threads import db
from core.checkpoints import checkpoint
from core.exceptions import Conflict, NotFound, ValidationError

logger = logging.getLogger(__name__)


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
        await db(services.agent_connect)(user=user, connection_id=self.channel_name)
        self.online = True
        for cid in await db(selectors.conversations_for_agent)(agent_id=user.pk):
            await self.subscribe(cid, history_after=None)
        view = await db(selectors.inbox_default_view)(agent_id=user.pk)
        await self.send_json(
            await db(selectors.inbox_snapshot)(view=view, agent_id=user.pk, personal=self.sees_all)
        )
        await self.send_json(
            {"type": "canned.list", "responses": await db(selectors.canned_responses)()}
        )
        await self.resume()

    async def resume(self) -> None:
        """A reconnecting console names what it had open and the last seq it saw there
        (``?resume=42:17``): each is opened as by ``conversation.open`` with that ``last_seq``
        before this socket hands over any live event, so the missed messages come first and
        in order. A conversation that no longer exists is skipped."""
        try:
            pairs = parse_resume(self.scope.get("query_string") or b"")
        except ProtocolError as exc:
            await self.fail(exc.code, exc.message, exc.close_code)
            return
        for cid, last_seq in pairs:
            with contextlib.suppress(NotFound):
                await self.open_conversation(cid, last_seq=last_seq)

    async def disconnect(self, code: int) -> None:
        watch = getattr(self, "rights_watch", None)
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
        if getattr(self, "online", False):
            self.online = False
            try:
                await db(services.agent_disconnect)(user=self.user, connection_id=self.channel_name)
            except RedisError as exc:  # its heartbeat ages out instead (chat.presence)
                logger.warning("console: agent %s presence not cleared: %r", self.user.pk, exc)
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
            await db(services.agent_heartbeat)(user=self.user, connection_id=self.channel_name)

    def _last_seq(self, conversation_id: int) -> int:
        return int(Conversation.objects.values_list("last_seq", flat=True).get(pk=conversation_id))

    async def subscribe(
        self, conversation_id: int, *, history_after: int | None, latest: bool = False
    ) -> tuple[list[dict[str, Any]], bool]:
        """Join the conversation's groups, then read what the client has not seen: the first
        page after ``history_after`` and whether more follow (``fill`` sends them); with
        ``latest``, the newest page; with neither, nothing (live events from now on)."""
        await self.join(
            services.conversation_group(conversation_id), services.staff_group(conversation_id)
        )
        if history_after is None and not latest:
            if conversation_id not in self.delivered:
                self.delivered[conversation_id] = await db(self._last_seq)(conversation_id)
            return [], False
        # Subscribed first, then the history: see ShopperConsumer.subscribe.
        await checkpoint("chat.subscribed")
        more = False
        if latest:
            history: list[dict[str, Any]] = await db(selectors.messages_latest)(
                conversation_id=conversation_id, include_internal=True
            )
        else:
            history, more = await db(selectors.messages_page)(
                conversation_id=conversation_id, after_seq=history_after or 0, include_internal=True
            )
        self.delivered[conversation_id] = max(
            [m["seq"] for m in history]
            + [history_after or 0, self.delivered.get(conversation_id, 0)]
        )
        return history, more

    async def unsubscribe(self, conversation_id: int) -> None:
        await self.leave(
            services.conversation_group(conversation_id), services.staff_group(conversation_id)
        )
        self.delivered.pop(conversation_id, None)

    def _conversation_exists(self, conversation_id: int) -> bool:
        return Conversation.objects.filter(pk=conversation_id).exists()

    async def on_inbox_query(self, frame: dict[str, Any]) -> None:
        view = frame["view"]
        if view not in selectors.INBOX_VIEWS:
            raise ValidationError("view must be unassigned, mine, all or snoozed")
        limit = min(max(frame.get("limit") or 50, 1), 200)
        label = frame.get("label")
        snapshot = await db(selectors.inbox_snapshot)(
            view=view,
            agent_id=self.user.pk,
            state=frame.get("state"),
            q=frame.get("q"),
            limit=limit,
            personal=self.sees_all,
            label=services.label_clean(label) if label else None,
        )
        if frame.get("ref") is not None:
            snapshot["ref"] = frame["ref"]
        await self.send_json(snapshot)

    async def on_conversation_open(self, frame: dict[str, Any]) -> None:
        await self.open_conversation(
            frame["conversation_id"], last_seq=frame.get("last_seq"), ref=frame.get("ref")
        )

    async def open_conversation(
        self, cid: int, *, last_seq: int | None, ref: str | None = None
    ) -> None:
        """Subscribe to ``cid`` and send ``conversation.opened`` with the messages after
        ``last_seq`` (the newest page without it), then, when they were more than a page, the
        rest as ``message.new`` in seq order, all before any live event of the conversation
        (handlers run one at a time: live events wait). Raises ``NotFound``."""
        if not await db(self._conversation_exists)(cid):
            raise NotFound("No such conversation.")
        self.opened.add(cid)
        # Re-opening resends from last_seq; drop the socket's cursor so nothing is skipped.
        self.delivered.pop(cid, None)
        messages, more = await self.subscribe(cid, history_after=last_seq, latest=last_seq is None)
        pushed = self.pushed.pop(cid, set())
        if last_seq is not None:
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
            "has_more": more,
            "context": context,
        }
        if ref is not None:
            opened["ref"] = ref
        await self.send_json(opened)
        if more:
            await self.fill(cid, skip=pushed)

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
            # The hot path, through the writer; what the writer may not store (services.
            # post_rules) comes back as Conflict and goes to agent_message_post. The agent
            # permission was checked at connect, as agent_message_post's check on this cached
            # user would.
            request = services.post_request(
                conversation_id=cid,
                author_kind=services.Author.AGENT,
                body=frame["body"],
                agent=self.user,
                client_id=frame["client_id"],
                internal=internal,
                writer=True,
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
        await db(services.transcript_agent_rate_limit)(
            agent_id=self.user.pk, email=frame.get("email")
        )
        address = await db(services.transcript_send)(
            conversation_id=frame["conversation_id"], email=frame.get("email")
        )
        await self.send_json(
            {
                "type": "transcript.queued",
                "conversation_id": frame["conversation_id"],
                "email": address,
                **self.ref_of(frame),
            }
        )

    async def on_conversation_label_add(self, frame: dict[str, Any]) -> None:
        await db(services.conversation_label_add)(
            conversation_id=frame["conversation_id"], label=frame["label"], by=self.user
        )

    async def on_conversation_label_remove(self, frame: dict[str, Any]) -> None:
        await db(services.conversation_label_remove)(
            conversation_id=frame["conversation_id"], label=frame["label"], by=self.user
        )

    async def on_conversation_snooze(self, frame: dict[str, Any]) -> None:
        until = None
        if frame.get("until") is not None:
            try:
                until = parse_datetime(frame["until"])
            except ValueError:  # well formed but impossible: month 13
                until = None
            if until is None:
                raise ValidationError("until must be an ISO 8601 time with its timezone")
        await db(services.conversation_snooze)(
            conversation_id=frame["conversation_id"], until=until, by=self.user
        )

    async def on_conversation_unsnooze(self, frame: dict[str, Any]) -> None:
        await db(services.conversation_unsnooze)(
            conversation_id=frame["conversation_id"], by=self.user
        )

    async def on_presence_set(self, frame: dict[str, Any]) -> None:
        await db(services.agent_presence_set)(user=self.user, status=frame["status"])

    async def on_canned_list(self, frame: dict[str, Any]) -> None:
        responses = await db(selectors.canned_responses)()
        await self.send_json({"type": "canned.list", "responses": responses, **self.ref_of(frame)})

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
