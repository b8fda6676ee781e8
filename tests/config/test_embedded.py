"""Importing the settings starts nothing; the commands that serve start the embedded servers.

Each test runs Patron in a subprocess with no DATABASE_URL/REDIS_URL (embedded mode) and a
scratch state folder, then looks for any process or socket that belongs to that folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _embedded_env(state: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "XDG_RUNTIME_DIR"}
        and not key.startswith("PYTEST_")
    }
    env.update(PATRON_STATE_DIR=str(state), DJANGO_SETTINGS_MODULE="config.settings")
    return env


def _run_embedded(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` in the embedded mode on the scratch ``state`` folder; output captured
    as text, at most 120 s."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=_embedded_env(state),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Every live process whose command line names ``text`` (the scratch state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


@pytest.mark.parametrize(
    "code",
    [
        "import config.settings",
        "import django; django.setup(); from django.conf import settings; settings.DATABASES",
    ],
    ids=["settings-import", "django-setup"],
)
def test_importing_the_settings_starts_no_server(tmp_path: Path, code: str) -> None:
    state = tmp_path / "state"
    children_before = _processes_mentioning(str(state))

    result = _run_embedded(state, "-c", code + "; print('imported')")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
    assert children_before == []
    assert _processes_mentioning(str(state)) == []
    # No server was set up either: no PostgreSQL cluster, no Redis socket or pid file.
    assert not (state / "pgdata").exists()
    assert not (state / "redis.sock").exists()
    assert not (state / "redis.pid").exists()


def test_settings_name_the_embedded_servers_without_starting_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = (
        "from config import settings; "
        "print(settings.DATABASES['default']['HOST']); print(settings.DATABASES['default']['NAME']); "
        "print(settings.REDIS_URL); print(settings.CELERY_BROKER_URL); print(settings.EMBEDDED)"
    )
    result = _run_embedded(state, "-c", code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        str(state / "pgdata"),
        "patron",
        f"unix://{state / 'redis.sock'}?db=0",
        f"redis+socket://{state / 'redis.sock'}",
        "True",
    ]
    assert _processes_mentioning(str(state)) == []


def test_manage_py_check_starts_no_server(tmp_path: Path) -> None:
    state = tmp_path / "state"

    result = _run_embedded(state, "manage.py", "check")

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert _processes_mentioning(str(state)) == []
    assert not (state / "pgdata").exists()
    assert not (state / "redis.pid").exists()
