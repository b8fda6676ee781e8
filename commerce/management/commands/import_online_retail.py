"""Load the UCI Online Retail file into shoppers, categories, products, orders and refunds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce import importers
from core.exceptions import ApplicationError

HELP = f"""Load the UCI Online Retail file (online_retail.csv.gz) into Patron. Re-running changes
nothing. PATH defaults to $PATRON_DATA_DIR/{importers.ONLINE_RETAIL_FILE}, else
../shared/data/ beside the checkout.

What becomes what:
  Shopper   one per CustomerID ("17850.0" -> customer_id "17850"); country from the
            customer's latest row; created_at = their first row's time.
  Product   one per product StockCode sold at least once (quantity > 0, price > 0, to
            anyone), SKU = StockCode exactly; title = most recent non-empty description,
            stripped; price = most recent unit price (GBP); stock = --stock; category from
            a keyword in the title ({len(importers.CATEGORY_NAMES) - 1} categories, else "Other"). Non-product codes
            (POST, DOT, M, m, C2, D, S, BANK CHARGES, AMAZONFEE, CRUK, B, PADS, DCGS*,
            gift_0001_*) are not products.
  Order     "UCI-<InvoiceNo>" per invoice with a customer and at least one row with quantity
            > 0 and price > 0; status fulfilled; placed at the invoice's first time, read
            as Europe/London. One line per (StockCode, unit price): exact duplicate rows are
            repeated scans and add up. Non-product rows (postage, manual) are lines without a
            product, so the order total equals the invoice. Prices rounded to the penny.
            Guest invoices (no CustomerID) are left out unless --guests.
  Refund    "UCI-C<InvoiceNo>" per cancellation (C) invoice with a customer: each cancelled
            row takes units from that customer's imported lines with the same StockCode
            placed at or before it, most recent order first; one refund per order touched
            ("-2", "-3" suffixes); units that match nothing are counted, not stored.
  Left out  A (bad-debt) invoices, cancellations without a customer, non-cancellation rows
            with quantity <= 0 or price <= 0 (stock adjustments, free samples).
"""


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        from argparse import RawDescriptionHelpFormatter

        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", type=Path, help="the .csv or .csv.gz file")
        parser.add_argument(
            "--guests", action="store_true", help="also import invoices without a customer"
        )
        parser.add_argument(
            "--since",
            type=dt.date.fromisoformat,
            help="only rows on or after this date (YYYY-MM-DD, Europe/London)",
        )
        parser.add_argument(
            "--stock",
            type=int,
            default=importers.DEFAULT_STOCK,
            help="units in stock for new products (the file has no stock levels)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["path"] or importers.online_retail_default_path()
        if path is None:
            raise CommandError(
                f"no {importers.ONLINE_RETAIL_FILE} found: pass its path or set PATRON_DATA_DIR"
            )
        since = None
        if options["since"] is not None:
            since = dt.datetime.combine(
                options["since"], dt.time(), tzinfo=importers.ONLINE_RETAIL_ZONE
            )
        progress = not options["no_progress"] and self.stderr.isatty()
        try:
            summary = importers.online_retail_import(
                path=path,
                since=since,
                include_guests=options["guests"],
                stock=options["stock"],
                progress=progress,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        for line in summary.lines():
            self.stdout.write(line)
