"""Signed tokens in the links of messages: nobody can forge an open, a click or an unsubscribe.

Each purpose has its own salt, so a token for one cannot be replayed as another.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core import signing

from core.exceptions import NotFound

_SALTS = {
    "open": "engagement.open",
    "click": "engagement.click",
    "unsubscribe": "engagement.unsubscribe",
    "preferences": "engagement.preferences",
    "nps": "engagement.nps",
}


@lru_cache(maxsize=32)
def _signer(purpose: str, secret: str) -> signing.Signer:
    return signing.Signer(key=secret, salt=_SALTS[purpose])


def make(purpose: str, value: Any) -> str:
    return _signer(purpose, settings.SECRET_KEY).sign_object(value)


def read(purpose: str, token: str) -> Any:
    """The signed value, or NotFound (a forged or mangled token looks like no page at all)."""
    try:
        return _signer(purpose, settings.SECRET_KEY).unsign_object(token)
    except (signing.BadSignature, ValueError, UnicodeDecodeError):
        raise NotFound("this link is not valid", code="bad_token") from None


# Paths as mounted by engagement/urls.py (built directly: reverse() costs more than signing,
# and every message carries several of these links; tests check they resolve).


def absolute(path: str) -> str:
    return f"{settings.PATRON_BASE_URL}{path}"


def open_url(message_id: int) -> str:
    return absolute(f"/e/o/{make('open', message_id)}.gif")


def click_url(message_id: int, url: str) -> str:
    return absolute(f"/e/c/{make('click', [message_id, url])}")


def unsubscribe_url(message_id: int, shopper_id: int, channel: str) -> str:
    return absolute(f"/e/unsubscribe/{make('unsubscribe', [message_id, shopper_id, channel])}")


# A preview's or test send's links: signed like the real ones, so they look and resolve the
# same, but they name no shopper and no message, so following them changes nothing.
TEST = "test"


def test_unsubscribe_url(channel: str) -> str:
    return absolute(f"/e/unsubscribe/{make('unsubscribe', [TEST, channel])}")


def test_preferences_url() -> str:
    return absolute(f"/e/preferences/{make('preferences', TEST)}")


def preferences_url(shopper_id: int) -> str:
    return absolute(f"/e/preferences/{make('preferences', shopper_id)}")


def nps_url(message_id: int, score: int) -> str:
    return absolute(f"/e/nps/{make('nps', message_id)}?score={score}")
