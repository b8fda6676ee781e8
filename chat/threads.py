"""Where the chat sockets' database work runs: threads that borrow pooled connections.

Connections come from Django's connection pool (``DATABASES["default"]["OPTIONS"]["pool"]``,
config/settings.py): a call borrows one when it first touches the database and returns it when
it ends, so no thread holds a connection between frames. The threads are not the
thread-sensitive single thread of ``sync_to_async`` (which ``database_sync_to_async`` uses): the
work of different conversations must not queue behind each other, and asyncio's default
executor has only cpu_count + 4 threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

# Every frame but message.send (which goes to chat.writer) does its database work here: hello,
# opening a conversation, hand-offs. At most this many frames of one process use the database at
# once, so at most this many pooled connections (keep DATABASE_POOL_MAX_SIZE above it).
DB_THREADS = 16
executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="chat-db")


def release_connections() -> None:
    """Return this thread's connections to the pool (Django closes a pooled connection by
    putting it back; the pool discards it if it is broken or inside a transaction)."""
    close_old_connections()


def keep_or_release_connections() -> None:
    """For a thread that keeps its pooled connection between calls (the chat writer): give it
    back only when it is no longer fit for use (an error occurred on it, or a transaction was
    left open), so the next call borrows a healthy one."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.errors_occurred or not conn.get_autocommit():
            conn.close()


def db(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``func`` as a coroutine function that runs in the chat's threads with a pooled connection,
    returned to the pool when it ends (also when it raises)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            release_connections()

    return sync_to_async(call, thread_sensitive=False, executor=executor)
