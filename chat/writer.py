"""Group commit for the messages sockets post: many messages, one statement, one publish.

A socket's ``message.send`` hands its checked ``PostRequest`` to the ``MessageWriter`` of its
event loop and awaits the result. The writer stores whatever is waiting as one batch
(``services.message_post_many``: one round trip, one transaction, one WAL flush) in a database
thread, then publishes the new messages' events to the channel layer in one pipelined write, and
only then answers the sockets, so an acknowledged message has been both stored and sent. With
nothing in flight a message is written at once (a batch of one); under load, what arrives while
a batch is in flight waits for the next one, so batches grow with the load and the cost per
message falls as it rises.

The writer decides nothing about a message: storing a batch, and what each message comes to, is
``services.message_post_many``, with the rules of ``services.post_rules`` that the one-message
path (``services.message_post``) applies too. The writer batches, publishes and answers.
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.layers import get_channel_layer

from chat import services
from chat.threads import keep_or_release_connections

# Batches in flight per process. One is group commit proper: what arrives while a batch is
# written waits for the next, so batches grow with the load. bench/chat.py, 2 workers: with one,
# 6,000 msg/s at p99 45 ms; with two (smaller batches, each costing PostgreSQL a statement and a
# WAL flush), p99 over 100 ms at that rate.
MAX_IN_FLIGHT = 1
MAX_BATCH = 500
# A thread per batch in flight. Unlike the sockets' threads (chat.threads.db), the writer's
# thread keeps the connection it borrowed from the pool between batches: it is busy back to back
# under load, and borrowing per batch would add the pool's health check (a round trip) to every
# batch, on the path of every message; the kept connection also keeps its plan of
# chat_messages_post cached. It is given back when an error leaves it unfit
# (``keep_or_release_connections``).
_executor = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="chat-writer")


def _store(requests: list[services.PostRequest]) -> list[services.Outcome]:
    try:
        outcomes = services.message_post_many(requests)
        # Shoppers who wrote wake their snoozed conversations: one statement per batch.
        services.conversations_wake_on_reply(
            [
                request.conversation_id
                for request, outcome in zip(requests, outcomes, strict=True)
                if request.author_kind == services.Author.SHOPPER
                and isinstance(outcome, services.PostedMessage)
                and outcome.created
            ]
        )
        return outcomes
    finally:
        keep_or_release_connections()


# A message waiting for the next batch: the request, the posting socket's channel, the answer.
Waiting = tuple[services.PostRequest, str | None, asyncio.Future[services.PostedMessage]]


class MessageWriter:
    """The writer of one event loop (``writer()``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waiting: list[Waiting] = []
        self.in_flight = 0

    async def post(
        self, request: services.PostRequest, *, sender: str | None = None
    ) -> services.PostedMessage:
        """Store ``request`` and publish its event; the result of ``services.message_post``.
        ``sender``: the channel name of the socket that posts it, which the event skips (the
        socket acknowledges the message itself)."""
        future: asyncio.Future[services.PostedMessage] = self.loop.create_future()
        self.waiting.append((request, sender, future))
        if self.in_flight < MAX_IN_FLIGHT:
            self._start()
        return await future

    def _start(self) -> None:
        batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
        self.in_flight += 1
        self.loop.create_task(self._write(batch))

    async def _write(self, batch: list[Waiting]) -> None:
        try:
            outcomes = await self.loop.run_in_executor(
                _executor, _store, [request for request, _, _ in batch]
            )
            # A duplicate (a re-sent client_id) is published again too: its first publish may
            # have been lost (Redis went away between store and publish, which is why it was
            # re-sent), and an ack promises a published message. Receivers drop seqs they have.
            events = [
                (*services.message_event(outcome.message), sender)
                for (_, sender, _), outcome in zip(batch, outcomes, strict=True)
                if isinstance(outcome, services.PostedMessage)
            ]
            if events:
                await _publish(events)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        except BaseException as exc:
            # Stored or not, the sockets cannot tell their clients it was sent: they close, and
            # the clients resend (client ids make that safe) and resume from their last seq.
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.in_flight -= 1
            if self.waiting and self.in_flight < MAX_IN_FLIGHT:
                self._start()


async def _publish(events: list[tuple[str, dict[str, Any], str | None]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    send_many = getattr(layer, "group_send_many", None)
    if send_many is not None:
        await send_many(events)
        return
    for group, payload, _ in events:  # another layer: the sender gets it too, and drops it
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
