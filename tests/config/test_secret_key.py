"""The development SECRET_KEY: made once per installation under .patron/, never shipped in code."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from config.env import installation_secret_key

ROOT = Path(__file__).resolve().parents[2]


def _settings_key(state_dir: Path) -> str:
    """SECRET_KEY as a fresh process importing the settings sees it (DEBUG on, no key set)."""
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env.update(
        PATRON_STATE_DIR=str(state_dir),
        DJANGO_SETTINGS_MODULE="config.settings",
        # Real URLs so that importing the settings starts no embedded server.
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1/x"),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.SECRET_KEY)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_two_starts_of_one_installation_share_a_generated_key(tmp_path):
    first = _settings_key(tmp_path / "one")
    second = _settings_key(tmp_path / "one")

    assert first == second
    assert len(first) >= 60
    key_file = tmp_path / "one" / "secret_key"
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # No temporary file left behind.
    assert sorted(p.name for p in (tmp_path / "one").iterdir() if "secret" in p.name) == [
        "secret_key"
    ]


def test_another_installation_gets_another_key(tmp_path):
    assert _settings_key(tmp_path / "one") != _settings_key(tmp_path / "two")


def test_an_existing_key_file_is_kept(tmp_path):
    (tmp_path / "secret_key").write_text("kept-key-" + "k" * 50 + "\n")

    assert installation_secret_key(tmp_path) == "kept-key-" + "k" * 50


def test_the_settings_ship_no_constant_key():
    source = (ROOT / "config" / "settings.py").read_text()

    assert not re.search(r"SECRET\w*\s*=\s*[\"']", source)
    assert "development-key" not in source
    assert 'SECRET_KEY = env_str("SECRET_KEY") or (' in source
