"""Loading a store's existing data into Patron: catalog rows, order rows, and the UCI file.

Three operations, each keyword-only and returning a summary dataclass:

- :func:`catalog_import` upserts products (and their category paths) from parsed catalog rows;
- :func:`orders_import` records orders (grouped from one-row-per-line files) through
  :func:`commerce.services.order_create`, so an order number imported twice is recorded once;
- :func:`online_retail_import` loads the UCI "Online Retail" file (``shared/data``) into
  shoppers, categories, products, orders and refunds on a bulk path (``bulk_create`` and
  PostgreSQL ``COPY``), one transaction per stage, idempotent on re-runs.

Validation happens before anything is written: one bad row raises
:class:`core.exceptions.ValidationError` naming the row (1-based) and the field, and nothing is
stored. The management commands and the API only translate their input and call these.

The package (this module re-exports every public name, so callers keep
``from commerce import importers; importers.catalog_import(...)``):

- ``parsing``: reading CSV/JSON files and parsing their fields (shared with the API);
- ``catalog``: category paths, catalog rows, and one product's update (the staff API's PATCH);
- ``orders``: order rows, grouped and recorded;
- ``online_retail_file``: the UCI file's format, categories by title words, parsing;
- ``online_retail``: loading the parsed file on the bulk path, stage by stage;
- ``demo``: the built-in demo catalog.
"""

from commerce.importers.catalog import (
    CATALOG_FIELDS,
    CatalogImportSummary,
    CatalogRow,
    catalog_import,
    catalog_row_parse,
    catalog_rows_parse,
    categories_ensure,
    category_get_or_create,
    category_slug,
    product_update,
)
from commerce.importers.demo import DEMO_CATALOG, DemoCatalogSummary, demo_catalog_load
from commerce.importers.online_retail import OnlineRetailSummary, online_retail_import
from commerce.importers.online_retail_file import (
    CATEGORY_KEYWORDS,
    CATEGORY_NAMES,
    DEFAULT_STOCK,
    NON_PRODUCT_CODES,
    NON_PRODUCT_PREFIXES,
    ONLINE_RETAIL_COLUMNS,
    ONLINE_RETAIL_FILE,
    ONLINE_RETAIL_ZONE,
    ORDER_PREFIX,
    OTHER_CATEGORY,
    category_for_title,
    category_image_url,
    is_product_code,
    months_before,
    online_retail_default_path,
    online_retail_last_time,
)
from commerce.importers.orders import (
    ORDER_FIELDS,
    OrderInput,
    OrdersImportSummary,
    order_input_check,
    order_record,
    order_rows_group,
    orders_import,
)
from commerce.importers.parsing import (
    CENT,
    CURRENCY_PATTERN,
    MAX_AMOUNT,
    MAX_QUANTITY,
    MAX_STOCK,
    URL_PATTERN,
    URL_PATTERN_OR_EMPTY,
    rows_read,
)

__all__ = [
    "CATALOG_FIELDS",
    "CATEGORY_KEYWORDS",
    "CATEGORY_NAMES",
    "CENT",
    "CURRENCY_PATTERN",
    "DEFAULT_STOCK",
    "DEMO_CATALOG",
    "MAX_AMOUNT",
    "MAX_QUANTITY",
    "MAX_STOCK",
    "NON_PRODUCT_CODES",
    "NON_PRODUCT_PREFIXES",
    "ONLINE_RETAIL_COLUMNS",
    "ONLINE_RETAIL_FILE",
    "ONLINE_RETAIL_ZONE",
    "ORDER_FIELDS",
    "ORDER_PREFIX",
    "OTHER_CATEGORY",
    "URL_PATTERN",
    "URL_PATTERN_OR_EMPTY",
    "CatalogImportSummary",
    "CatalogRow",
    "DemoCatalogSummary",
    "OnlineRetailSummary",
    "OrderInput",
    "OrdersImportSummary",
    "catalog_import",
    "catalog_row_parse",
    "catalog_rows_parse",
    "categories_ensure",
    "category_for_title",
    "category_get_or_create",
    "category_image_url",
    "category_slug",
    "demo_catalog_load",
    "is_product_code",
    "months_before",
    "online_retail_default_path",
    "online_retail_import",
    "online_retail_last_time",
    "order_input_check",
    "order_record",
    "order_rows_group",
    "orders_import",
    "product_update",
    "rows_read",
]
