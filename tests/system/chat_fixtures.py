"""What the chat system tests share: their marks and fixtures.

tests/system/conftest.py imports the fixtures, so every system test may ask for them; a chat
system test module says ``pytestmark = CHAT_SYSTEM``, which uses the two every chat test needs:

- ``chat_settings``: the merchant's chat configuration (tests/chat/conftest.py's, which is
  autouse there; here asked for by the marks), written again after each transactional flush;
- ``consoles_disconnected``: no console left connected when the tables are flushed.

``key`` is a browser write key for the shopper socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chat import services
from chat.models import ChatSettings
from commerce.models import WriteKey
from tests.chat.conftest import chat_settings_seed, consoles_disconnected

__all__ = ["CHAT_SYSTEM", "browser_key", "chat_settings", "consoles_disconnected"]

# Real processes, a database they share (so transactional), the chat configuration, and no
# console left connected when the tables are flushed.
CHAT_SYSTEM = [
    pytest.mark.system,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("chat_settings", "consoles_disconnected"),
]


@pytest.fixture
def chat_settings(db: Any) -> Iterator[ChatSettings]:
    """The chat configuration tests/chat/conftest.py's autouse ``chat_settings`` writes."""
    yield chat_settings_seed()
    services.chat_settings_invalidate()


@pytest.fixture(name="key")
def browser_key(chat_settings: ChatSettings) -> WriteKey:
    """``key``: a browser write key (the kind the shop's pages hold), after the chat
    configuration. Named apart from its fixture so that importing it shadows nothing."""
    return WriteKey.objects.create(name="shop")
