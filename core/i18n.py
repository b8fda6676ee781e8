"""Languages Patron ships (``settings.LANGUAGES``): naming them from a locale, and reading and
compiling their catalogs (``locale/<code>/LC_MESSAGES/*.po``) without GNU gettext."""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


def language_supported() -> list[str]:
    """The codes Patron ships translations for (``settings.LANGUAGES``), e.g. ``["en", "tr"]``."""
    return [code for code, _name in settings.LANGUAGES]


def language_normalise(code: str | None) -> str:
    """The shipped language a locale names: ``"tr-TR"`` → ``"tr"``, ``"LV"`` → ``"lv"``;
    ``""`` for none, garbage or a language Patron does not ship (``"de-DE"``)."""
    base = (code or "").strip().replace("_", "-").split("-")[0].lower()
    return base if base in language_supported() else ""


# --- Catalogs without GNU gettext ----------------------------------------------------------
# ``compilemessages`` needs GNU gettext's msgfmt; these read a .po and write the .mo Django
# loads (GNU's format: https://www.gnu.org/software/gettext/manual/html_node/MO-Files.html) in
# pure Python, for ``manage.py i18n_compile`` and the catalog tests.


@dataclass(frozen=True)
class PoEntry:
    """One message of a .po file; ``msgstr`` has one string, or one per plural form."""

    msgid: str
    msgstr: tuple[str, ...]
    msgid_plural: str = ""
    msgctxt: str | None = None
    fuzzy: bool = False


def _po_string(lines: list[str]) -> str:
    return "".join(ast.literal_eval(line) for line in lines)


def po_read(path: Path) -> list[PoEntry]:
    """The entries of the .po file at ``path``, the header (msgid "") first; obsolete (#~)
    entries left out. Raises ``ValueError`` on a line it cannot read."""
    entries: list[PoEntry] = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        fields: dict[str, list[str]] = {}
        current = ""
        fuzzy = False
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            if not line or line.startswith("#"):
                continue
            if line.startswith('"'):
                if not current:
                    raise ValueError(f"{path}: a string outside any field: {line}")
                fields[current].append(line)
                continue
            keyword, _, rest = line.partition(" ")
            current = keyword
            fields[current] = [rest]
        if "msgid" not in fields:
            continue
        plural_forms = sorted(
            (int(k[len("msgstr[") : -1]), v) for k, v in fields.items() if k.startswith("msgstr[")
        )
        msgstr = (
            tuple(_po_string(v) for _, v in plural_forms)
            if plural_forms
            else (_po_string(fields.get("msgstr", ['""'])),)
        )
        entries.append(
            PoEntry(
                msgid=_po_string(fields["msgid"]),
                msgstr=msgstr,
                msgid_plural=_po_string(fields.get("msgid_plural", ['""'])),
                msgctxt=_po_string(fields["msgctxt"]) if "msgctxt" in fields else None,
                fuzzy=fuzzy,
            )
        )
    return entries


def mo_bytes(entries: list[PoEntry]) -> bytes:
    """The .mo file for ``entries``: translated, non-fuzzy entries and the header, as msgfmt
    writes them (without the optional hash table, which readers do not need)."""
    pairs: dict[bytes, bytes] = {}
    for entry in entries:
        header = entry.msgid == "" and entry.msgctxt is None
        if not header and (entry.fuzzy or not all(entry.msgstr)):
            continue
        key = entry.msgid
        if entry.msgid_plural:
            key += "\0" + entry.msgid_plural
        if entry.msgctxt is not None:
            key = entry.msgctxt + "\x04" + key
        pairs[key.encode()] = "\0".join(entry.msgstr).encode()
    keys = sorted(pairs)
    count = len(keys)
    originals_at = 7 * 4
    translations_at = originals_at + count * 8
    data_at = translations_at + count * 8
    data = bytearray()
    originals: list[int] = []
    translations: list[int] = []
    for original in keys:
        originals += [len(original), data_at + len(data)]
        data += original + b"\0"
    for original in keys:
        value = pairs[original]
        translations += [len(value), data_at + len(data)]
        data += value + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, count, originals_at, translations_at, 0, data_at)
    return (
        head
        + struct.pack(f"<{2 * count}I", *originals)
        + struct.pack(f"<{2 * count}I", *translations)
        + bytes(data)
    )
