"""Where the chat sockets' database work runs: a pool of long-lived threads.

Each thread keeps its database connection (Django's connections are per thread), so a frame costs
no connect. The pool is not the thread-sensitive single thread of ``sync_to_async``: the work of
different conversations must not queue behind each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

# Every frame but message.send (which goes to chat.writer) does its database work here: hello,
# opening a conversation, hand-offs. Each thread holds one database connection; asyncio's
# default pool has only cpu_count + 4.
DB_THREADS = 16
executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="chat-db")

_local = threading.local()


def maintain_connections() -> None:
    """What channels' ``database_sync_to_async`` does, at most once a second per thread: the
    health check it triggers costs a round trip, which would double the cost of a message."""
    now = time.monotonic()
    broken = any(conn.errors_occurred for conn in connections.all(initialized_only=True))
    if broken or now - getattr(_local, "checked", 0.0) > 1.0:
        close_old_connections()
        _local.checked = now


def db(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``func`` as a coroutine function that runs in the pool."""

    def call(*args: Any, **kwargs: Any) -> Any:
        maintain_connections()
        return func(*args, **kwargs)

    return sync_to_async(call, thread_sensitive=False, executor=executor)
