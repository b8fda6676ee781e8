"""A real SMTP server (aiosmtpd) that records what it accepts, for system tests and benchmarks.

``SMTPSink`` runs in a thread of the calling process. It can be told to stall: the message
that matches ``stall_when`` is recorded (the server has taken it) and then the reply to the
client is held until ``release()`` — the moment a worker has handed a message over and waits
for the ``250``, which is where a kill is the hardest for exactly-once delivery. ``stall_rcpt``
holds the replies to RCPT instead (a worker waiting there has sent no data), ``refuse_with``
answers the end of data with a 4xx or 5xx, and ``drop_after_data`` takes a message and breaks
the connection before replying.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.processes import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage = field(repr=False)

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


class _Handler:
    def __init__(self, sink: SMTPSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        received = Received(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.content,
            message=parsed,
        )
        with self.sink.lock:
            self.sink.received.append(received)
            stall = self.sink.stall_when is not None and self.sink.stall_when(received)
            if stall:
                self.sink.stalled.set()
                if not self.sink.stall_all:
                    self.sink.stall_when = None
        if stall:
            while not self.sink.released.is_set():
                await asyncio.sleep(0.02)
        if self.sink.drop_after_data:
            # The server has the message and the connection breaks before its reply.
            server.transport.abort()
            return "250 2.0.0 OK queued (never seen by the client)"
        if self.sink.refuse_with:
            refusal = self.sink.refuse_with
            if self.sink.refuse_times is not None:
                self.sink.refuse_times -= 1
                if self.sink.refuse_times <= 0:
                    self.sink.refuse_with, self.sink.refuse_times = "", None
            return refusal
        return "250 2.0.0 OK queued"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.sink.stall_rcpt:
            # Before the end of data: the client waits for this reply with its DATA unsent.
            self.sink.rcpt_stalled.set()
            while not self.sink.released.is_set():
                await asyncio.sleep(0.02)
        envelope.rcpt_tos.append(address)
        return "250 OK"


class SMTPSink:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.stall_when: Callable[[Received], bool] | None = None
        self.stall_all = False  # keep stalling every later message too, until release()
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.refuse_with = ""  # e.g. "451 4.3.0 try later": the reply to the end of data
        self.refuse_times: int | None = None  # refuse this many messages, then accept (None: all)
        self.drop_after_data = False  # record the message, then break the connection unreplied
        self.stall_rcpt = False  # hold every RCPT reply until release() (before the data)
        self.rcpt_stalled = threading.Event()
        self.controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, data_size_limit=10_000_000
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.released.set()
        self.controller.stop()

    def release(self) -> None:
        self.released.set()

    def count_by_message_id(self) -> Counter[str]:
        with self.lock:
            return Counter(r.message_id for r in self.received)

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, *, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return self.messages()
            time.sleep(0.02)
        raise TimeoutError(f"SMTP sink got {len(self.received)} messages, expected {count}")


@contextlib.contextmanager
def smtp_sink() -> Iterator[SMTPSink]:
    sink = SMTPSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
