"""The command lines of Patron's processes, in one place.

``patron_run``, the system tests and the benchmarks start the ASGI server and Celery workers
with these, so what the tests and benchmarks measure is what production runs
(docker-compose.yml and the Dockerfile spell the same flags out).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Chosen by bench/chat.py: uvloop, httptools, the sans-I/O websockets implementation, and no
# per-message deflate (it costs more CPU than it saves on short chat frames).
UVICORN_FLAGS = ("--loop", "uvloop", "--http", "httptools", "--ws-per-message-deflate", "false")
UVICORN_WS = "websockets-sansio"


def uvicorn_command(
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str = "warning",
    access_log: bool = False,
    ws: str = UVICORN_WS,
    python: str = sys.executable,
) -> list[str]:
    command = [
        python, "-m", "uvicorn", "config.asgi:application",
        "--host", host, "--port", str(port), "--workers", str(workers),
        *UVICORN_FLAGS, "--ws", ws, "--log-level", log_level,
    ]  # fmt: skip
    if not access_log:
        command.append("--no-access-log")
    return command


def celery_worker_command(
    *,
    concurrency: int,
    log_level: str = "WARNING",
    hostname: str | None = None,
    queues: Sequence[str] = (),
    quiet: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """A prefork Celery worker; ``quiet`` drops gossip and mingle (faster start for tests)."""
    command = [
        python, "-m", "celery", "-A", "config", "worker",
        "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", log_level,
    ]  # fmt: skip
    if hostname:
        command += ["--hostname", hostname]
    if quiet:
        command += ["--without-gossip", "--without-mingle"]
    if queues:
        command += ["--queues", ",".join(queues)]
    return command
