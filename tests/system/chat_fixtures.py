"""What the chat system tests share: their marks, the chat fixtures, a write key, a server.

A chat system test module imports what it uses from here::

    from tests.system.chat_fixtures import CHAT_SYSTEM, browser_key, chat_settings, consoles_disconnected

    pytestmark = CHAT_SYSTEM

``chat_settings`` (autouse: the merchant's chat configuration, written again after each
transactional flush) and ``consoles_disconnected`` come from tests/chat/conftest.py; importing
them into the module is what makes pytest use them there.
"""

from __future__ import annotations

from typing import Any

import pytest

from commerce.models import WriteKey
from tests.chat.conftest import chat_settings, consoles_disconnected, make_agent

__all__ = [
    "CHAT_SYSTEM",
    "browser_key",
    "chat_settings",
    "consoles_disconnected",
    "make_agent",
]

# Real processes, a database they share (so transactional), and no console left connected
# when the tables are flushed (see ``consoles_disconnected``).
CHAT_SYSTEM = [
    pytest.mark.system,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("consoles_disconnected"),
]


@pytest.fixture(name="key")
def browser_key(chat_settings: Any) -> WriteKey:
    """``key``: a browser write key (the kind the shop's pages hold), after the chat
    configuration. Named apart from its fixture so that importing it shadows nothing."""
    return WriteKey.objects.create(name="shop")
