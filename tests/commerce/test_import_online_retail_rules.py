"""The UCI Online Retail loader's rules, on a small file in the real format with every quirk.

The real file is loaded in ``test_online_retail.py``; here each rule has a row that shows it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from commerce import importers
from commerce.models import Order, OrderLine, Product, Refund, RefundLine, Shopper
from core.exceptions import ValidationError

pytestmark = pytest.mark.django_db

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
ROWS = """\
C536371,71053,WHITE METAL LANTERN,-2,2010-12-01 08:00:00,3.39,17850.0,United Kingdom
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER ,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536365,POST,POSTAGE,1,2010-12-01 08:26:00,18.0,17850.0,United Kingdom
536368,23166,MEDIUM CERAMIC TOP STORAGE JAR,74215,2011-01-18 10:01:00,1.04,12346.0,Norway
C536369,23166,MEDIUM CERAMIC TOP STORAGE JAR,-74215,2011-01-18 10:17:00,1.04,12346.0,Iceland
536373,21275,?,-5,2011-02-01 09:00:00,0.0,,United Kingdom
536374,22000,FREE SAMPLE,1,2011-02-02 09:00:00,0.0,13047.0,United Kingdom
536376,22633,HAND WARMER UNION JACK,1,2011-03-01 12:00:00,1.85,17850.0,United Kingdom
536376,PADS,PADS TO MATCH ALL CUSHIONS,1,2011-03-01 12:00:00,0.001,17850.0,United Kingdom
536366,85123A,WHITE HANGING HEART T-LIGHT HOLDER,10,2011-06-15 10:00:00,2.95,17850.0,United Kingdom
536367,84879,"ASSORTED COLOUR BIRD ORNAMENT, LARGE",32,2011-06-16 11:00:00,1.69,,United Kingdom
536375,gift_0001_20,Dotcomgiftshop Gift Voucher £20.00,1,2011-06-16 11:05:00,17.02,,United Kingdom
C536370,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-12,2011-07-01 09:00:00,2.55,17850.0,United Kingdom
C536370,D,Discount,-1,2011-07-01 09:00:00,5.0,17850.0,United Kingdom
C536372,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2011-07-02 09:00:00,2.55,,United Kingdom
A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,,United Kingdom
"""


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "online_retail.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(HEADER + ROWS)
    return path


def _orders() -> dict[str, tuple[str, Decimal, Decimal, str | None]]:
    return {
        order.number: (
            order.status,
            order.total,
            order.refunded_total,
            order.shopper.customer_id if order.shopper else None,
        )
        for order in Order.objects.select_related("shopper")
    }


def test_every_rule_of_the_file(sample):
    summary = importers.online_retail_import(path=sample)

    # Shoppers: every CustomerID, ".0" stripped, country from the latest row.
    assert sorted(Shopper.objects.values_list("customer_id", "country")) == [
        ("12346", "Iceland"),
        ("13047", "United Kingdom"),
        ("17850", "United Kingdom"),
    ]
    assert Shopper.objects.get(customer_id="17850").created_at == dt.datetime(
        2010, 12, 1, 8, 0, tzinfo=dt.UTC
    )
    # Products: product codes sold at least once (also to a guest), latest title and price.
    products = {
        p.sku: (p.title, p.price, p.category.name if p.category else None, p.image_url, p.stock)
        for p in Product.objects.select_related("category")
    }
    assert products == {
        "85123A": (
            "WHITE HANGING HEART T-LIGHT HOLDER",
            Decimal("2.95"),
            "Candles & Lights",
            "/static/patron/img/categories/candles-lights.svg",
            100,
        ),
        "71053": (
            "WHITE METAL LANTERN",
            Decimal("3.39"),
            "Candles & Lights",
            "/static/patron/img/categories/candles-lights.svg",
            100,
        ),
        "23166": (
            "MEDIUM CERAMIC TOP STORAGE JAR",
            Decimal("1.04"),
            "Kitchen & Dining",
            "/static/patron/img/categories/kitchen-dining.svg",
            100,
        ),
        "22633": (
            "HAND WARMER UNION JACK",
            Decimal("1.85"),
            "Fashion & Accessories",
            "/static/patron/img/categories/fashion-accessories.svg",
            100,
        ),
        "84879": (
            "ASSORTED COLOUR BIRD ORNAMENT, LARGE",
            Decimal("1.69"),
            "Garden & Outdoors",
            "/static/patron/img/categories/garden-outdoors.svg",
            100,
        ),
    }
    # Orders: customer invoices; refunds matched most recent order first.
    assert _orders() == {
        "UCI-536365": ("partially_refunded", Decimal("73.98"), Decimal("5.10"), "17850"),
        "UCI-536366": ("refunded", Decimal("29.50"), Decimal("29.50"), "17850"),
        "UCI-536368": ("refunded", Decimal("77183.60"), Decimal("77183.60"), "12346"),
        "UCI-536376": ("fulfilled", Decimal("1.85"), Decimal("0.00"), "17850"),
    }
    lines = {
        (line.order.number, line.sku): (line.quantity, line.unit_price, line.refunded_quantity)
        for line in OrderLine.objects.select_related("order")
    }
    assert lines == {
        ("UCI-536365", "85123A"): (6, Decimal("2.55"), 2),
        ("UCI-536365", "71053"): (12, Decimal("3.39"), 0),  # duplicate scans add up
        ("UCI-536365", "POST"): (1, Decimal("18.00"), 0),
        ("UCI-536366", "85123A"): (10, Decimal("2.95"), 10),
        ("UCI-536368", "23166"): (74215, Decimal("1.04"), 74215),
        ("UCI-536376", "22633"): (1, Decimal("1.85"), 0),
        ("UCI-536376", "PADS"): (1, Decimal("0.00"), 0),  # £0.001 rounds to the penny
    }
    assert OrderLine.objects.get(sku="POST").product is None
    placed = Order.objects.get(number="UCI-536366").placed_at
    assert placed == dt.datetime(2011, 6, 15, 9, 0, tzinfo=dt.UTC)  # 10:00 BST
    refunds = {
        r.number: (r.order.number, r.amount, r.refunded_at.isoformat())
        for r in Refund.objects.select_related("order")
    }
    assert refunds == {
        "UCI-C536369": ("UCI-536368", Decimal("77183.60"), "2011-01-18T10:17:00+00:00"),
        "UCI-C536370": ("UCI-536366", Decimal("29.50"), "2011-07-01T08:00:00+00:00"),
        "UCI-C536370-2": ("UCI-536365", Decimal("5.10"), "2011-07-01T08:00:00+00:00"),
    }
    assert sorted(RefundLine.objects.values_list("quantity", "amount")) == [
        (2, Decimal("5.10")),
        (10, Decimal("29.50")),
        (74215, Decimal("77183.60")),
    ]
    assert summary.shoppers_created == 3
    assert summary.products_created == 5
    assert summary.categories_created == len(importers.CATEGORY_NAMES)
    assert (summary.orders_created, summary.order_lines_created) == (4, 7)
    assert (summary.refunds_created, summary.refund_lines_created) == (3, 3)
    assert summary.cancellations_in_file == 3
    # C536371 came before any order; C536370's discount line matches nothing.
    assert (summary.cancellation_rows_unmatched, summary.cancellation_units_unmatched) == (2, 3)
    assert summary.skipped_rows == {
        "adjustment_or_free": 2,
        "guest": 2,
        "cancellation_without_customer": 1,
        "bad_debt": 1,
    }


def test_a_second_run_changes_nothing(sample):
    importers.online_retail_import(path=sample)
    before = (_orders(), sorted(Refund.objects.values_list("number", "amount")))

    again = importers.online_retail_import(path=sample)

    assert (_orders(), sorted(Refund.objects.values_list("number", "amount"))) == before
    assert (again.shoppers_created, again.products_created, again.categories_created) == (0, 0, 0)
    assert (again.orders_created, again.order_lines_created, again.refunds_created) == (0, 0, 0)
    assert OrderLine.objects.count() == 7
    assert RefundLine.objects.count() == 3
    assert OrderLine.objects.get(order__number="UCI-536366").refunded_quantity == 10


def test_guest_invoices_become_guest_orders_on_request(sample):
    summary = importers.online_retail_import(path=sample, include_guests=True)

    guests = Order.objects.filter(shopper__isnull=True).order_by("number")
    assert [(o.number, o.total) for o in guests] == [
        ("UCI-536367", Decimal("54.08")),
        ("UCI-536375", Decimal("17.02")),
    ]
    assert OrderLine.objects.get(order__number="UCI-536375").product is None
    assert summary.orders_created == 6
    assert "guest" not in summary.skipped_rows


def test_a_slice_keeps_only_rows_from_its_start(sample):
    since = dt.datetime(2011, 6, 1, tzinfo=importers.ONLINE_RETAIL_ZONE)

    summary = importers.online_retail_import(path=sample, since=since)

    assert list(Order.objects.values_list("number", flat=True)) == ["UCI-536366"]
    assert list(Refund.objects.values_list("number", flat=True)) == ["UCI-C536370"]
    assert summary.skipped_rows["before_slice"] == 11
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["84879", "85123A"]


def test_the_command_prints_a_summary_and_refuses_a_foreign_file(sample, tmp_path):
    out = io.StringIO()
    call_command("import_online_retail", str(sample), "--no-progress", stdout=out)
    wrong = tmp_path / "other.csv"
    wrong.write_text("sku,title\nA,B\n")

    with pytest.raises(CommandError, match="expected the UCI Online Retail columns"):
        call_command("import_online_retail", str(wrong), "--no-progress")
    with pytest.raises(ValidationError):
        importers.online_retail_import(path=wrong)

    printed = out.getvalue().splitlines()
    assert printed[:7] == [
        "rows read: 18",
        "shoppers: 3 created of 3 customers",
        "products: 5 created of 5 product codes",
        f"categories: {len(importers.CATEGORY_NAMES)} created",
        "orders: 4 created of 4 invoices (7 lines)",
        "refunds: 3 created (3 lines) from 3 cancellation invoices",
        "cancellation rows not matched to an earlier order: 2 (3 units)",
    ]
    assert Order.objects.count() == 4


def test_the_keyword_categories():
    assert importers.category_for_title("WHITE HANGING HEART T-LIGHT HOLDER") == "Candles & Lights"
    assert importers.category_for_title("PAPER CHAIN KIT 50'S CHRISTMAS") == "Christmas"
    assert importers.category_for_title("JUMBO BAG RED RETROSPOT") == "Bags & Purses"
    assert importers.category_for_title("SET 7 BABUSHKA NESTING BOXES") == "Storage"
    assert importers.category_for_title("REGENCY TEACUP AND SAUCER") == "Kitchen & Dining"
    assert importers.category_for_title("MINI PAINT SET VINTAGE") == "Other"
    assert importers.is_product_code("85123A")
    assert not importers.is_product_code("DCGSSGIRL")
    assert not importers.is_product_code("gift_0001_50")
    assert not importers.is_product_code("BANK CHARGES")
