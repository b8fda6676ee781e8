"""Reads for the demo shop pages."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from commerce.models import Product, WriteKey

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
    """The write key the demo shop embeds the widget with.

    ``PATRON_STOREFRONT_WRITE_KEY`` names one explicitly; otherwise the oldest active key is
    used, the way a merchant would paste the first key they created in the admin.
    """
    configured = getattr(settings, "PATRON_STOREFRONT_WRITE_KEY", "")
    if configured:
        return str(configured)
    return WriteKey.objects.filter(active=True).order_by("pk").values_list("key", flat=True).first()
