"""Set up and run all of Patron on one machine: the ASGI server, a Celery worker and beat.

Migrates, creates an admin login and a write key, loads the demo data once, then runs the
three processes until interrupted or until ``make stop`` (which finds their PIDs in the state
folder's ``run.pids``), printing where to go once the web server and the worker answer.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from config import embedded
from core.servers import celery_worker_command, uvicorn_command


class Command(BaseCommand):
    help = "Migrate, load demo data, and run the ASGI server, a Celery worker and beat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-demo", action="store_true", help="Do not load demo data")
        parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
        parser.add_argument("--web-workers", type=int, default=2, help="ASGI server processes")
        parser.add_argument(
            "--log-level",
            default=os.environ.get("LOG_LEVEL") or "WARNING",
            help="Celery worker and beat log level (INFO shows every task and every beat tick)",
        )
        parser.add_argument(
            "--ready-timeout",
            type=float,
            default=120.0,
            help="Seconds to wait for the web server and the worker to answer",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        password = self._ensure_admin()
        if not options["no_demo"]:
            call_command("patron_demo")
        base = f"http://{options['host']}:{options['port']}"
        public = os.environ.get("PATRON_BASE_URL", base)
        write_key = self._ensure_write_key(origins=[base, public])
        env = {**os.environ, "PATRON_BASE_URL": public}
        if settings.EMBEDDED:
            # Children reuse the servers manage.py found or started (and so start none).
            env.setdefault("DATABASE_URL", embedded.database_url())
            env.setdefault("REDIS_URL", settings.REDIS_URL)
        python = sys.executable
        commands = {
            "web": uvicorn_command(
                host=options["host"],
                port=options["port"],
                workers=options["web_workers"],
                log_level="info",
                access_log=True,
            ),
            "worker": celery_worker_command(
                concurrency=options["concurrency"], log_level=options["log_level"]
            ),
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "--loglevel",
                options["log_level"],
                "--schedule",
                str(embedded.STATE_DIR / "celerybeat-schedule"),
            ],
        }
        stopping = False

        def _stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        processes = {name: subprocess.Popen(command, env=env) for name, command in commands.items()}
        embedded.run_pids_record([os.getpid(), *(p.pid for p in processes.values())])
        try:
            if self._wait_ready(base, processes, timeout=options["ready_timeout"]):
                self._print_banner(base, password, write_key)
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with {process.returncode}; stopping")
                        stopping = True
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            for process in processes.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            embedded.RUN_PIDS_FILE.unlink(missing_ok=True)

    def _wait_ready(
        self, base: str, processes: dict[str, subprocess.Popen[bytes]], *, timeout: float
    ) -> bool:
        """Wait until ``/healthz`` answers 200 and a worker answers a ping; False on timeout
        or when a process exits first (the caller's loop then reports it)."""
        from config.celery import app

        deadline = time.monotonic() + timeout
        web_ready = worker_ready = False
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in processes.values()):
                return False
            if not web_ready:
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:  # noqa: S310 (our own http URL)
                        web_ready = response.status == 200
                except (urllib.error.URLError, OSError):
                    web_ready = False
            if web_ready and not worker_ready:
                worker_ready = bool(app.control.ping(timeout=1.0))
            if web_ready and worker_ready:
                return True
            time.sleep(0.25)
        self.stderr.write(f"Patron did not answer within {timeout:.0f} s; still waiting")
        return False

    def _print_banner(self, base: str, password: str, write_key: str) -> None:
        self.stdout.write(self.style.SUCCESS("\nPatron is running:"))
        self.stdout.write(f"  shop          {base}/")
        self.stdout.write(f"  admin         {base}/admin/   login: admin / {password}")
        self.stdout.write(f"  agent console {base}/console/")
        self.stdout.write(f"  API docs      {base}/api/docs/")
        self.stdout.write(f"  health        {base}/healthz")
        self.stdout.write(
            f"  tracking      POST {base}/v1/track  (HTTP Basic user = write key {write_key})"
        )
        if not os.environ.get("EMAIL_URL"):
            self.stdout.write(f"  mail          written to {settings.EMAIL_FILE_PATH}")
        self.stdout.write("Press Ctrl+C (or run `make stop`) to stop.\n")
        self.stdout.flush()

    def _ensure_admin(self) -> str:
        password_file = embedded.STATE_DIR / "admin-password"
        User = get_user_model()
        if User.objects.filter(username="admin").exists() and password_file.exists():
            return password_file.read_text().strip()
        password = os.environ.get("PATRON_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user, _ = User.objects.get_or_create(
            username="admin", defaults={"email": "admin@patron.localhost"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        embedded.STATE_DIR.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password)
        password_file.chmod(0o600)
        return password

    def _ensure_write_key(self, *, origins: list[str]) -> str:
        """The demo shop's browser key, allowed on the demo's own addresses (``origins``): a
        browser key serves only the pages it lists, besides Patron's own (docs/identity.md)."""
        from commerce.models import WriteKey

        key, _ = WriteKey.objects.get_or_create(name="Demo shop")
        listed = list(key.allowed_origins or [])
        missing = [o.rstrip("/") for o in dict.fromkeys(origins) if o.rstrip("/") not in listed]
        if missing:
            key.allowed_origins = [*listed, *missing]
            key.save(update_fields=["allowed_origins"])
        return key.key
