"""The demo shop pages: product grid, product page, and the one widget tag they embed."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from commerce.models import Product, WriteKey

pytestmark = pytest.mark.django_db

WIDGET_TAG = re.compile(
    r'<script src="(?P<src>[^"]+)" data-write-key="(?P<key>[^"]+)"(?P<rest>[^>]*)></script>'
)


def _product(sku: str, title: str, **extra: object) -> Product:
    return Product.objects.create(sku=sku, title=title, price=Decimal("9.50"), **extra)


def test_home_lists_active_products_and_embeds_the_widget_with_one_absolute_script_tag(client):
    key = WriteKey.objects.create(name="demo shop")
    WriteKey.objects.create(name="newer key")
    _product("MUG-1", "Blue mug", rating_count=12)
    _product("MUG-2", "Green mug", rating_count=3)
    _product("OLD-1", "Retired teapot", active=False, rating_count=99)

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    tags = WIDGET_TAG.findall(html)
    assert tags == [("http://testserver/static/patron/widget.js", key.key, " async")]
    assert html.count("<script") == 1  # the shop page itself runs no script of ours
    titles = [p.title for p in response.context["products"]]
    assert titles == ["Blue mug", "Green mug"]
    assert 'href="/products/MUG-1/"' in html
    assert "Retired teapot" not in html


def test_home_shows_at_most_24_products_best_rated_then_newest(client):
    WriteKey.objects.create(name="demo shop")
    now = timezone.now()
    for index in range(30):
        _product(
            f"SKU-{index:02d}", f"Item {index:02d}", created_at=now + dt.timedelta(minutes=index)
        )
    Product.objects.filter(sku="SKU-00").update(rating_count=5)

    response = client.get("/")

    skus = [p.sku for p in response.context["products"]]
    assert len(skus) == 24
    assert skus[0] == "SKU-00"
    assert skus[1:4] == ["SKU-29", "SKU-28", "SKU-27"]


def test_product_titles_and_descriptions_are_escaped(client):
    WriteKey.objects.create(name="demo shop")
    _product(
        "XSS-1",
        '<script>alert("t")</script><b>Mug</b>',
        description="<img src=x onerror=alert(1)>",
    )

    home = client.get("/").content.decode()
    page = client.get("/products/XSS-1/").content.decode()

    for html in (home, page):
        assert "<script>alert" not in html
        assert "<b>Mug</b>" not in html
        assert "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;&lt;b&gt;Mug&lt;/b&gt;" in html
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert len(WIDGET_TAG.findall(page)) == 1


def test_product_page_shows_price_and_stock_and_unknown_or_inactive_skus_are_404(client):
    WriteKey.objects.create(name="demo shop")
    _product("MUG-1", "Blue mug", stock=0)
    _product("OLD-1", "Retired teapot", active=False)

    response = client.get("/products/MUG-1/")
    missing = client.get("/products/NOPE/")
    inactive = client.get("/products/OLD-1/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Blue mug · Patron Demo Shop</title>" in html
    assert "9.50 GBP" in html
    assert "Out of stock" in html
    assert missing.status_code == 404
    assert inactive.status_code == 404


def test_without_an_active_write_key_the_page_explains_instead_of_embedding(client):
    WriteKey.objects.create(name="disabled", active=False)

    response = client.get("/")

    html = response.content.decode()
    assert response.status_code == 200
    assert WIDGET_TAG.findall(html) == []
    assert "create a write key in the admin" in html


def test_the_widget_assets_are_served(client):
    js = client.get("/static/patron/widget.js")
    css = client.get("/static/patron/widget.css")

    assert js.status_code == 200
    assert css.status_code == 200
    assert js["Content-Type"].startswith("text/javascript")


@pytest.mark.parametrize(
    "path", ["storefront/static/patron/widget.js", "chat/static/chat/console.js"]
)
def test_browser_clients_never_parse_chat_text_as_html(path):
    source = (Path(__file__).resolve().parents[2] / path).read_text()

    assert "textContent" in source
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, f"{path} uses {sink}"
