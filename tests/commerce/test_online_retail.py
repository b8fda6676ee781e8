"""The real UCI Online Retail file, loaded once for this module, checked against the raw file.

The expected figures are derived here from the raw CSV with ``gzip`` and ``csv`` alone (not
with the importer's code), following the rules the importer documents; the README's
published counts are asserted too. Skips when the file is absent, except under CI
(``CI=true``), where the file must be at ``$PATRON_DATA_DIR`` and its absence fails.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from commerce import importers
from commerce.models import Category, Order, OrderLine, Product, Refund, RefundLine, Shopper

pytestmark = [pytest.mark.dataset, pytest.mark.django_db]

FILE = "online_retail.csv.gz"
ROOT = Path(__file__).resolve().parents[2]
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]*$")  # the README's non-product codes all fail this
CENT = Decimal("0.01")


def _dataset() -> Path:
    data_dir = os.environ.get("PATRON_DATA_DIR", "")
    if os.environ.get("CI") == "true":
        path = Path(data_dir) / FILE
        if not path.is_file():
            pytest.fail(f"CI=true but {FILE} is not at PATRON_DATA_DIR ({data_dir!r})")
        return path
    for path in ([Path(data_dir) / FILE] if data_dir else []) + [
        ROOT.parent / "shared" / "data" / FILE
    ]:
        if path.is_file():
            return path
    pytest.skip(f"{FILE} not found: set PATRON_DATA_DIR to the folder that holds it")


@dataclass
class Expected:
    customers: set[str] = field(default_factory=set)
    products: set[str] = field(default_factory=set)
    # invoice -> (customer, first time, {(code, price): quantity} in first-seen order)
    invoices: dict[str, tuple[str, str, dict[tuple[str, Decimal], int]]] = field(
        default_factory=dict
    )
    cancellations: dict[str, tuple[str, str, list[tuple[str, int]]]] = field(default_factory=dict)
    refunds: int = 0
    refund_lines: int = 0
    refunded_units: int = 0
    refunded_amount: Decimal = Decimal("0")
    unmatched_rows: int = 0
    unmatched_units: int = 0


def _derive(path: Path) -> Expected:
    expected = Expected()
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for invoice, code, _, quantity, when, price, customer, _ in reader:
            customer = str(int(float(customer))) if customer else ""
            if customer:
                expected.customers.add(customer)
            if invoice.startswith("A"):
                continue
            if invoice.startswith("C"):
                if customer:
                    entry = expected.cancellations.setdefault(invoice, (customer, when, []))
                    entry[2].append((code, -int(quantity)))
                continue
            if int(quantity) <= 0 or Decimal(price) <= 0:
                continue
            if PRODUCT_CODE.match(code):
                expected.products.add(code)
            if customer:
                lines = expected.invoices.setdefault(invoice, (customer, when, {}))[2]
                key = (code, Decimal(price).quantize(CENT, rounding=ROUND_HALF_UP))
                lines[key] = lines.get(key, 0) + int(quantity)

    # Cancellations take units from the customer's lines with that code placed at or before
    # them: latest order first, then the order's last line first.
    candidates: dict[tuple[str, str], list[list]] = defaultdict(list)
    for invoice, (customer, when, sales) in expected.invoices.items():
        for index, ((code, unit_price), units) in enumerate(sales.items()):
            candidates[(customer, code)].append([when, invoice, index, unit_price, units])
    for found in candidates.values():
        found.sort(key=lambda line: (line[0], line[1], line[2]), reverse=True)
    for _, (customer, when, rows) in sorted(
        expected.cancellations.items(), key=lambda item: (item[1][1], item[0])
    ):
        touched = set()
        for code, units in rows:
            wanted = units
            for line in candidates.get((customer, code), []):
                if wanted == 0:
                    break
                if line[0] > when or line[4] == 0:
                    continue
                take = min(line[4], wanted)
                line[4] -= take
                wanted -= take
                touched.add(line[1])
                expected.refund_lines += 1
                expected.refunded_units += take
                expected.refunded_amount += line[3] * take
            expected.unmatched_units += wanted
            expected.unmatched_rows += wanted == units
        expected.refunds += len(touched)
    return expected


@dataclass
class Loaded:
    expected: Expected
    first: importers.OnlineRetailSummary
    second: importers.OnlineRetailSummary
    counts_after_first: dict[str, int]
    seconds: float


def _counts() -> dict[str, int]:
    return {
        "shoppers": Shopper.objects.count(),
        "products": Product.objects.count(),
        "categories": Category.objects.count(),
        "orders": Order.objects.count(),
        "lines": OrderLine.objects.count(),
        "refunds": Refund.objects.count(),
        "refund_lines": RefundLine.objects.count(),
        "refunded_units": OrderLine.objects.aggregate(n=Sum("refunded_quantity"))["n"] or 0,
    }


@pytest.fixture(scope="module")
def loaded(django_db_setup, django_db_blocker) -> Iterator[Loaded]:
    """Import the file once (and again) in a transaction that is rolled back afterwards."""
    path = _dataset()
    expected = _derive(path)
    with django_db_blocker.unblock(), transaction.atomic():
        started = time.monotonic()
        first = importers.online_retail_import(path=path)
        seconds = time.monotonic() - started
        counts = _counts()
        second = importers.online_retail_import(path=path)
        # Check the deferred foreign keys once now; otherwise every test's teardown (which
        # checks constraints inside its savepoint, then rolls back) re-checks 400,000 rows.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        yield Loaded(expected, first, second, counts, seconds)
        transaction.set_rollback(True)


def test_the_raw_file_matches_its_published_figures(loaded):
    expected = loaded.expected
    assert len(expected.customers) == 4372
    assert len(expected.invoices) == 18532
    assert sum(len(lines) for _, _, lines in expected.invoices.values()) == 387_933


def test_counts_match_the_raw_file(loaded):
    expected = loaded.expected
    assert loaded.counts_after_first == {
        "shoppers": len(expected.customers),
        "products": len(expected.products),
        "categories": len(importers.CATEGORY_NAMES),
        "orders": len(expected.invoices),
        "lines": sum(len(lines) for _, _, lines in expected.invoices.values()),
        "refunds": expected.refunds,
        "refund_lines": expected.refund_lines,
        "refunded_units": expected.refunded_units,
    }
    assert loaded.counts_after_first["shoppers"] == 4372
    assert loaded.counts_after_first["products"] == 3900
    assert loaded.counts_after_first["orders"] == 18532
    assert loaded.first.rows_read == 541_909
    assert (
        loaded.first.cancellation_rows_unmatched,
        loaded.first.cancellation_units_unmatched,
    ) == (
        expected.unmatched_rows,
        expected.unmatched_units,
    )


def test_money_matches_the_raw_file(loaded):
    expected = loaded.expected
    invoiced = sum(
        (
            price * quantity
            for _, _, lines in expected.invoices.values()
            for (_, price), quantity in lines.items()
        ),
        Decimal("0"),
    )
    totals = Order.objects.aggregate(total=Sum("total"), refunded=Sum("refunded_total"))
    assert totals["total"] == invoiced
    assert totals["refunded"] == expected.refunded_amount
    assert Refund.objects.aggregate(n=Sum("amount"))["n"] == expected.refunded_amount
    assert not Order.objects.filter(refunded_total__gt=0, status="fulfilled").exists()


def test_a_second_run_changes_nothing(loaded):
    second = loaded.second
    assert _counts() == loaded.counts_after_first
    assert (second.shoppers_created, second.products_created, second.categories_created) == (
        0,
        0,
        0,
    )
    assert (second.orders_created, second.order_lines_created) == (0, 0)
    assert (second.refunds_created, second.refund_lines_created) == (0, 0)


def test_known_customers_and_outliers(loaded):
    # Customer 12346's 74,215 units (invoice 541431) were all cancelled by C541433.
    outlier = Order.objects.get(number="UCI-541431")
    assert outlier.shopper is not None
    assert outlier.shopper.customer_id == "12346"
    assert (outlier.status, outlier.refunded_total) == ("refunded", outlier.total)
    assert Refund.objects.get(number="UCI-C541433").order_id == outlier.pk
    heart = Product.objects.select_related("category").get(sku="85123A")
    assert heart.title == "CREAM HANGING HEART T-LIGHT HOLDER"
    assert heart.category is not None
    assert heart.category.name == "Candles & Lights"
    assert not Product.objects.filter(sku__in=["POST", "DOT", "M", "AMAZONFEE", "B"]).exists()
    assert loaded.seconds < 120
