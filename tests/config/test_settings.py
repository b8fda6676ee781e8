"""The settings module: production values pass Django's deploy checks, bad values stop start-up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.env import ConfigurationError, database_from_url, env_bool, env_int

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "k3y-" + "x" * 60 + "-Z9!q",
    "ALLOWED_HOSTS": "shop.example.com",
    "DATABASE_URL": "postgresql://patron:secret@db.internal:5432/patron",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "EMAIL_URL": "smtp+tls://user:pass@smtp.example.com:587",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_without_secret_key_refuses_to_start():
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}

    result = _manage("check", env=env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_misspelt_boolean_names_the_variable(monkeypatch):
    monkeypatch.setenv("DEBUG", "treu")

    with pytest.raises(ConfigurationError, match="DEBUG must be a boolean"):
        env_bool("DEBUG", default=False)


def test_integer_below_minimum_is_refused(monkeypatch):
    monkeypatch.setenv("PATRON_EVENT_RETENTION_DAYS", "-1")

    with pytest.raises(ConfigurationError, match="at least 0"):
        env_int("PATRON_EVENT_RETENTION_DAYS", 400, minimum=0)


@pytest.mark.parametrize(
    ("url", "host", "port", "name"),
    [
        ("postgresql://u:p@db:5433/shop", "db", "5433", "shop"),
        (
            "postgresql://postgres:@/postgres?host=/work/.patron/pgdata",
            "/work/.patron/pgdata",
            "",
            "postgres",
        ),
        ("postgres://postgres@%2Fvar%2Frun%2Fpostgresql/shop", "/var/run/postgresql", "", "shop"),
    ],
)
def test_database_urls_with_tcp_and_unix_socket_hosts(url, host, port, name):
    config = database_from_url(url)

    assert (config["HOST"], config["PORT"], config["NAME"]) == (host, port, name)
    assert config["OPTIONS"] == {}


def test_database_url_must_be_postgresql():
    with pytest.raises(ConfigurationError, match="postgresql://"):
        database_from_url("mysql://root@localhost/shop")
