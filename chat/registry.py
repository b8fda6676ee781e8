"""Extension points through which other apps add to chat without chat importing them.

Apps register in ``AppConfig.ready``:

- context-panel sections: ``register_context_section("loyalty", "Loyalty", provider)`` where
  ``provider(shopper)`` returns a flat JSON-able dict shown in the agent console;
- bot intents: ``register_bot_intent("points_balance", {"en": ["my points"]}, handler)`` where
  ``handler(request)`` returns the reply text, or ``None`` when it cannot answer.

A merchant-configured ``BotIntent`` with the same key (kind "registered") overrides the phrases;
the handler stays the app's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chat.models import Conversation
    from commerce.models import Shopper


@dataclass(frozen=True)
class BotRequest:
    """What a registered bot intent handler gets."""

    shopper: Shopper
    conversation: Conversation
    text: str
    language: str


ContextProvider = Callable[["Shopper"], Mapping[str, Any]]
BotHandler = Callable[[BotRequest], "str | None"]


@dataclass(frozen=True)
class ContextSection:
    key: str
    title: str
    provider: ContextProvider
    order: int


@dataclass(frozen=True)
class RegisteredIntent:
    key: str
    phrases: Mapping[str, Sequence[str]]
    handler: BotHandler


_sections: dict[str, ContextSection] = {}
_intents: dict[str, RegisteredIntent] = {}


def register_context_section(
    key: str, title: str, provider: ContextProvider, *, order: int = 100
) -> None:
    """Show ``provider(shopper)`` as a section of the agent console's context panel.

    Sections are shown by ``order`` then key; registering a key again replaces it.
    """
    _sections[key] = ContextSection(key=key, title=title, provider=provider, order=order)


def context_sections() -> list[ContextSection]:
    return sorted(_sections.values(), key=lambda section: (section.order, section.key))


def register_bot_intent(
    key: str, phrases: Mapping[str, Sequence[str]] | Sequence[str], handler: BotHandler
) -> None:
    """Let the bot answer ``key`` with ``handler``; ``phrases`` per language (or for "en")."""
    by_language = {"en": list(phrases)} if not isinstance(phrases, Mapping) else dict(phrases)
    _intents[key] = RegisteredIntent(key=key, phrases=by_language, handler=handler)


def bot_intent(key: str) -> RegisteredIntent | None:
    return _intents.get(key)


def bot_intents() -> list[RegisteredIntent]:
    return list(_intents.values())


def unregister(key: str) -> None:
    """Remove a section or intent (tests use this to restore the registry)."""
    _sections.pop(key, None)
    _intents.pop(key, None)
