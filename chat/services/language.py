"""A conversation's language: which one it is, and what Patron says in it.

The rule, in one place: a conversation speaks the shopper's locale when the widget sent one
Patron ships (the hello frame's ``locale``: the page's ``lang`` or the browser's language), else
the locale the store identified the shopper with (traits ``locale``), else the language of the
shopper's first message (``chat.nlu``'s classifier), kept on ``Conversation.language``. The bot's
answers, the system messages (``_system_say``), the widget's greeting and the chat emails use
it; when the merchant has nothing in that language, ``ChatSettings.fallback_language``.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import translation

from chat.models import Conversation
from chat.services.identity import chat_settings_get
from core.i18n import language_normalise, language_supported

__all__ = [
    "conversation_language",
    "conversation_language_detected",
    "language_fallback",
    "language_normalise",
    "language_supported",
    "translate",
]


def language_fallback() -> str:
    """The merchant's fallback language (``ChatSettings.fallback_language``), always shipped."""
    return language_normalise(chat_settings_get().fallback_language) or settings.LANGUAGE_CODE


def conversation_language(conversation_id: int) -> str:
    """The language Patron speaks in the conversation: its own, else the merchant's fallback."""
    language = (
        Conversation.objects.filter(pk=conversation_id).values_list("language", flat=True).first()
    )
    return language_normalise(language) or language_fallback()


def conversation_language_detected(*, conversation_id: int, language: str) -> None:
    """Adopt ``language`` (what the shopper writes in) when the conversation has none yet.

    One conditional UPDATE: a language already set (from the locale) is never replaced, and two
    messages racing both leave the first one's."""
    code = language_normalise(language)
    if code:
        Conversation.objects.filter(pk=conversation_id, language="").update(language=code)


def translate(text: str, *, language: str, **params: object) -> str:
    """``text`` (an English msgid: a built-in sentence or a chat setting still at its default)
    in ``language``; ``params`` fill ``%(name)s`` placeholders after translating. A text the
    merchant changed is not in the catalogs and comes back as written."""
    if not text:
        return ""
    with translation.override(language_normalise(language) or language_fallback()):
        translated = translation.gettext(text)
    return translated % params if params else translated
