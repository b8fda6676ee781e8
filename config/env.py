"""Typed readers for environment variables that refuse bad values loudly.

A misspelt boolean or a non-numeric port should stop the process at start-up with a message
naming the variable, not surface later as odd behaviour.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigurationError(RuntimeError):
    pass


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be a boolean (1/0, true/false, yes/no), got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def database_from_url(url: str) -> dict[str, object]:
    """Parse a PostgreSQL URL into a Django DATABASES entry.

    Supports a unix-socket directory given as ``?host=/path`` (what pgserver prints) or as a
    percent-encoded host, both of which django-environ gets wrong.
    """
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ConfigurationError(
            f"DATABASE_URL must be a postgresql:// URL, got scheme {parsed.scheme!r}"
        )
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    host = query.pop("host", None) or unquote(parsed.hostname or "")
    if parsed.netloc and "%2f" in parsed.netloc.lower():
        host = unquote(parsed.netloc.rsplit("@", 1)[-1].split(":")[0])
    name = unquote(parsed.path.lstrip("/"))
    if not name:
        raise ConfigurationError("DATABASE_URL must name a database")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "OPTIONS": query,
    }


SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)


def installation_secret_key(state_dir: Path) -> str:
    """The development ``SECRET_KEY`` of this installation, made on first use.

    50 random URL-safe characters from :mod:`secrets`, kept in ``state_dir/secret_key`` (mode
    0600) and read back by every later process, so sessions and signed links survive a
    restart, while no two installations share a key (a key shipped in the code would let
    anyone forge sessions and tokens on every Patron left in DEBUG). Safe when several
    processes start at once: the file is written under a temporary name and linked into place,
    and whoever loses the race reads the winner's key.
    """
    path = state_dir / SECRET_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    state_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(50)
    temporary = state_dir / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(candidate + "\n")
        # Another process may have made it first: then theirs is used.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    key = path.read_text().strip()
    if not key:
        raise ConfigurationError(f"{path} is empty: delete it to make a new development key")
    return key


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    """A rate limit written ``COUNT/SECONDS`` (``600/60``: 600 per minute), or ``off``.

    Returns ``(count, seconds)``, or None when the limit is switched off. Units may be given
    as ``s``, ``m``, ``h`` or ``d`` instead of seconds (``600/m``).
    """
    value = os.environ.get(name)
    text = (default if value is None or value == "" else value).strip().lower()
    if text in {"off", "none", "0"}:
        return None
    count_text, _, period_text = text.partition("/")
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    try:
        count = int(count_text)
        seconds = units[period_text] if period_text in units else int(period_text)
    except ValueError:
        raise ConfigurationError(
            f"{name} must be COUNT/SECONDS (e.g. 600/60 or 600/m) or off, got {text!r}"
        ) from None
    if count < 1 or seconds < 1:
        raise ConfigurationError(f"{name} needs a positive count and period, got {text!r}")
    return count, seconds
