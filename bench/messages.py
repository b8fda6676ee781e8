"""How fast the outbox decides and delivers email, against plain smtplib in the same run.

Runs against the PostgreSQL and Redis the tests use (DATABASE_URL, REDIS_URL), in a scratch
database it creates and drops. An aiosmtpd server in its own process is the SMTP sink.

1. Reference: one process composes the same emails (same subject, HTML, text and headers)
   with the standard library and sends them with ``smtplib`` over one connection
   (``smtplib_per_s``). Also reported: the bare SMTP rate with the emails composed beforehand
   (``smtplib_precomposed_per_s``), which is the SMTP sink's own ceiling more than a rival.
2. Outbox: a broadcast enrols N shoppers (runs and messages written in bulk, the decision),
   while a Celery worker with two processes claims batches and delivers them over SMTP,
   committing each message's hand-over and outcome. Timed from the broadcast's start until
   every message is recorded sent.

Prints a few lines and, last, one JSON object: messages_per_s, smtplib_per_s, ratio, ...

Environment: ``BENCH_MESSAGES`` (N, default 3000); ``BENCH_WORKER_LOG=1`` shows the worker's
log at INFO (by default it is discarded, so a task failing in the worker only shows here as a
timeout, with the messages' states in its text).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from core.servers import celery_worker_command  # noqa: E402 (needs the checkout on sys.path)

N = int(os.environ.get("BENCH_MESSAGES", "3000"))
# BENCH_WORKER_LOG=1 shows the worker's log (INFO) on this terminal instead of discarding it.
WORKER_LOG = os.environ.get("BENCH_WORKER_LOG", "") not in ("", "0")
WORKER_PROCESSES = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sink(port: int, counter: Any, ids: Any, done: Any) -> None:
    """The SMTP server process: counts what it accepts, reports Message-IDs when told."""
    import logging
    import re

    logging.getLogger("mail.log").setLevel(logging.WARNING)

    from aiosmtpd.controller import Controller

    seen: list[bytes] = []
    message_id = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            content = envelope.content
            found = message_id.search(content)
            seen.append(found.group(1) if found else b"")
            with counter.get_lock():
                counter.value += 1
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    done.wait()
    ids.put([s.decode() for s in seen])
    controller.stop()


def scratch_database() -> tuple[str, str]:
    from config import embedded

    embedded.start_missing()
    base = os.environ.get("DATABASE_URL") or embedded.database_url()
    parsed = urlparse(base)
    name = f"{parsed.path.lstrip('/') or 'patron'}_bench_messages"
    return base, urlunparse(parsed._replace(path=f"/{name}"))


def recreate(base: str, url: str, *, drop_only: bool = False) -> None:
    import psycopg

    from config.env import database_from_url

    admin = database_from_url(base)
    name = str(database_from_url(url)["NAME"])
    connection = psycopg.connect(
        dbname="postgres",
        user=str(admin["USER"] or "") or None,
        password=str(admin["PASSWORD"] or "") or None,
        host=str(admin["HOST"] or "") or None,
        port=str(admin["PORT"] or "") or None,
        autocommit=True,
    )
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()


def reference(port: int, emails: list[dict[str, Any]]) -> float:
    """Compose each email with the standard library and send it with smtplib (one process,
    one connection): what a plain script sending these emails does."""
    started = time.perf_counter()
    client = smtplib.SMTP("127.0.0.1", port)
    for index, fields in enumerate(emails):
        message = EmailMessage()
        message["Subject"] = fields["subject"]
        message["From"] = "Patron <shop@patron.localhost>"
        message["To"] = fields["to"]
        message["Message-ID"] = f"<ref-{index}@patron>"
        for key, value in fields["headers"].items():
            message[key] = value
        message.set_content(fields["text"])
        message.add_alternative(fields["html"], subtype="html")
        client.send_message(message)
    client.quit()
    return time.perf_counter() - started


def reference_precomposed(port: int, emails: list[tuple[str, bytes]]) -> float:
    """The bare SMTP rate: the same emails already composed, only ``sendmail`` timed."""
    started = time.perf_counter()
    client = smtplib.SMTP("127.0.0.1", port)
    for to, data in emails:
        client.sendmail("shop@patron.localhost", [to], data)
    client.quit()
    return time.perf_counter() - started


def wait_count(counter: mp.sharedctypes.Synchronized, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while counter.value < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sink has {counter.value} of {target}")
        time.sleep(0.01)


def main() -> None:
    base, url = scratch_database()
    recreate(base, url)
    os.environ["DATABASE_URL"] = url
    os.environ["PATRON_BASE_URL"] = "https://shop.example"
    port = free_port()
    os.environ["EMAIL_URL"] = f"smtp://127.0.0.1:{port}"

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from django.conf import settings
    from django.db.models import Count

    from commerce.models import Shopper
    from config.celery import app
    from engagement import services
    from engagement.models import Broadcast, Campaign, CampaignStep, Message

    counter = mp.Value("i", 0)
    ids: mp.Queue[list[str]] = mp.Queue()
    done = mp.Event()
    sink = mp.get_context("fork").Process(
        target=run_sink, args=(port, counter, ids, done), daemon=True
    )
    sink.start()
    time.sleep(1.0)
    worker: subprocess.Popen[bytes] | None = None
    try:
        Shopper.objects.bulk_create(
            Shopper(
                customer_id=f"bench-{i}",
                email=f"shopper{i}@example.com",
                first_name=f"Shopper{i}",
                email_consent=True,
            )
            for i in range(N)
        )
        campaign = Campaign.objects.create(
            name="Spring offer", trigger="limited_offer", status=Campaign.Status.ACTIVE
        )
        step = CampaignStep.objects.create(
            campaign=campaign,
            position=1,
            subject="{{ first_name }}, spring is here",
            body=(
                "<html><body><h1>Hello {{ first_name }}</h1>"
                '<p>Our spring collection is in. <a href="https://shop.example/spring">See it</a>.</p>'
                '<p><img src="https://shop.example/spring.jpg" alt="Spring"></p>'
                "</body></html>"
            ),
        )

        # The same emails, rendered once by Patron's renderer, for the reference.
        from engagement.registry import trigger_get
        from engagement.rendering import message_render

        shoppers = list(Shopper.objects.order_by("pk"))
        from django.utils import timezone

        from engagement.channels.base import Outbound
        from engagement.channels.email import compose
        from engagement.registry import Occurrence

        occurrence = Occurrence(key="ref", data={}, fired_at=timezone.now())
        emails: list[dict[str, Any]] = []
        composed: list[tuple[str, bytes]] = []
        for index, shopper in enumerate(shoppers):
            rendered = message_render(
                message_id=index + 1,
                shopper=shopper,
                campaign=campaign,
                step=step,
                trigger=trigger_get("limited_offer"),
                occurrence=occurrence,
            )
            emails.append(
                {
                    "to": shopper.email,
                    "subject": rendered.subject,
                    "text": rendered.text,
                    "html": rendered.html,
                    "headers": dict(rendered.headers),
                }
            )
            outbound = Outbound(
                message_id=index + 1,
                delivery_id=f"ref-{index}",
                idempotency_key=f"<ref-{index}@patron>",
                channel="email",
                recipient=shopper.email,
                subject=rendered.subject,
                html=rendered.html,
                text=rendered.text,
                headers=rendered.headers,
            )
            composed.append(
                (shopper.email, compose(outbound, from_email=settings.DEFAULT_FROM_EMAIL))
            )

        ref_seconds = reference(port, emails)
        wait_count(counter, N, 30)
        smtplib_per_s = N / ref_seconds
        print(f"smtplib, one process, composing with the stdlib: {smtplib_per_s:.0f}/s")
        bare_seconds = reference_precomposed(port, composed)
        wait_count(counter, 2 * N, 30)
        bare_per_s = N / bare_seconds
        print(f"smtplib, one process, pre-composed (bare SMTP): {bare_per_s:.0f}/s")

        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LOG_LEVEL": "INFO" if WORKER_LOG else "WARNING",
        }
        app.control.purge()
        worker = subprocess.Popen(
            celery_worker_command(
                concurrency=WORKER_PROCESSES,
                hostname=f"bench-{os.getpid()}@%h",
                quiet=True,
                log_level="INFO" if WORKER_LOG else "WARNING",
            ),
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stderr=None if WORKER_LOG else subprocess.DEVNULL,
            stdout=None if WORKER_LOG else subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not any(
            f"bench-{os.getpid()}" in next(iter(r)) for r in (app.control.ping(timeout=0.5) or [])
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("worker did not start")
        app.conf.task_always_eager = False

        before = counter.value
        started = time.perf_counter()
        broadcast = Broadcast.objects.create(campaign=campaign)
        services.broadcast_send(broadcast_id=broadcast.pk)
        decided = time.perf_counter() - started
        try:
            wait_count(counter, before + N, 300)
        except TimeoutError as error:
            by_state = dict(
                Message.objects.values_list("state").annotate(n=Count("pk")).order_by("state")
            )
            raise TimeoutError(
                f"{error}; outbox message states {by_state} (BENCH_WORKER_LOG=1 shows the worker's log)"
            ) from error
        while Message.objects.filter(state="sent").count() < N:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        messages_per_s = N / elapsed
        print(
            f"outbox, {WORKER_PROCESSES} worker processes: decided {N} in {decided:.2f}s, "
            f"all delivered and recorded in {elapsed:.2f}s = {messages_per_s:.0f}/s"
        )
        done.set()
        received = ids.get(timeout=30)
        outbox_ids = [i for i in received if i.startswith("<msg-")]
        duplicates = len(outbox_ids) - len(set(outbox_ids))
        states = sorted(set(Message.objects.values_list("state", flat=True)))
        print(f"outbox emails received {len(outbox_ids)}, duplicates {duplicates}, states {states}")
        print(
            json.dumps(
                {
                    "messages": N,
                    "batch_size": settings.PATRON_OUTBOX_BATCH_SIZE,
                    "worker_processes": WORKER_PROCESSES,
                    "decide_per_s": round(N / decided, 1),
                    "messages_per_s": round(messages_per_s, 1),
                    "smtplib_per_s": round(smtplib_per_s, 1),
                    "ratio": round(messages_per_s / smtplib_per_s, 3),
                    "smtplib_precomposed_per_s": round(bare_per_s, 1),
                    "ratio_precomposed": round(messages_per_s / bare_per_s, 3),
                    "duplicates": duplicates,
                }
            )
        )
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        if sink.is_alive():
            sink.kill()
        from django.db import connections

        connections.close_all()
        recreate(base, url, drop_only=True)


if __name__ == "__main__":
    main()
