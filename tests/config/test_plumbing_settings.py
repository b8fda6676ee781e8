"""The database pool and channel layer settings: bad values stop start-up, naming the variable;
good ones reach the configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _import_settings(
    expression: str = "s.DATABASES['default']['OPTIONS']", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import config.settings as s; print({expression})"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "CHANNEL_LAYER_PREFIX"}, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_CONN_MAX_AGE": "60"}, "DATABASE_CONN_MAX_AGE must be 0"),
        (
            {"DATABASE_POOL_MIN_SIZE": "8", "DATABASE_POOL_MAX_SIZE": "4"},
            "DATABASE_POOL_MAX_SIZE (4) must be at least DATABASE_POOL_MIN_SIZE (8)",
        ),
        ({"DATABASE_POOL_TIMEOUT": "0"}, "DATABASE_POOL_TIMEOUT must be at least 1"),
        ({"DATABASE_POOL_MAX_SIZE": "many"}, "DATABASE_POOL_MAX_SIZE must be an integer"),
    ],
)
def test_bad_pool_settings_stop_start_up(env, message):
    result = _import_settings(**env)

    assert result.returncode != 0
    assert message in result.stderr


def test_pool_sizes_come_from_the_environment():
    result = _import_settings(
        DATABASE_POOL_MIN_SIZE="1",
        DATABASE_POOL_MAX_SIZE="7",
        DATABASE_POOL_TIMEOUT="3",
        DATABASE_POOL_MAX_IDLE="60",
        DATABASE_URL="postgresql://patron:secret@db.internal:5432/patron?sslmode=require",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "{'sslmode': 'require', 'pool': {'min_size': 1, 'max_size': 7, 'timeout': 3.0, "
        "'max_idle': 60.0, 'name': 'patron'}}"
    )


def test_a_tls_redis_url_keeps_its_db_number_in_the_channel_prefix():
    url = "rediss://:pw@redis.internal:6380/3?ssl_ca_certs=/etc/patron/ca.pem"
    result = _import_settings(
        "s.CHANNEL_LAYERS['default']['CONFIG']['address'], "
        "s.CHANNEL_LAYERS['default']['CONFIG']['prefix']",
        REDIS_URL=url,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{url} patron3"
