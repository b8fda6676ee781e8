"""``manage.py import_orders``: one row per line, grouped by order number, idempotent."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from commerce.models import Order, OrderLine, Product, Shopper

pytestmark = pytest.mark.django_db

CSV = """number,customer_id,email,placed_at,currency,sku,quantity,unit_price,status
1001,c-1,Ada@Example.com,2024-03-01 10:30:00,GBP,MUG,2,4.50,fulfilled
1001,,,,,TOWEL,1,5.00,
1002,,guest@example.com,2024-03-02T09:00:00+02:00,eur,MUG,1,4.00,
"""


def _run(path, *args: str) -> str:
    out = io.StringIO()
    call_command("import_orders", str(path), *args, stdout=out)
    return out.getvalue().strip()


def test_rows_become_orders_with_shoppers_and_a_rerun_adds_nothing(tmp_path):
    Product.objects.create(sku="MUG", title="Polka dot mug", price=Decimal("4.50"))
    path = tmp_path / "orders.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(CSV)

    first = _run(path, "--time-zone", "Europe/London")
    second = _run(path)

    assert first == "orders: 2 created (3 lines), 0 already there; shoppers: 1 created"
    assert second == "orders: 0 created (0 lines), 2 already there; shoppers: 0 created"
    member = Order.objects.get(number="1001")
    assert (member.status, member.source, member.total, member.currency) == (
        "fulfilled",
        "import",
        Decimal("14.00"),
        "GBP",
    )
    assert member.placed_at == dt.datetime(2024, 3, 1, 10, 30, tzinfo=dt.UTC)  # GMT in March
    assert member.shopper is not None
    assert (member.shopper.customer_id, member.shopper.email) == ("c-1", "ada@example.com")
    assert list(member.lines.order_by("pk").values_list("sku", "title", "quantity")) == [
        ("MUG", "Polka dot mug", 2),
        ("TOWEL", "", 1),
    ]
    guest = Order.objects.get(number="1002")
    assert (guest.shopper, guest.email, guest.currency, guest.status) == (
        None,
        "guest@example.com",
        "EUR",
        "paid",
    )
    assert guest.placed_at == dt.datetime(2024, 3, 2, 7, 0, tzinfo=dt.UTC)
    assert Order.objects.count() == 2
    assert OrderLine.objects.count() == 3
    assert Shopper.objects.count() == 1


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"number": "1", "sku": "A", "quantity": 0, "unit_price": 1}],
            "row 2: quantity: must be between 1 and 1000000",
        ),
        ([{"number": "1", "sku": "A", "quantity": 1}], "row 2: unit_price: is required"),
        (
            [
                {"number": "1", "sku": "A", "quantity": 1, "unit_price": 1, "customer_id": "x"},
                {"number": "1", "sku": "B", "quantity": 1, "unit_price": 1, "customer_id": "y"},
            ],
            "row 3: customer_id: differs from row 2 of order 1",
        ),
        (
            [{"number": "1", "sku": "A", "quantity": 1, "unit_price": 1, "status": "lost"}],
            "row 2: status: must be one of pending, paid, fulfilled, cancelled, partially_refunded, refunded",
        ),
        (
            [{"number": "1", "sku": "A", "quantity": 1, "unit_price": 1, "placed_at": "yesterday"}],
            "row 2: placed_at: must be an ISO 8601 date and time, got 'yesterday'",
        ),
        (
            [{"number": "1", "sku": "A", "quantity": 1000000, "unit_price": "9999999.99"}],
            "row 2: the order total 9999999990000.00 exceeds 9999999999.99",
        ),
    ],
)
def test_a_bad_row_stops_the_import_and_stores_nothing(tmp_path, rows, message):
    good = {"number": "0", "customer_id": "c-0", "sku": "A", "quantity": 1, "unit_price": 1}
    path = tmp_path / "orders.json"
    path.write_text(json.dumps([good, *rows]))  # a good order first: bad rows start at row 2

    with pytest.raises(CommandError) as error:
        _run(path)

    assert str(error.value) == message
    assert not Order.objects.exists()
    assert not Shopper.objects.exists()


def test_an_unknown_time_zone_is_refused(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(CSV)

    with pytest.raises(CommandError, match="unknown time zone 'Mars/Base'"):
        _run(path, "--time-zone", "Mars/Base")
    assert not Order.objects.exists()
