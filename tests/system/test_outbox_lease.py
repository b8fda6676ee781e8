"""Workers killed mid-send (SIGKILL, several in parallel): their messages go out again within
about a minute, each exactly once or recorded as the outbox promises.

Real processes: three prefork Celery workers, a Celery beat with Patron's own schedule (the
sweeper every 15 s, the dispatcher every 5 s), an aiosmtpd server. Two kill windows:

- before the end of data: the server holds its replies to RCPT, so every worker waits with no
  data sent; the messages are ``sending`` without ``handed_at`` and must be sent again;
- after the end of data: the server has taken the message and holds its ``250``; the messages
  have ``handed_at`` and must never be sent again (``sent``, ``confirmed=False``).

While the workers live, their claims outlast the lease (the server holds them for longer than
``PATRON_OUTBOX_LEASE_SECONDS``) and nothing is taken from them: the lease is renewed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.db.models import Count, Q

from engagement import services
from engagement.models import Message
from tests.engagement.conftest import make_campaign, make_shopper
from tests.support.processes import ROOT, child_env, kill_group, start_celery_worker
from tests.support.smtp import SMTPSink
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 6
MESSAGES = 60


@pytest.fixture
def env(sink: SMTPSink, real_celery: None) -> dict[str, str]:
    return child_env(
        EMAIL_URL=sink.url,
        PATRON_OUTBOX_BATCH_SIZE="5",
        PATRON_OUTBOX_PARALLELISM="6",
        PATRON_OUTBOX_LEASE_SECONDS=str(LEASE_SECONDS),
        PATRON_OUTBOX_RETRY_BASE_SECONDS="1",
    )


@pytest.fixture
def beat(env: dict[str, str], tmp_path) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING",
        "--schedule", str(tmp_path / "beat-schedule"),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    yield process
    kill_group(process)


def _taken_back() -> int:
    return Message.objects.filter(
        Q(reason="requeued: its worker was lost")
        | Q(reason="worker lost after hand-over; not sent again")
    ).count()


def _hold(sink: SMTPSink, window: str, after: int) -> None:
    """Once ``after`` messages are in, hold the server's replies in ``window``."""

    def arm() -> None:
        sink.wait_for(after, timeout=120)
        if window == "before_dot":
            sink.stall_rcpt = True
        else:
            sink.stall_when = lambda received: True
            sink.stall_all = True

    threading.Thread(target=arm, daemon=True).start()


@pytest.mark.parametrize("window", ["before_dot", "after_dot"])
def test_sigkilled_workers_messages_are_delivered_again_within_a_minute_exactly_once(
    env: dict[str, str], sink: SMTPSink, beat: subprocess.Popen[bytes], window: str
) -> None:
    make_campaign("welcome", steps=[{"subject": "Hello {{ first_name }}"}])
    shoppers = [make_shopper() for _ in range(MESSAGES)]
    _hold(sink, window, after=10)
    stalled: Callable[[], bool] = (
        sink.rcpt_stalled.is_set if window == "before_dot" else sink.stalled.is_set
    )
    workers = [start_celery_worker(env=env, name="engagement", own_session=True) for _ in range(3)]
    try:
        for shopper in shoppers:
            services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
        wait_until(stalled, timeout=120, what="the SMTP server to hold a reply")
        # Held for longer than the lease, with the sweeper running: live workers keep theirs.
        time.sleep(LEASE_SECONDS * 2.5)
        held = Message.objects.filter(state="sending")
        held_ids = set(held.values_list("pk", flat=True))
        assert held_ids, "no message was being sent when the workers were killed"
        assert _taken_back() == 0
        handed = set(held.filter(handed_at__isnull=False).values_list("pk", flat=True))
        if window == "before_dot":
            assert handed == set()
        else:
            assert handed
        for worker in workers:
            kill_group(worker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                kill_group(worker)
    killed_at = time.monotonic()
    sink.stall_rcpt = False
    sink.stall_when = None
    sink.release()

    survivors = [
        start_celery_worker(env=env, name="engagement", own_session=True) for _ in range(2)
    ]
    try:
        wait_until(
            lambda: Message.objects.filter(state="sent").count() == MESSAGES,
            timeout=90,
            what=f"all {MESSAGES} messages sent",
        )
        recovered_in = time.monotonic() - killed_at
        time.sleep(2.0)  # time for a duplicate to arrive, were one ever sent
    finally:
        for worker in survivors:
            kill_group(worker)

    assert recovered_in < 60, f"recovered after {recovered_in:.1f}s"
    counts = sink.count_by_message_id()
    assert set(counts) == {m.message_id_header for m in Message.objects.all()}
    assert set(counts.values()) == {1}
    states = dict(Message.objects.values("state").annotate(n=Count("id")).values_list("state", "n"))
    assert states == {"sent": MESSAGES}
    unconfirmed = Message.objects.filter(confirmed=False)
    assert set(unconfirmed.values_list("pk", flat=True)) == handed
    assert set(unconfirmed.values_list("reason", flat=True)) <= {
        "worker lost after hand-over; not sent again"
    }
    requeued = set(
        Message.objects.filter(pk__in=held_ids - handed).values_list("attempts", flat=True)
    )
    assert requeued <= {2}
    print(  # noqa: T201 (the recovery time, for the report; shown with -s)
        f"{window}: {len(held_ids)} held, {len(handed)} handed, recovered in {recovered_in:.1f}s"
    )
