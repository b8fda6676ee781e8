"""Text folding and splitting shared by training and classification.

Shoppers type without diacritics ("siparisim", "pasutijums"), in any case, with Turkish
apostrophes before suffixes ("1001'in"). Folding maps all of these to one form so that the
merchant's example "siparişim nerede" and the shopper's "SIPARISIM NERDE" share n-grams.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_APOSTROPHES = re.compile("['`\u2019\u00b4]")
_DIGITS = re.compile(r"\d+")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_CLAUSE_PUNCTUATION = re.compile(r"[.?!;,\n]+")
# Words that join two requests in one message ("where is my order and how do I return it").
_CONNECTORS = frozenset(
    [
        # English
        "and",
        "also",
        "plus",
        "then",
        "but",
        # Turkish
        "ve",
        "ayrica",
        "hem",
        "sonra",
        "ama",
        # Latvian
        "un",
        "ari",
        "bet",
        "pluss",
    ]
)


def fold(text: str) -> str:
    """Lower-case ASCII words separated by single spaces; digit runs become "0".

    Turkish dotted/dotless i have no Unicode decomposition and are folded by hand; every other
    accent (ş, ğ, ā, ļ, ž...) is dropped after NFKD decomposition.
    """
    text = text.replace("\u0131", "i").replace("\u0130", "i").lower()
    decomposed = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    text = _APOSTROPHES.sub("", text)
    text = _DIGITS.sub(" 0 ", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


def clauses(text: str) -> list[str]:
    """The folded parts of ``text`` that may each carry a request: split at sentence
    punctuation and at connectors ("and", "ve", "un"...). Parts without a letter are dropped."""
    parts: list[str] = []
    for chunk in _CLAUSE_PUNCTUATION.split(text):
        current: list[str] = []
        for word in chunk.split():
            if fold(word) in _CONNECTORS:
                parts.append(" ".join(current))
                current = []
            else:
                current.append(word)
        parts.append(" ".join(current))
    folded = (fold(part) for part in parts)
    return [part for part in folded if any(ch.isalpha() for ch in part)]


def phrase_matches(text: str, phrases: Iterable[str]) -> str | None:
    """The first of ``phrases`` found in ``text`` as whole words, or None.

    Case and accents do not matter. A word ending in "*" is a stem: "insan*" matches "insan",
    "insanla" and "insanlarla"; "temsilci*" matches "temsilcisine".
    """
    folded = f" {fold(text)} "
    for phrase in phrases:
        words = phrase.split()
        pattern_words: list[str] = []
        for word in words:
            stem = fold(word)
            if not stem:
                continue
            suffix = r"[a-z0-9]*" if word.endswith("*") else ""
            pattern_words.append(re.escape(stem) + suffix)
        if pattern_words and re.search(r"(?<= )" + " ".join(pattern_words) + r"(?= )", folded):
            return phrase
    return None
