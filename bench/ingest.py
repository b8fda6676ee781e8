"""Tracking ingestion over real HTTP against PostgreSQL COPY of the same rows, in one run.

Starts Patron under uvicorn on a throwaway database, sends one call from each of 20,000
returning visitors (untimed warm-up), then Segment-style batches of track, page and identify
calls (95 % from returning visitors, a third of them logged in, 5 % from new ones) from
concurrent keep-alive clients, and reports the events stored per second. Then it COPYs the very rows the server
stored into a table of the same shape (same columns and indexes) and reports that rate and
the ratio. The last line printed is one JSON object.

    python bench/ingest.py [--events 200000] [--batch-size 500] [--clients 8] [--workers 2]

Uses DATABASE_URL (or the embedded PostgreSQL when unset); the database it creates is named
after that one with a ``_bench_ingest_<pid>`` suffix and is dropped at the end. The server's
Celery broker is in-memory, so the processing tasks it queues go nowhere (no worker competes
for the CPU, and no other Redis user finds stray tasks).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import free_port, stop, wait_for_port  # noqa: E402  (needs the checkout on sys.path)

COLUMNS = (
    "source_id, message_id, type, name, shopper_id, anonymous_id, user_id, "
    "properties, context, timestamp, received_at, processed_at"
)
PRODUCTS = [
    {
        "product_id": f"SKU-{n:04d}",
        "sku": f"SKU-{n:04d}",
        "name": f"Product {n}",
        "category": random.choice(["Kitchen", "Garden", "Toys", "Books", "Lighting"]),
        "price": round(random.uniform(2, 120), 2),
        "currency": "GBP",
        "url": f"https://shop.example/p/{n}",
        "image_url": f"https://cdn.shop.example/p/{n}.jpg",
    }
    for n in range(400)
]
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)


def base_database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from config import embedded

    embedded.ensure_started(database=True, redis=False)
    return embedded.database_url()


def with_database(url: str, name: str) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{name}"))


def dsn(url: str) -> str:
    """A libpq DSN for a URL (libpq takes URLs, but not pgserver's ``?host=`` socket form)."""
    from config.env import database_from_url

    db = database_from_url(url)
    parts = {
        "dbname": db["NAME"],
        "user": db["USER"],
        "password": db["PASSWORD"],
        "host": db["HOST"],
        "port": db["PORT"],
    }
    return " ".join(f"{k}='{v}'" for k, v in parts.items() if v)


@contextlib.contextmanager
def throwaway_database(base_url: str) -> Iterator[str]:
    name = f"{urlparse(base_url).path.lstrip('/') or 'patron'}_bench_ingest_{os.getpid()}"
    # Connect to the server's maintenance database: the named one need not exist yet.
    admin = psycopg.connect(dsn(with_database(base_url, "postgres")), autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = with_database(base_url, name)
    try:
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def server_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL="memory://",
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0",
        SECRET_KEY="bench-ingest-" + uuid.uuid4().hex,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


# --- The workload ------------------------------------------------------------------------


class Visitors:
    """Returning visitors (some logged in) and a steady trickle of new ones."""

    def __init__(self, pool: int) -> None:
        self.pool = pool
        self.next_new = pool

    def pick(self) -> tuple[str, str | None]:
        if random.random() < 0.05:  # a new visitor
            self.next_new += 1
            return f"anon-{self.next_new}", None
        n = random.randrange(self.pool)
        return f"anon-{n}", (f"user-{n}" if n % 3 == 0 else None)


def call(visitor: tuple[str, str | None], sent_at: str) -> dict[str, object]:
    anonymous_id, user_id = visitor
    product = random.choice(PRODUCTS)
    context = {
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "ip": "203.0.113.7",
        "userAgent": USER_AGENT,
        "locale": "en-GB",
        "page": {"path": f"/p/{product['sku']}", "url": product["url"], "title": product["name"]},
    }
    message: dict[str, object] = {
        "messageId": str(uuid.uuid4()),
        "anonymousId": anonymous_id,
        "timestamp": sent_at,
        "context": context,
    }
    if user_id:
        message["userId"] = user_id
    roll = random.random()
    if roll < 0.30:
        message.update(type="page", name="Product", properties={"path": context["page"]["path"]})  # type: ignore[index]  # context is built above with a page dict
    elif roll < 0.35 and user_id:
        message.update(type="identify", traits={"email": f"{user_id}@example.com", "plan": "free"})
    else:
        event = random.choice(["Product Viewed"] * 6 + ["Product Added", "Cart Viewed"])
        message.update(type="track", event=event, properties=product)
    return message


SENT_AT = "2026-01-01T12:00:00.000Z"
POOL = 20_000


def make_warmup(size: int) -> list[bytes]:
    """One call from every returning visitor, so the timed run meets a shop in steady state."""
    visitors = [(f"anon-{n}", f"user-{n}" if n % 3 == 0 else None) for n in range(POOL)]
    calls = [call(visitor, SENT_AT) for visitor in visitors]
    return [
        orjson.dumps({"batch": calls[i : i + size], "sentAt": SENT_AT})
        for i in range(0, len(calls), size)
    ]


def make_batches(count: int, size: int) -> list[bytes]:
    visitors = Visitors(pool=POOL)
    batches = []
    for _ in range(count):
        calls = [call(visitors.pick(), SENT_AT) for _ in range(size)]
        batches.append(orjson.dumps({"batch": calls, "sentAt": SENT_AT}))
    return batches


async def send_all(
    base_url: str, key: str, batches: list[bytes], clients: int
) -> tuple[float, list[float]]:
    """POST every batch over ``clients`` keep-alive HTTP/1.1 connections; (seconds, latencies).

    A lean client, so that the load generator does not take the CPU it measures: each request
    (headers and body) is encoded once before the clock starts, and responses are read by
    their Content-Length straight off an asyncio stream.
    """
    url = urlparse(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    authorization = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    requests = [
        (
            f"POST /v1/batch HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: {authorization}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in batches
    ]
    pending = iter(requests)
    latencies: list[float] = []

    async def client_loop() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in pending:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                response = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"batch refused: {status} {response[:300]!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return time.perf_counter() - started, latencies


# --- The reference -----------------------------------------------------------------------


def copy_reference(database_url: str) -> tuple[int, float]:
    """COPY the rows the server stored into a table of the same shape; returns (rows, seconds)."""
    with psycopg.connect(dsn(database_url)) as conn, conn.cursor() as cursor:
        data = io.BytesIO()
        with cursor.copy(
            f"COPY (SELECT {COLUMNS} FROM commerce_event ORDER BY id) TO STDOUT"  # noqa: S608 (constants)
        ) as out:
            for chunk in out:
                data.write(chunk)
        rows = data.getvalue().count(b"\n")
        cursor.execute("CREATE TABLE bench_event_copy (LIKE commerce_event INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        with cursor.copy(f"COPY bench_event_copy ({COLUMNS}) FROM STDIN") as copy:
            copy.write(data.getvalue())
        conn.commit()
        return rows, time.perf_counter() - started


# --- Main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    random.seed(20261122)

    count = max(1, args.events // args.batch_size)
    warmup = make_warmup(args.batch_size)
    batches = make_batches(count, args.batch_size)
    mean_bytes = statistics.mean(len(b) for b in batches)

    with throwaway_database(base_database_url()) as database_url:
        env = server_env(database_url)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        key = uuid.uuid4().hex
        with psycopg.connect(dsn(database_url)) as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO commerce_writekey "
                "(name, key, active, created_at, server_side, allowed_origins) "
                "VALUES ('bench', %s, true, now(), true, '[]')",
                [key],
            )
        port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "config.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
            "--http", "httptools", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        server = subprocess.Popen(command, cwd=ROOT, env=env)
        try:
            wait_for_port(port, process=server)
            base_url = f"http://127.0.0.1:{port}"
            asyncio.run(send_all(base_url, key, warmup, args.workers))
            elapsed, latencies = asyncio.run(send_all(base_url, key, batches, args.clients))
        finally:
            stop(server)
        with psycopg.connect(dsn(database_url)) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM commerce_event")
            (stored,) = cursor.fetchone() or (0,)
        expected = POOL + len(batches) * args.batch_size
        if stored != expected:
            raise SystemExit(f"stored {stored} events, expected {expected}")
        copy_rows, copy_seconds = copy_reference(database_url)

    events = len(batches) * args.batch_size
    events_per_s = events / elapsed
    copy_rows_per_s = copy_rows / copy_seconds
    latencies.sort()
    result = {
        "events_per_s": round(events_per_s),
        "copy_rows_per_s": round(copy_rows_per_s),
        "ratio": round(events_per_s / copy_rows_per_s, 3),
        "events": events,
        "batches": len(batches),
        "batch_size": args.batch_size,
        "mean_batch_kb": round(mean_bytes / 1024, 1),
        "clients": args.clients,
        "server_workers": args.workers,
        "seconds": round(elapsed, 2),
        "p50_batch_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_batch_ms": round(
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1
        ),
        "copy_rows": copy_rows,
    }
    print(
        f"HTTP ingestion: {events} events in {len(batches)} batches of {args.batch_size} "
        f"({result['mean_batch_kb']} KB) from {args.clients} clients to {args.workers} uvicorn "
        f"workers: {elapsed:.2f} s, {events_per_s:,.0f} events/s, batch p50 "
        f"{result['p50_batch_ms']} ms, p99 {result['p99_batch_ms']} ms"
    )
    print(
        f"PostgreSQL COPY of the same {copy_rows} rows into a table of the same shape: "
        f"{copy_seconds:.2f} s, {copy_rows_per_s:,.0f} rows/s"
    )
    print(f"ratio (HTTP events/s over COPY rows/s): {result['ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
