"""Catalog: products upserted by SKU, order lines linked to them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery

from commerce.models import ZERO, OrderLine, Product
from commerce.services._common import money
from core.exceptions import ValidationError

# --- Catalog -----------------------------------------------------------------------------


@transaction.atomic
def product_upsert(
    *, sku: str, defaults: Mapping[str, Any], overwrite: bool = True
) -> tuple[Product, bool]:
    """Create the product with this SKU, or update it (when ``overwrite``). Returns (product, created)."""
    sku = sku.strip()
    if not sku:
        raise ValidationError("sku is required")
    values = dict(defaults)
    if "price" in values:
        values["price"] = money(values["price"], field="price")
        if values["price"] < ZERO:
            raise ValidationError("price cannot be negative")
    try:
        with transaction.atomic():
            product, created = Product.objects.get_or_create(
                sku=sku, defaults={"title": sku, "price": ZERO, **values}
            )
    except IntegrityError:
        product, created = Product.objects.get(sku=sku), False
    if created:
        order_lines_link(skus=[product.sku])
    if not created and overwrite and values:
        for key, value in values.items():
            setattr(product, key, value)
        product.save(update_fields=[*values.keys(), "updated_at"])
    return product, created


def order_lines_link(*, skus: Iterable[str]) -> int:
    """Point the order lines of these SKUs that have no product at the product with their SKU.

    An order may name a SKU before the catalog knows it (an order event or import that arrives
    before the product feed); when the product appears, its earlier lines join it, so
    "bought together", reviews and back-in-stock see them. Returns the number of lines linked.
    Call in the transaction that created the products.
    """
    wanted = sorted({sku for sku in skus if sku})
    if not wanted:
        return 0
    product_id = Product.objects.filter(sku=OuterRef("sku")).values("pk")[:1]
    return OrderLine.objects.filter(product__isnull=True, sku__in=wanted).update(
        product_id=Subquery(product_id)
    )
