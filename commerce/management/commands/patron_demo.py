"""Load Patron's demo data: the UCI Online Retail file when found, else the built-in catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce import importers
from commerce.models import WriteKey
from core.exceptions import ApplicationError


class Command(BaseCommand):
    help = (
        "Load demo data; safe to run again (nothing is duplicated). When the UCI Online Retail "
        f"file is found (PATH, $PATRON_DATA_DIR/{importers.ONLINE_RETAIL_FILE}, or "
        "../shared/data/ beside the checkout) it is loaded as `import_online_retail` "
        "describes: all of it by default (about 20 s), or the last N months with --months. "
        "Otherwise the built-in demo catalog (commerce/fixtures/demo_catalog.json: 40 "
        "products in 6 categories, 5 shoppers, 9 orders) is loaded. A write key named "
        '"Demo shop" is created if there is none.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "path", nargs="?", type=Path, help="the UCI file (online_retail.csv.gz)"
        )
        parser.add_argument(
            "--months",
            type=int,
            default=0,
            help="load only the file's last N months (0: all of it)",
        )
        parser.add_argument(
            "--builtin",
            action="store_true",
            help="load the built-in catalog even if the file exists",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["months"] < 0:
            raise CommandError("--months must be 0 or more")
        path = (
            None
            if options["builtin"]
            else options["path"] or importers.online_retail_default_path()
        )
        if options["path"] is not None and not options["path"].is_file():
            raise CommandError(f"{options['path']}: no such file")
        try:
            if path is not None:
                self._load_online_retail(
                    path, months=options["months"], progress=not options["no_progress"]
                )
            else:
                self._load_builtin()
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if not WriteKey.objects.filter(name="Demo shop").exists():
            WriteKey.objects.create(name="Demo shop")
            self.stdout.write('write key "Demo shop" created')

    def _load_online_retail(self, path: Path, *, months: int, progress: bool) -> None:
        since = None
        if months:
            last = importers.online_retail_last_time(path=path)
            since = importers.months_before(last, months=months)
        self.stdout.write(f"loading {path}" + (f" from {since:%Y-%m-%d}" if since else ""))
        summary = importers.online_retail_import(
            path=path, since=since, progress=progress and self.stderr.isatty()
        )
        for line in summary.lines():
            self.stdout.write(f"  {line}")

    def _load_builtin(self) -> None:
        summary = importers.demo_catalog_load()
        self.stdout.write(f"loaded the built-in demo catalog ({importers.DEMO_CATALOG.name})")
        self.stdout.write(
            f"  products: {summary.catalog.products_created} created, "
            f"{summary.catalog.products_updated} updated, "
            f"{summary.catalog.products_unchanged} unchanged"
        )
        self.stdout.write(f"  categories: {summary.catalog.categories_created} created")
        self.stdout.write(f"  shoppers: {summary.shoppers}")
        self.stdout.write(
            f"  orders: {summary.orders.orders_created} created, "
            f"{summary.orders.orders_existing} already there"
        )
