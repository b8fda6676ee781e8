"""Import every module of the installed Patron package, without the dev extras.

Run from outside the checkout with a virtualenv that has only ``pip install .``: a runtime
import that is not a declared dependency (say ``httpx`` for webhooks) fails here, not in a
production image. Also checks that the apps' templates, static files and fixtures ship in the package.
Needs no database or Redis: the settings start nothing, and nothing here connects.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path


def main() -> int:
    scratch = tempfile.mkdtemp(prefix="patron-import-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PATRON_STATE_DIR=scratch,
        # Never contacted: they keep the serving entry points from starting embedded servers.
        DATABASE_URL="postgresql://patron@127.0.0.1:1/patron",
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    import django
    from django.conf import settings

    django.setup()
    packages = ["config", *settings.PATRON_APPS]
    source = Path(__file__).resolve().parent.parent
    failures: list[str] = []
    count = 0
    for name in packages:
        package = importlib.import_module(name)
        if Path(package.__file__ or "").resolve().is_relative_to(source):
            print(f"{name} was imported from the checkout, not the installed package")
            return 1
        modules = [name] + [
            info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}.")
        ]
        for module in modules:
            count += 1
            try:
                importlib.import_module(module)
            except Exception as exc:  # report every module that fails, then fail once
                failures.append(f"{module}: {exc.__class__.__name__}: {exc}")

    from django.contrib.staticfiles import finders
    from django.template.loader import get_template

    # The apps' own templates ship in the package; the project-wide ones (top-level
    # templates/) sit beside manage.py, as the Dockerfile copies them.
    for template in ("storefront/home.html", "chat/console.html", "engagement/unsubscribe.html"):
        try:
            get_template(template)
        except Exception as exc:  # a missing template is what this step looks for
            failures.append(f"template {template}: {exc}")
    for static in ("patron/widget.js", "chat/console.js"):
        if not finders.find(static):
            failures.append(f"static file {static} is not in the package")
    commerce = importlib.import_module("commerce")
    if not (Path(commerce.__file__ or "").parent / "fixtures" / "demo_catalog.json").exists():
        failures.append("commerce/fixtures/demo_catalog.json is not in the package")

    for failure in failures:
        print(failure)
    print(f"imported {count} modules, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
