"""``manage.py import_catalog``: products and category paths from CSV or JSON, all or nothing."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from commerce.models import Category, Product

pytestmark = pytest.mark.django_db

CSV = """sku,title,description,category,price,currency,stock,image_url,url,active
MUG-1,Polka dot mug ,"Enamel, 350 ml",Home/Kitchen,4.50,gbp,12,/static/patron/img/placeholder.svg,https://shop.example/mug-1,true
LAMP-2,Rattan lamp,,Home/Lighting,39,,0,,,no
"""


def _run(path: Path) -> str:
    out = io.StringIO()
    call_command("import_catalog", str(path), stdout=out)
    return out.getvalue().strip()


def test_csv_creates_products_and_every_level_of_their_categories(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(CSV, encoding="utf-8")

    printed = _run(path)

    assert printed == "products: 2 created, 0 updated, 0 unchanged; categories: 3 created"
    mug = Product.objects.select_related("category__parent").get(sku="MUG-1")
    assert (mug.title, mug.description, mug.price, mug.currency, mug.stock) == (
        "Polka dot mug",
        "Enamel, 350 ml",
        Decimal("4.50"),
        "GBP",
        12,
    )
    assert mug.image_url == "/static/patron/img/placeholder.svg"
    assert mug.url == "https://shop.example/mug-1"
    assert mug.category is not None
    assert mug.category.parent is not None
    assert (mug.category.slug, mug.category.name, mug.category.parent.slug) == (
        "home-kitchen",
        "Kitchen",
        "home",
    )
    lamp = Product.objects.get(sku="LAMP-2")
    assert (lamp.active, lamp.stock, lamp.currency, lamp.description) == (False, 0, "GBP", "")
    assert sorted(Category.objects.values_list("slug", flat=True)) == [
        "home",
        "home-kitchen",
        "home-lighting",
    ]


def test_running_the_same_file_twice_changes_nothing(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(CSV, encoding="utf-8")
    _run(path)
    before = list(Product.objects.order_by("sku").values("sku", "title", "price", "updated_at"))

    printed = _run(path)

    assert printed == "products: 0 created, 0 updated, 2 unchanged; categories: 0 created"
    assert (
        list(Product.objects.order_by("sku").values("sku", "title", "price", "updated_at"))
        == before
    )


def test_json_updates_only_the_fields_it_gives(tmp_path):
    Product.objects.create(sku="MUG-1", title="Mug", price=Decimal("4.50"), stock=3)
    path = tmp_path / "catalog.json"
    path.write_text(
        json.dumps(
            [{"sku": "MUG-1", "price": 3.99}, {"sku": "NEW", "title": "Tea towel", "price": "5"}]
        )
    )

    printed = _run(path)

    assert printed == "products: 1 created, 1 updated, 0 unchanged; categories: 0 created"
    mug = Product.objects.get(sku="MUG-1")
    assert (mug.title, mug.price, mug.stock) == ("Mug", Decimal("3.99"), 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "sku,title,price\nA,Mug,1\nB,Cup,-2\n",
            "row 2: price: must be between 0.00 and 9999999999.99",
        ),
        ("sku,title,price\nA,Mug,1\nB,Cup,\n", "row 2: price: is required for a new product (B)"),
        ("sku,title,price,stock\nA,Mug,1,1.5\n", "row 1: stock: must be a whole number, got '1.5'"),
        ("sku,title,price\nA,Mug,1\nA,Cup,2\n", "row 2: sku: 'A' already appears in row 1"),
        (
            "sku,title,price,active\nA,Mug,1,perhaps\n",
            "row 1: active: must be true or false, got 'perhaps'",
        ),
        (
            "sku,title,price,url\nA,Mug,1,ftp://x\n",
            "row 1: url: must be an http(s) URL or a path starting with /",
        ),
        ("sku,title,price\n,Mug,1\n", "row 1: sku: is required"),
    ],
)
def test_one_bad_row_stops_the_import_and_stores_nothing(tmp_path, content, message):
    path = tmp_path / "catalog.csv"
    path.write_text(content)

    with pytest.raises(CommandError) as error:
        _run(path)

    assert str(error.value) == message
    assert not Product.objects.exists()
    assert not Category.objects.exists()


def test_unknown_extensions_and_missing_files_are_refused(tmp_path):
    other = tmp_path / "catalog.xlsx"
    other.write_text("x")

    with pytest.raises(CommandError, match=r"catalog.xlsx: expected a \.csv or \.json file"):
        _run(other)
    with pytest.raises(CommandError, match="no such file"):
        _run(tmp_path / "missing.csv")
    bad_json = tmp_path / "catalog.json"
    bad_json.write_text('{"sku": "A"}')
    with pytest.raises(CommandError, match="expected a JSON array of objects"):
        _run(bad_json)
