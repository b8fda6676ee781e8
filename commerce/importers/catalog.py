"""Catalog rows: category paths and the product upsert."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils.text import slugify

from commerce import services
from commerce.importers.parsing import (
    MAX_STOCK,
    _boolean,
    _currency,
    _decimal,
    _integer,
    _row_error,
    _RowError,
    _text,
    _url,
)
from commerce.models import ZERO, Category, Product
from core.exceptions import NotFound, ValidationError

# --- Categories --------------------------------------------------------------------------


def _category_parts(path: str) -> list[str]:
    parts = [part.strip() for part in path.split("/")]
    if not all(parts):
        raise _RowError("category", f"{path!r} has an empty level")
    if len(parts) > 5:
        raise _RowError("category", "at most 5 levels")
    for part in parts:
        if len(part) > 200:
            raise _RowError("category", "each level must be at most 200 characters")
        if not slugify(part):
            raise _RowError("category", f"{part!r} has no letters or digits")
    return parts


def category_slug(parts: Sequence[str]) -> str:
    """The slug of a category path: ``Home/Kitchen`` is ``home-kitchen``."""
    return "-".join(slugify(part) for part in parts)[:200]


def categories_ensure(*, paths: Iterable[Sequence[str]]) -> tuple[dict[tuple[str, ...], int], int]:
    """Create every level of these category paths that is missing; keyed by slug.

    Returns ({path: category id}, how many categories were created). Existing categories (same
    slug) are reused whatever their name, so renaming one in the admin survives re-imports.
    """
    wanted: dict[tuple[str, ...], None] = {}
    for path in paths:
        for depth in range(1, len(path) + 1):
            wanted[tuple(path[:depth])] = None
    ids: dict[tuple[str, ...], int] = {}
    created = 0
    for depth in sorted({len(path) for path in wanted}):
        level = [path for path in wanted if len(path) == depth]
        slugs = {category_slug(path): path for path in level}
        existing = dict(Category.objects.filter(slug__in=slugs).values_list("slug", "id"))
        new = [
            Category(
                name=path[-1][:200],
                slug=slug,
                parent_id=ids[path[:-1]] if depth > 1 else None,
            )
            for slug, path in slugs.items()
            if slug not in existing
        ]
        if new:
            Category.objects.bulk_create(new, ignore_conflicts=True)
            created += len(new)
            existing = dict(Category.objects.filter(slug__in=slugs).values_list("slug", "id"))
        for slug, path in slugs.items():
            ids[path] = existing[slug]
    return ids, created


def category_get_or_create(*, path: str) -> Category:
    """The category at this path ("Home/Kitchen"), creating missing levels."""
    try:
        parts = tuple(_category_parts(path))
    except _RowError as error:
        raise ValidationError(f"category: {error.message}", code="invalid") from None
    ids, _ = categories_ensure(paths=[parts])
    return Category.objects.get(pk=ids[parts])


@transaction.atomic
def product_update(*, sku: str, values: Mapping[str, Any]) -> Product:
    """Change fields of the product with this SKU, in one transaction (the staff API's PATCH).

    ``values`` holds model fields to set; ``category`` is a path ("Home/Kitchen", missing
    levels created) or None to remove it; ``currency`` is upper-cased. Raises ``NotFound`` for
    an unknown SKU and ``ValidationError`` for a bad category path or price; then nothing,
    not even a new category, is stored. Returns the product as saved.
    """
    product = Product.objects.select_for_update().filter(sku=sku.strip()).first()
    if product is None:
        raise NotFound(f"no product with SKU {sku}")
    changes = dict(values)
    if "category" in changes:
        path = changes.pop("category")
        changes["category"] = category_get_or_create(path=path) if path else None
    if changes.get("currency"):
        changes["currency"] = str(changes["currency"]).upper()
    if changes:
        product, _ = services.product_upsert(sku=product.sku, defaults=changes)
    return product


# --- Catalog rows ------------------------------------------------------------------------

CATALOG_FIELDS = (
    "sku",
    "title",
    "description",
    "category",
    "price",
    "currency",
    "stock",
    "image_url",
    "url",
    "active",
)


@dataclass(frozen=True)
class CatalogRow:
    """One product of a catalog file; ``None`` means "not given" (keep or default)."""

    sku: str
    title: str | None = None
    description: str | None = None
    category: tuple[str, ...] | None = None
    price: Decimal | None = None
    currency: str | None = None
    stock: int | None = None
    image_url: str | None = None
    url: str | None = None
    active: bool | None = None


def catalog_row_parse(raw: Mapping[str, Any], *, row: int) -> CatalogRow:
    """Validate one catalog row (strings from CSV or values from JSON) into a CatalogRow."""
    try:
        sku = _text(raw, "sku", max_length=64, required=True)
        assert sku is not None
        category = _text(raw, "category", max_length=1100)
        return CatalogRow(
            sku=sku,
            title=_text(raw, "title", max_length=300),
            description=_text(raw, "description", max_length=20_000),
            category=tuple(_category_parts(category)) if category is not None else None,
            price=_decimal(raw, "price", minimum=ZERO),
            currency=_currency(raw),
            stock=_integer(raw, "stock", minimum=-MAX_STOCK - 1, maximum=MAX_STOCK),
            image_url=_url(raw, "image_url"),
            url=_url(raw, "url"),
            active=_boolean(raw, "active"),
        )
    except _RowError as error:
        raise _row_error(row, error) from None


def catalog_rows_parse(*, rows: Iterable[Mapping[str, Any]]) -> list[CatalogRow]:
    """Validate every row; the first bad one raises, naming its 1-based row number."""
    parsed = [catalog_row_parse(raw, row=number) for number, raw in enumerate(rows, start=1)]
    seen: dict[str, int] = {}
    for number, item in enumerate(parsed, start=1):
        if item.sku in seen:
            raise ValidationError(
                f"row {number}: sku: {item.sku!r} already appears in row {seen[item.sku]}",
                code="invalid_row",
                extra={"row": number, "field": "sku"},
            )
        seen[item.sku] = number
    return parsed


@dataclass(frozen=True)
class CatalogImportSummary:
    products_created: int
    products_updated: int
    products_unchanged: int
    categories_created: int
    created_skus: tuple[str, ...] = ()


_PRODUCT_COLUMNS = ("title", "description", "price", "currency", "stock", "image_url", "url")


@transaction.atomic
def catalog_import(*, rows: Sequence[CatalogRow]) -> CatalogImportSummary:
    """Upsert these products by SKU in one transaction (all or nothing).

    A new product needs a title and a price. For an existing product only the fields a row
    gives are written; fields it leaves out keep their values. Rows are locked in primary-key
    order, so two imports touching the same products wait for each other.
    """
    category_ids, categories_created = categories_ensure(
        paths=[item.category for item in rows if item.category is not None]
    )
    by_sku = {item.sku: item for item in rows}
    existing = {
        product.sku: product
        for product in Product.objects.select_for_update()
        .filter(sku__in=list(by_sku))
        .order_by("pk")
    }
    new: list[Product] = []
    changed: list[Product] = []
    changed_fields: set[str] = set()
    unchanged = 0
    for number, item in enumerate(rows, start=1):
        values: dict[str, Any] = {
            name: getattr(item, name)
            for name in _PRODUCT_COLUMNS
            if getattr(item, name) is not None
        }
        if item.active is not None:
            values["active"] = item.active
        if item.category is not None:
            values["category_id"] = category_ids[item.category]
        product = existing.get(item.sku)
        if product is None:
            missing = [name for name in ("title", "price") if name not in values]
            if missing:
                raise ValidationError(
                    f"row {number}: {missing[0]}: is required for a new product ({item.sku})",
                    code="invalid_row",
                    extra={"row": number, "field": missing[0]},
                )
            new.append(Product(sku=item.sku, **values))
            continue
        diff = {name: value for name, value in values.items() if getattr(product, name) != value}
        if not diff:
            unchanged += 1
            continue
        for name, value in diff.items():
            setattr(product, name, value)
        changed.append(product)
        changed_fields.update(diff)
    Product.objects.bulk_create(new, batch_size=1000)
    services.order_lines_link(skus=[product.sku for product in new])
    if changed:
        Product.objects.bulk_update(
            changed, fields=[*sorted(changed_fields), "updated_at"], batch_size=1000
        )
    return CatalogImportSummary(
        products_created=len(new),
        products_updated=len(changed),
        products_unchanged=unchanged,
        categories_created=categories_created,
        created_skus=tuple(product.sku for product in new),
    )
