"""``manage.py patron_demo``: the built-in catalog, or the UCI file when there is one."""

from __future__ import annotations

import gzip
import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from commerce.models import Category, Order, Product, Refund, Shopper, WriteKey
from tests.commerce.test_import_online_retail_rules import HEADER, ROWS

pytestmark = pytest.mark.django_db


def _demo(*args: str) -> str:
    out = io.StringIO()
    call_command("patron_demo", *args, "--no-progress", stdout=out)
    return out.getvalue()


def test_the_builtin_catalog_loads_once_with_shoppers_orders_and_a_write_key():
    first = _demo("--builtin")
    counts = (
        Product.objects.count(),
        Category.objects.count(),
        Shopper.objects.count(),
        Order.objects.count(),
        WriteKey.objects.count(),
    )
    second = _demo("--builtin")

    assert counts == (40, 6, 5, 9, 1)
    assert (
        Product.objects.count(),
        Category.objects.count(),
        Shopper.objects.count(),
        Order.objects.count(),
        WriteKey.objects.count(),
    ) == counts
    assert "products: 40 created, 0 updated, 0 unchanged" in first
    assert 'write key "Demo shop" created' in first
    assert "orders: 0 created, 9 already there" in second
    assert "write key" not in second
    ada = Shopper.objects.get(customer_id="demo-ada")
    assert (ada.email, ada.first_name, ada.email_consent) == ("ada@example.com", "Ada", True)
    assert ada.orders.count() == 3
    newest = Order.objects.order_by("-placed_at").first()
    assert newest is not None
    assert (timezone.now() - newest.placed_at).days <= 3
    assert not Product.objects.exclude(image_url__startswith="/static/patron/img/").exists()
    assert Product.objects.filter(stock=0).count() == 2


def test_the_uci_file_is_loaded_when_given(tmp_path):
    path = tmp_path / "online_retail.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(HEADER + ROWS)

    printed = _demo(str(path))
    _demo(str(path))

    assert f"loading {path}" in printed
    assert Order.objects.filter(number__startswith="UCI-").count() == 4
    assert Refund.objects.count() == 3
    assert not Product.objects.filter(sku__startswith="PT-").exists()
    assert WriteKey.objects.filter(name="Demo shop").count() == 1


def test_months_loads_only_the_latest_slice(tmp_path):
    path = tmp_path / "online_retail.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(HEADER + ROWS)

    printed = _demo(str(path), "--months", "3")

    # The file ends on 2011-08-12, so the slice starts on 2011-05-12.
    assert "from 2011-05-12" in printed
    assert list(Order.objects.values_list("number", flat=True)) == ["UCI-536366"]


def test_a_missing_file_is_an_error():
    with pytest.raises(CommandError, match="no such file"):
        _demo("/nonexistent/online_retail.csv.gz")
    assert not Product.objects.exists()
