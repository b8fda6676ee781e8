"""Group commit for the messages sockets post: many messages, one statement, one publish.

A socket's ``message.send`` hands its checked ``PostRequest`` to the ``MessageWriter`` of its
event loop and awaits the result. The writer stores whatever is waiting as one batch
(``services.messages_store``: one round trip, one transaction, one WAL flush) in a database
thread, then publishes the new messages' events to the channel layer in one pipelined write, and
only then answers the sockets, so an acknowledged message has been both stored and sent. What
follows a message in the same transaction (``services.message_posted``: an emailed reply) is
stored with it. With
nothing in flight a message is written at once (a batch of one); under load, what arrives while
batches are in flight waits for the next one, so batches grow with the load and the cost per
message falls as it rises.

What a batch does for each message is exactly what ``services.message_post`` does for one: the
same statement, the same rejection rules (``services.post_rejected``) and the same follow-ups
(``services.message_posted``). A batch that fails as a whole (a deadlock, a constraint) is
retried one message at a time, so one bad message fails alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from typing import Any

from channels.layers import get_channel_layer
from django.db import DatabaseError, transaction
from django.utils import timezone

from chat import services
from chat.threads import executor, maintain_connections
from core.exceptions import ApplicationError

logger = logging.getLogger(__name__)

# Batches in flight per process: two keep PostgreSQL busy while the previous batch's events go
# out; more make smaller batches for no gain (bench/chat.py).
MAX_IN_FLIGHT = 2
MAX_BATCH = 500

Outcome = services.PostedMessage | BaseException


def _outcomes(
    requests: list[services.PostRequest],
    rows: list[services.StoredRow | None],
    now: dt.datetime,
) -> list[Outcome]:
    """Each request's result, as ``services.message_post`` would return or raise it."""
    outcomes: list[Outcome] = []
    for request, row in zip(requests, rows, strict=True):
        try:
            if row is None:
                outcomes.append(services.post_rejected(request))
                continue
        except ApplicationError as exc:  # reported to the socket that sent it
            outcomes.append(exc)
            continue
        posted = services.PostedMessage(
            message=services.message_dict(request, row, now=now), created=True, state=row[2]
        )
        services.message_posted(request, posted, channel=row[3])
        outcomes.append(posted)
    return outcomes


def _store(requests: list[services.PostRequest]) -> list[Outcome]:
    """In a database thread: store ``requests`` and what follows them in one transaction."""
    maintain_connections()
    now = timezone.now()
    # Rows are locked in the order given: by conversation, so concurrent batches cannot deadlock
    # (a stable sort keeps each conversation's messages in the order they arrived).
    order = sorted(range(len(requests)), key=lambda i: requests[i].conversation_id)
    try:
        with transaction.atomic():
            stored = services.messages_store([requests[i] for i in order], now=now)
            rows: list[services.StoredRow | None] = [None] * len(requests)
            for position, index in enumerate(order):
                rows[index] = stored[position]
            return _outcomes(requests, rows, now)
    except DatabaseError:
        logger.warning("chat: a batch of %d messages failed; storing them one by one", len(order))
    outcomes: list[Outcome] = []
    for request in requests:
        try:
            with transaction.atomic():
                outcomes += _outcomes([request], services.messages_store([request], now=now), now)
        except Exception as exc:  # this message alone fails: its socket reports it
            outcomes.append(exc)
    return outcomes


class MessageWriter:
    """The writer of one event loop (``writer()``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waiting: list[tuple[services.PostRequest, asyncio.Future[services.PostedMessage]]] = []
        self.in_flight = 0

    async def post(self, request: services.PostRequest) -> services.PostedMessage:
        """Store ``request`` and publish its event; the result of ``services.message_post``."""
        future: asyncio.Future[services.PostedMessage] = self.loop.create_future()
        self.waiting.append((request, future))
        if self.in_flight < MAX_IN_FLIGHT:
            self._start()
        return await future

    def _start(self) -> None:
        batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
        self.in_flight += 1
        self.loop.create_task(self._write(batch))

    async def _write(
        self, batch: list[tuple[services.PostRequest, asyncio.Future[services.PostedMessage]]]
    ) -> None:
        try:
            outcomes = await self.loop.run_in_executor(
                executor, _store, [request for request, _ in batch]
            )
            events = [
                services.message_event(outcome.message)
                for outcome in outcomes
                if isinstance(outcome, services.PostedMessage) and outcome.created
            ]
            if events:
                await _publish(events)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        except BaseException as exc:
            # Stored or not, the sockets cannot tell their clients it was sent: they close, and
            # the clients resend (client ids make that safe) and resume from their last seq.
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.in_flight -= 1
            if self.waiting and self.in_flight < MAX_IN_FLIGHT:
                self._start()


async def _publish(events: list[tuple[str, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    send_many = getattr(layer, "group_send_many", None)
    if send_many is not None:
        await send_many(events)
        return
    for group, payload in events:
        await layer.group_send(group, payload)


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MessageWriter] = (
    weakref.WeakKeyDictionary()
)


def writer() -> MessageWriter:
    """The running event loop's writer."""
    loop = asyncio.get_running_loop()
    found = _writers.get(loop)
    if found is None:
        found = _writers[loop] = MessageWriter(loop)
    return found
