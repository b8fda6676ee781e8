"""Live chat under load: shopper-to-agent delivery latency and throughput, against a bare
``websockets`` echo server measured in the same run.

    python bench/chat.py [--conversations 500] [--agents 50] [--workers 2] [--seconds 5]

What it does:

1. creates a throwaway database (``patron_chat_bench``) on the PostgreSQL of DATABASE_URL and
   migrates it; 500 shoppers, 500 conversations already *assigned* (so the bot is silent),
   50 agents holding 10 conversations each (one console socket per agent);
2. starts Patron under uvicorn (uvloop, httptools, ``websockets``; ``--workers`` processes) on a
   free port, on the Redis channel layer of REDIS_URL (RedisPubSubChannelLayer, as configured);
3. opens 500 shopper sockets and 50 agent sockets, then offers a steady load at increasing
   rates; each message is stored in PostgreSQL and delivered to the agent's socket; the
   latency is from the shopper's send to the agent's receipt of ``message.new``;
4. runs a bare ``websockets`` echo server (its own process) with 200 closed-loop clients;
5. prints one line per level and, last, one JSON line. The reported level is the fastest one
   whose p99 stays under 50 ms (or the slowest level when none does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_DB = "patron_chat_bench"


def bench_database_url() -> str:
    base = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{BENCH_DB}"))


def recreate_database(url: str) -> None:
    import psycopg2

    parts = urlsplit(url)
    admin = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
        dbname="postgres",
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{BENCH_DB}"')
    admin.close()


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_CONN_MAX_AGE="600",
        LOG_LEVEL="WARNING",
        CHANNEL_LAYER_PREFIX=f"patronbench{os.getpid()}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def seed(conversations: int, agents: int) -> dict[str, Any]:
    """Shoppers, agents with sessions, assigned conversations; returns what the clients need."""
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from chat import services
    from chat.models import AgentStatus, Conversation
    from commerce.models import Shopper, WriteKey

    key = WriteKey.objects.create(name="bench")
    group = Group.objects.get(name="Agents")
    User = get_user_model()
    cookies = []
    users = []
    for index in range(agents):
        user = User.objects.create_user(
            username=f"agent{index}", is_staff=True, first_name=f"A{index}"
        )
        user.groups.add(group)
        AgentStatus.objects.create(user=user, capacity=conversations)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"sessionid={session.session_key}")
        users.append(user)
    shoppers = Shopper.objects.bulk_create(
        [Shopper(first_name=f"S{i}") for i in range(conversations)]
    )
    now = timezone.now()
    rows = Conversation.objects.bulk_create(
        [
            Conversation(
                shopper=shopper,
                state=Conversation.State.ASSIGNED,
                assigned_agent=users[index % agents],
                handed_off_at=now,
                assigned_at=now,
            )
            for index, shopper in enumerate(shoppers)
        ]
    )
    return {
        "write_key": key.key,
        "agent_cookies": cookies,
        "shoppers": [
            {
                "token": services.shopper_token_issue(shopper_id=c.shopper_id),
                "conversation_id": c.pk,
            }
            for c in rows
        ],
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def chat_load(
    base: str, data: dict[str, Any], levels: list[int], seconds: float
) -> list[dict[str, Any]]:
    import orjson
    from websockets.asyncio.client import connect

    ws_base = base.replace("http://", "ws://")
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    received = 0
    acks = 0
    errors: list[Any] = []

    async def agent_reader(ws: Any) -> None:
        nonlocal received
        async for raw in ws:
            now = time.perf_counter()
            frame = orjson.loads(raw)
            if frame["type"] == "message.new":
                started = sent_at.pop(frame["message"]["client_id"], None)
                if started is not None:
                    latencies.append(now - started)
                    received += 1
            elif frame["type"] == "error":
                errors.append(frame)

    async def shopper_reader(ws: Any) -> None:
        nonlocal acks
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame["type"] == "message.ack":
                acks += 1
            elif frame["type"] == "error":
                errors.append(frame)

    from websockets.typing import Origin

    origin = Origin(base)
    agents = []
    for cookie in data["agent_cookies"]:
        ws = await connect(
            ws_base + "/ws/console/",
            additional_headers={"Cookie": cookie},
            origin=origin,
            max_size=2**24,
        )
        agents.append(ws)
    readers = [asyncio.create_task(agent_reader(ws)) for ws in agents]
    shoppers = []
    for batch_start in range(0, len(data["shoppers"]), 50):
        batch = data["shoppers"][batch_start : batch_start + 50]

        async def open_one(item: dict[str, Any]) -> Any:
            ws = await connect(ws_base + "/ws/chat/", origin=origin)
            await ws.send(
                orjson.dumps(
                    {
                        "type": "hello",
                        "write_key": data["write_key"],
                        "token": item["token"],
                        "conversation_id": item["conversation_id"],
                        "last_seq": 0,
                    }
                ).decode()
            )
            welcome = orjson.loads(await ws.recv())
            assert welcome["type"] == "welcome", welcome
            return ws

        shoppers += await asyncio.gather(*(open_one(item) for item in batch))
    readers += [asyncio.create_task(shopper_reader(ws)) for ws in shoppers]
    await asyncio.sleep(1.0)

    results = []
    counter = 0
    loop = asyncio.get_running_loop()
    for rate in levels:
        latencies.clear()
        received = 0
        tick = 0.01
        per_tick = rate * tick
        owed = 0.0
        started = loop.time()
        next_tick = started
        cursor = 0
        while loop.time() - started < seconds:
            owed += per_tick
            sends = []
            while owed >= 1:
                owed -= 1
                counter += 1
                client_id = f"m{counter}"
                ws = shoppers[cursor % len(shoppers)]
                cursor += 1
                sent_at[client_id] = time.perf_counter()
                sends.append(
                    ws.send(
                        orjson.dumps(
                            {
                                "type": "message.send",
                                "client_id": client_id,
                                "body": "Where is my parcel? " + client_id,
                            }
                        ).decode()
                    )
                )
            if sends:
                await asyncio.gather(*sends)
            next_tick += tick
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        elapsed = loop.time() - started
        # Let the tail arrive, counting only what arrived within the window plus 2 s.
        drain_until = loop.time() + 2.0
        while sent_at and loop.time() < drain_until:
            await asyncio.sleep(0.05)
        lost = len(sent_at)
        sent_at.clear()
        window = elapsed + (loop.time() - drain_until + 2.0)
        sample = list(latencies)
        result = {
            "offered_per_s": rate,
            "delivered": len(sample),
            "undelivered": lost,
            "msgs_per_s": round(len(sample) / window, 1),
            "p50_ms": round(percentile(sample, 50) * 1000, 2),
            "p99_ms": round(percentile(sample, 99) * 1000, 2),
        }
        print(
            f"  offered {rate:>5}/s: delivered {result['msgs_per_s']:>8.1f}/s  p50 {result['p50_ms']:>7.2f} ms  "
            f"p99 {result['p99_ms']:>8.2f} ms  undelivered {lost}",
            flush=True,
        )
        results.append(result)
        await asyncio.sleep(0.5)
        if result["p99_ms"] > 1000 or lost > rate:
            break  # saturated: higher levels only measure the backlog
    if errors:
        print(f"  server errors: {len(errors)} (first: {errors[0]})")
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in agents + shoppers), return_exceptions=True)
    return results


ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", int(sys.argv[1])):
            await asyncio.Future()

    asyncio.run(main())
    """
)


async def echo_load(port: int, clients: int, seconds: float) -> float:
    from websockets.asyncio.client import connect

    sockets = [await connect(f"ws://127.0.0.1:{port}/") for _ in range(clients)]
    count = 0
    stop_at = time.perf_counter() + seconds
    payload = json.dumps(
        {"type": "message.send", "client_id": "m123456", "body": "Where is my parcel? m123456"}
    )

    async def client(ws: Any) -> None:
        nonlocal count
        while time.perf_counter() < stop_at:
            await ws.send(payload)
            await ws.recv()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(ws) for ws in sockets))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(ws.close() for ws in sockets))
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="500,1000,1500,2000,3000")
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument("--profile", help="cProfile output file (runs one uvicorn process)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    url = bench_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["CHANNEL_LAYER_PREFIX"] = f"patronbench{os.getpid()}"
    print(f"database {BENCH_DB}: recreating and migrating", flush=True)
    recreate_database(url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env_for(url), check=True
    )
    data = seed(args.conversations, args.agents)

    port = free_port()
    if args.server == "uvicorn":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            "websockets",
            "--ws-per-message-deflate",
            "false",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        if args.profile:
            command[1:1] = ["-m", "cProfile", "-o", args.profile]
    else:
        command = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "config.asgi:application",
        ]
    server = subprocess.Popen(command, cwd=ROOT, env=env_for(url))
    try:
        wait_for_port(port)
        time.sleep(1.0)
        print(
            f"chat: {args.server} x{args.workers}, {args.conversations} conversations "
            f"({args.conversations} shopper sockets, {args.agents} agent sockets), {args.seconds:g} s per level",
            flush=True,
        )
        results = asyncio.run(chat_load(f"http://127.0.0.1:{port}", data, levels, args.seconds))
    finally:
        server.send_signal(signal.SIGINT)  # a clean exit (cProfile writes its file)
        server.wait(30)

    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)])
    try:
        wait_for_port(echo_port)
        echo_rate = asyncio.run(echo_load(echo_port, 200, args.seconds))
    finally:
        echo.terminate()
        echo.wait(15)
    print(f"echo: bare websockets, 200 clients: {echo_rate:,.0f} messages/s", flush=True)

    good = [r for r in results if r["p99_ms"] < 50]
    chosen = max(good, key=lambda r: r["msgs_per_s"]) if good else results[0]
    summary = {
        "server": args.server,
        "workers": args.workers,
        "conversations": args.conversations,
        "agents": args.agents,
        "offered_per_s": chosen["offered_per_s"],
        "p50_ms": chosen["p50_ms"],
        "p99_ms": chosen["p99_ms"],
        "msgs_per_s": chosen["msgs_per_s"],
        "max_msgs_per_s": max(r["msgs_per_s"] for r in results),
        "echo_msgs_per_s": round(echo_rate, 1),
        "ratio": round(chosen["msgs_per_s"] / echo_rate, 4),
        "levels": results,
    }
    print(
        f"chosen level: {chosen['msgs_per_s']:.0f} msgs/s with p50 {chosen['p50_ms']} ms, p99 "
        f"{chosen['p99_ms']} ms = {summary['ratio']:.3f} of the bare echo",
        flush=True,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
