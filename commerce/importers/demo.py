"""The built-in demo catalog: products, shoppers and their recent orders."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from commerce import services
from commerce.importers.catalog import CatalogImportSummary, catalog_import, catalog_rows_parse
from commerce.importers.orders import OrdersImportSummary, order_rows_group, orders_import

# --- The built-in demo catalog -----------------------------------------------------------

DEMO_CATALOG = Path(__file__).resolve().parent.parent / "fixtures" / "demo_catalog.json"


@dataclass(frozen=True)
class DemoCatalogSummary:
    catalog: CatalogImportSummary
    orders: OrdersImportSummary
    shoppers: int


@transaction.atomic
def demo_catalog_load(*, path: Path = DEMO_CATALOG) -> DemoCatalogSummary:
    """Load the built-in demo catalog, its shoppers and their orders; a re-run changes nothing.

    Demo order rows say ``days_ago`` instead of ``placed_at`` so the orders stay recent; they
    are placed at noon UTC that many days before today.
    """
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    catalog = catalog_import(rows=catalog_rows_parse(rows=data["products"]))
    for person in data["shoppers"]:
        shopper = services.shopper_resolve(customer_id=person["customer_id"])
        services.shopper_update_traits(
            shopper=shopper,
            traits={
                key: person[key]
                for key in ("email", "first_name", "last_name", "country", "email_consent")
                if key in person and not getattr(shopper, key)
            },
        )
    today = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    rows = [
        {**row, "placed_at": today - dt.timedelta(days=int(row.pop("days_ago", 0)))}
        for row in data["orders"]
    ]
    orders = orders_import(orders=order_rows_group(rows=rows))
    return DemoCatalogSummary(catalog=catalog, orders=orders, shoppers=len(data["shoppers"]))
