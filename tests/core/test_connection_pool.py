"""Database connections come from Django's native psycopg 3 pool: ASGI requests, the chat
sockets' threads and the chat writer borrow pooled connections instead of each thread keeping
its own (the three private thread pools this replaced)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.db import DatabaseError, connection, connections
from psycopg_pool import ConnectionPool

from chat.threads import DB_THREADS, db, keep_or_release_connections
from commerce.models import Event, WriteKey
from tests.commerce.tracking_support import basic_auth, track


def _pool() -> ConnectionPool:
    pool = getattr(connections["default"], "pool", None)  # PostgreSQL's wrapper only
    assert isinstance(pool, ConnectionPool)
    return pool


def test_the_default_database_uses_psycopg3_and_the_native_pool():
    options = settings.DATABASES["default"]["OPTIONS"]
    assert isinstance(options, dict)

    assert getattr(connection, "Database").__name__ == "psycopg"  # noqa: B009 (untyped attribute)
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 0
    assert options["pool"] == {
        "min_size": 2,
        "max_size": 24,
        "timeout": 10.0,
        "max_idle": 300.0,
        "name": "patron",
    }
    # The chat's database threads and the writer's must fit in one process's pool.
    assert options["pool"]["max_size"] > DB_THREADS + 1


async def _asgi_post(application: Any, path: str, body: bytes, headers: dict[str, str]) -> int:
    """One POST through Django's real ASGI handler (not the test client, which keeps the
    request's connection); the response status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-length", str(len(body)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


@pytest.mark.django_db(transaction=True)
def test_asgi_tracking_requests_borrow_and_return_pooled_connections():
    key = WriteKey.objects.create(name="web shop").key
    connection.close()  # this thread's connection back to the pool too
    pool = _pool()
    pool.pop_stats()  # counters from here on
    application = get_asgi_application()
    headers = {"Content-Type": "application/json", "Authorization": basic_auth(key)}

    async def send_all() -> list[int]:
        return [
            await _asgi_post(
                application, "/v1/track", json.dumps(track(f"pool-{index}")).encode(), headers
            )
            for index in range(12)
        ]

    statuses = asyncio.run(send_all())
    stats = pool.get_stats()

    assert statuses == [200] * 12
    assert Event.objects.filter(message_id__startswith="pool-").count() == 12
    # Each request borrowed a connection (ASGI runs each in a fresh thread) and gave it back:
    # no new server connections beyond the pool's, nothing left checked out.
    assert stats.get("requests_num", 0) >= 12
    assert stats.get("connections_num", 0) <= 2
    assert stats["pool_available"] == stats["pool_size"]


@pytest.mark.django_db(transaction=True)
def test_chat_db_threads_give_their_connection_back_after_each_call():
    connection.close()

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            row = cursor.fetchone()
        assert row is not None
        return int(row[0])

    def holds_a_connection() -> tuple[str, bool]:
        return threading.current_thread().name, connections["default"].connection is not None

    async def scenario() -> tuple[list[int], list[tuple[str, bool]]]:
        pids = await asyncio.gather(*(db(backend_pid)() for _ in range(2 * DB_THREADS)))
        held = await asyncio.gather(*(db(holds_a_connection)() for _ in range(2 * DB_THREADS)))
        return list(pids), list(held)

    pids, held = asyncio.run(scenario())

    assert len(pids) == 2 * DB_THREADS
    # Fewer server sessions than calls: connections were reused through the pool.
    assert len(set(pids)) <= _pool().get_stats()["pool_size"]
    assert {name.startswith("chat-db") for name, _ in held} == {True}
    assert [holding for _, holding in held] == [False] * (2 * DB_THREADS)


@pytest.mark.django_db(transaction=True)
def test_the_writer_thread_keeps_a_healthy_connection_and_returns_a_failed_one():
    connection.close()

    def in_a_thread() -> dict[str, Any]:
        outcome: dict[str, Any] = {}
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        keep_or_release_connections()
        outcome["kept_after_success"] = connection.connection is not None
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table_here")
        except DatabaseError:
            pass
        keep_or_release_connections()
        outcome["kept_after_error"] = connection.connection is not None
        with connection.cursor() as cursor:  # borrows a fresh one
            cursor.execute("SELECT 2")
            outcome["next"] = cursor.fetchone()
        connection.close()
        return outcome

    outcome = asyncio.run(sync_to_async(in_a_thread, thread_sensitive=False)())

    assert outcome == {"kept_after_success": True, "kept_after_error": False, "next": (2,)}
