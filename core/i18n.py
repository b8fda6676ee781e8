"""Languages Patron ships (``settings.LANGUAGES``) and naming them from a locale."""

from __future__ import annotations

from django.conf import settings


def language_supported() -> list[str]:
    """The codes Patron ships translations for (``settings.LANGUAGES``), e.g. ``["en", "tr"]``."""
    return [code for code, _name in settings.LANGUAGES]


def language_normalise(code: str | None) -> str:
    """The shipped language a locale names: ``"tr-TR"`` → ``"tr"``, ``"LV"`` → ``"lv"``;
    ``""`` for none, garbage or a language Patron does not ship (``"de-DE"``)."""
    base = (code or "").strip().replace("_", "-").split("-")[0].lower()
    return base if base in language_supported() else ""
