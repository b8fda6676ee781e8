"""Every text Patron shows or sends has a Turkish and a Latvian translation (#11 point 3).

The catalogs are ``locale/{tr,lv}/LC_MESSAGES/{django,djangojs}.po``; the compiled ``.mo`` files
are committed beside them, so a fresh clone needs no GNU gettext. These tests read them in pure
Python:

- every entry is translated (no empty ``msgstr``, nothing fuzzy) with the same placeholders;
- what ``makemessages`` would extract is in the catalogs: ``gettext``-family calls in Python
  (``ast``), ``{% translate %}``/``{% blocktranslate %}`` in templates (Django's own
  ``templatize``, which ``makemessages`` uses) and ``gettext(...)`` in the widget and console
  JavaScript; a new string without a translation fails here;
- each ``.mo`` says what its ``.po`` says (a ``.po`` edited without recompiling fails).

To update after adding strings: ``python manage.py makemessages -l tr -l lv --no-location
-i ".venv/*" -i "tests/*"`` and the same with ``-d djangojs`` (GNU gettext's xgettext), or add
the entries by hand; translate; then ``python manage.py i18n_compile`` (pure Python).
"""

from __future__ import annotations

import ast
import gettext
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils.translation.template import templatize

from core.i18n import PoEntry, mo_bytes, po_read

ROOT = Path(settings.BASE_DIR)
LOCALE = ROOT / "locale"
TRANSLATED = ("tr", "lv")
APPS = (*settings.PATRON_APPS, "config")  # every app Patron installs, and the project's own
TEMPLATE_DIRS = [ROOT / "templates", *(ROOT / app / "templates" for app in APPS)]
SCRIPTS = [ROOT / "storefront/static/patron/widget.js", ROOT / "chat/static/chat/console.js"]
GETTEXT_FUNCTIONS = {
    "_",
    "gettext",
    "gettext_lazy",
    "gettext_noop",
    "ngettext",
    "ngettext_lazy",
    "pgettext",
    "pgettext_lazy",
}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")


@dataclass
class Entry:
    msgid: str
    msgid_plural: str
    msgstr: list[str]
    fuzzy: bool


def po_entries(path: Path) -> dict[str, Entry]:
    """The entries of a .po file by msgid (the header, msgid "", left out)."""
    return {
        e.msgid: Entry(
            msgid=e.msgid, msgid_plural=e.msgid_plural, msgstr=list(e.msgstr), fuzzy=e.fuzzy
        )
        for e in po_read(path)
        if e.msgid
    }


def python_msgids() -> set[str]:
    found: set[str] = set()
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name not in GETTEXT_FUNCTIONS:
                    continue
                first = node.args[1] if name.startswith("pgettext") else node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
    return found


# templatize writes each string as a Python literal: `` gettext(u'…') ``, `` ngettext(u'…', …``.
_TEMPLATE_CALL = re.compile(
    r"\b(?:gettext|ngettext|pgettext|npgettext)\(u?((?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"))"
)


def template_msgids() -> set[str]:
    found: set[str] = set()
    for folder in TEMPLATE_DIRS:
        for path in folder.rglob("*.html"):
            # The admin's own templates speak to staff in Django's catalogs.
            if "admin" in path.relative_to(folder).parts:
                continue
            code = templatize(path.read_text(encoding="utf-8"), origin=str(path))
            found |= {ast.literal_eval(m.group(1)) for m in _TEMPLATE_CALL.finditer(code)}
    return found


_JS_CALL = re.compile(r"\bgettext\(\"((?:[^\"\\]|\\.)*)\"\)")


def script_msgids() -> set[str]:
    found: set[str] = set()
    for path in SCRIPTS:
        text = path.read_text(encoding="utf-8")
        found |= {json.loads(f'"{m.group(1)}"') for m in _JS_CALL.finditer(text)}
    return found


def _placeholders(text: str) -> set[str]:
    return {a or b for a, b in PLACEHOLDER.findall(text)}


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_every_entry_is_translated_with_the_same_placeholders(language: str, domain: str) -> None:
    entries = po_entries(LOCALE / language / "LC_MESSAGES" / f"{domain}.po")

    assert entries
    untranslated = [e.msgid for e in entries.values() if not all(e.msgstr) or not e.msgstr]
    fuzzy = [e.msgid for e in entries.values() if e.fuzzy]
    placeholders = [
        e.msgid
        for e in entries.values()
        if any(_placeholders(s) != _placeholders(e.msgid) for s in e.msgstr)
    ]
    assert untranslated == []
    assert fuzzy == []
    assert placeholders == []


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_string_in_the_code_is_in_the_catalogs(language: str) -> None:
    python_and_templates = po_entries(LOCALE / language / "LC_MESSAGES" / "django.po")
    scripts = po_entries(LOCALE / language / "LC_MESSAGES" / "djangojs.po")

    extracted = python_msgids() | template_msgids()
    assert extracted >= {"This conversation has been resolved.", "Help centre", "Unsubscribe"}
    assert sorted(extracted - python_and_templates.keys()) == []
    from_scripts = script_msgids()
    assert from_scripts >= {"Talk to a person", "Inbox · Patron Console"}
    assert sorted(from_scripts - scripts.keys()) == []


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_the_committed_mo_files_match_their_po_files(language: str, domain: str) -> None:
    folder = LOCALE / language / "LC_MESSAGES"
    entries = po_entries(folder / f"{domain}.po")
    with (folder / f"{domain}.mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)

    stale = [
        e.msgid
        for e in entries.values()
        if (
            any(compiled.ngettext(e.msgid, e.msgid_plural, n) not in e.msgstr for n in (1, 2, 5))
            if e.msgid_plural
            else compiled.gettext(e.msgid) != e.msgstr[0]
        )
    ]
    assert stale == []


def test_i18n_compile_writes_mo_files_django_reads_and_check_finds_stale_ones(
    tmp_path: Path, settings: Any
) -> None:
    folder = tmp_path / "lv" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po = folder / "django.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n'
        '"Plural-Forms: nplurals=3; plural=(n % 10 == 0 || n % 100 >= 11 && n % 100 <= 19) ? 0 '
        ': (n % 10 == 1 && n % 100 != 11) ? 1 : 2;\\n"\n\n'
        'msgid "Send"\nmsgstr "Sūtīt"\n\n'
        '#, fuzzy\nmsgid "Save"\nmsgstr "Saglabāt?"\n\n'
        'msgid "%(n)s review"\nmsgid_plural "%(n)s reviews"\n'
        'msgstr[0] "%(n)s atsauksmju"\nmsgstr[1] "%(n)s atsauksme"\nmsgstr[2] "%(n)s atsauksmes"\n',
        encoding="utf-8",
    )
    settings.LOCALE_PATHS = [tmp_path]

    with pytest.raises(CommandError, match="out of date"):
        call_command("i18n_compile", "--check")
    call_command("i18n_compile", stdout=io.StringIO())
    call_command("i18n_compile", "--check")

    with (folder / "django.mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    assert compiled.gettext("Send") == "Sūtīt"
    assert compiled.gettext("Save") == "Save"  # fuzzy: left out
    assert [compiled.ngettext("%(n)s review", "%(n)s reviews", n) for n in (1, 3, 10)] == [
        "%(n)s atsauksme",
        "%(n)s atsauksmes",
        "%(n)s atsauksmju",
    ]
    # A .po edited afterwards makes the .mo stale again.
    po.write_text(po.read_text(encoding="utf-8").replace("Sūtīt", "Nosūtīt"), encoding="utf-8")
    with pytest.raises(CommandError, match="out of date"):
        call_command("i18n_compile", "--check")


def test_mo_bytes_keeps_contexts_and_leaves_untranslated_entries_out() -> None:
    data = mo_bytes(
        [
            PoEntry(msgid="", msgstr=("Content-Type: text/plain; charset=UTF-8\n",)),
            PoEntry(msgid="May", msgstr=("Mayıs",), msgctxt="month"),
            PoEntry(msgid="Later", msgstr=("",)),
        ]
    )

    compiled = gettext.GNUTranslations(io.BytesIO(data))
    assert compiled.pgettext("month", "May") == "Mayıs"
    assert compiled.gettext("May") == "May"
    assert compiled.gettext("Later") == "Later"
