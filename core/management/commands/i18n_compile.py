"""``manage.py i18n_compile``: compile ``locale/*/LC_MESSAGES/*.po`` into the ``.mo`` files Django
loads, in pure Python (``compilemessages`` needs GNU gettext's msgfmt, which a fresh clone or a
slim container may lack). The ``.mo`` files are committed; run this after editing a ``.po``.
``--check`` changes nothing and fails when a ``.mo`` says something its ``.po`` does not."""

from __future__ import annotations

import gettext
import io
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.i18n import mo_bytes, po_read


def _catalog(data: bytes) -> dict[Any, Any]:
    """The messages of a .mo file and its plural forms (not the header's other lines, which
    each compiler writes its own way)."""
    translations = gettext.GNUTranslations(io.BytesIO(data))
    messages = dict(translations._catalog)  # type: ignore[attr-defined]  # the parsed messages, to compare two files
    messages.pop("", None)
    messages[("plural", 0)] = [translations.plural(n) for n in range(200)]  # type: ignore[attr-defined]  # set by GNUTranslations from Plural-Forms
    return messages


class Command(BaseCommand):
    help = "Compile locale/*/LC_MESSAGES/*.po into .mo files (pure Python)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="Write nothing; fail if a .mo is out of date."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stale: list[str] = []
        for folder in settings.LOCALE_PATHS:
            for po in sorted(Path(folder).glob("*/LC_MESSAGES/*.po")):
                compiled = mo_bytes(po_read(po))
                mo = po.with_suffix(".mo")
                if options["check"]:
                    if not mo.exists() or _catalog(mo.read_bytes()) != _catalog(compiled):
                        stale.append(str(mo))
                    continue
                mo.write_bytes(compiled)
                self.stdout.write(f"compiled {mo}")
        if stale:
            raise CommandError("out of date (run manage.py i18n_compile): " + ", ".join(stale))
