"""Import a product catalog from a CSV or JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce import importers
from core.exceptions import ApplicationError


class Command(BaseCommand):
    help = (
        "Create or update products from a CSV or JSON file (chosen by the extension; .gz "
        f"allowed). Columns: {', '.join(importers.CATALOG_FIELDS)}. sku is the key; a new "
        "product needs a title and a price; an empty or missing value keeps the product's "
        'current value. category is a path such as "Home/Kitchen" (every level is created). '
        "All or nothing: one bad row stops the import, naming the row, and nothing is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rows = importers.rows_read(path=options["path"])
            summary = importers.catalog_import(rows=importers.catalog_rows_parse(rows=rows))
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"products: {summary.products_created} created, {summary.products_updated} updated, "
            f"{summary.products_unchanged} unchanged; "
            f"categories: {summary.categories_created} created"
        )
