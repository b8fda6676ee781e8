"""Reads for the demo shop pages."""

from __future__ import annotations

from django.db.models import QuerySet

from commerce import selectors as commerce_selectors
from commerce.models import Product

HOME_PRODUCT_COUNT = 24


def products_for_home() -> QuerySet[Product]:
    """The active products on the home page: best rated first, then newest, at most 24."""
    return (
        Product.objects.filter(active=True)
        .select_related("category")
        .order_by("-rating_count", "-created_at", "pk")[:HOME_PRODUCT_COUNT]
    )


def product_for_page(*, sku: str) -> Product | None:
    return Product.objects.filter(active=True, sku=sku).select_related("category").first()


def demo_write_key() -> str | None:
    """The write key the demo shop embeds the widget with (``commerce.selectors.shop_write_key``)."""
    return commerce_selectors.shop_write_key()
