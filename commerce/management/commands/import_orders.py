"""Import orders from a CSV or JSON file with one row per order line."""

from __future__ import annotations

import zoneinfo
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce import importers
from commerce.models import Order
from core.exceptions import ApplicationError


class Command(BaseCommand):
    help = (
        "Record orders from a CSV or JSON file (chosen by the extension; .gz allowed), one "
        f"row per order line. Columns: {', '.join(importers.ORDER_FIELDS)}. Rows with the "
        "same number are one order; number, sku, quantity and unit_price are required. "
        "customer_id finds or creates the shopper; an order without one is a guest order. "
        "placed_at is ISO 8601 (without an offset it is read in --time-zone). status is one "
        f"of {', '.join(Order.Status.values)} (default paid). An order number that exists "
        "already is left as it is, so importing a file twice records each order once. All or "
        "nothing: one bad row stops the import, naming the row, and nothing is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--time-zone", default="UTC", help="zone of times without an offset (IANA name)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            zone = zoneinfo.ZoneInfo(options["time_zone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise CommandError(f"unknown time zone {options['time_zone']!r}") from None
        try:
            rows = importers.rows_read(path=options["path"])
            orders = importers.order_rows_group(rows=rows, zone=zone)
            summary = importers.orders_import(orders=orders)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"orders: {summary.orders_created} created ({summary.lines_created} lines), "
            f"{summary.orders_existing} already there; "
            f"shoppers: {summary.shoppers_created} created"
        )
