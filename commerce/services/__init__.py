"""Business operations on the shared nouns: shoppers and their identities, orders, refunds,
reviews, products and coupons.

Each function is keyword-only, runs in one transaction and does every side effect of its
operation. Operations keyed by an outside identifier (order number, refund number, review id)
are idempotent: a retry returns the existing row and changes nothing.

The package (this module re-exports every public name, so callers keep
``from commerce import services; services.order_create(...)``):

- ``shoppers``: resolving shoppers, their traits, merging two into one;
- ``visitors``: who a browser visitor is (verified identity), the identity secret;
- ``catalog``: products by SKU, order lines linked to them;
- ``orders``: orders, refunds and reviews;
- ``coupons``: checking, discounts, redemption, issuing;
- ``events``: processing tracked events through their handlers, failures and retries;
- ``_common``: money amounts.
"""

from commerce.services._common import CENT, MAX_AMOUNT, money
from commerce.services.catalog import order_lines_link, product_upsert
from commerce.services.coupons import (
    CouponUse,
    coupon_check,
    coupon_discount,
    coupon_redeem,
    coupon_redeem_checked,
    coupon_use,
    coupons_issue,
    order_coupon_count,
)
from commerce.services.events import (
    TRANSIENT_ERRORS,
    event_failure_note,
    event_failures_retry,
    event_handler_key,
    event_shoppers_load,
    events_process,
)
from commerce.services.orders import (
    LineInput,
    RefundLineInput,
    order_create,
    refund_create,
    review_record,
    reviews_delete,
)
from commerce.services.shoppers import (
    CONSENT_TRAITS,
    shopper_merge,
    shopper_resolve,
    shopper_update_traits,
)
from commerce.services.visitors import (
    Visitor,
    identity_secret_rotate,
    shopper_anonymous_resolve,
    visitor_resolve,
)

__all__ = [
    "CENT",
    "CONSENT_TRAITS",
    "MAX_AMOUNT",
    "TRANSIENT_ERRORS",
    "CouponUse",
    "LineInput",
    "RefundLineInput",
    "Visitor",
    "coupon_check",
    "coupon_discount",
    "coupon_redeem",
    "coupon_redeem_checked",
    "coupon_use",
    "coupons_issue",
    "event_failure_note",
    "event_failures_retry",
    "event_handler_key",
    "event_shoppers_load",
    "events_process",
    "identity_secret_rotate",
    "money",
    "order_coupon_count",
    "order_create",
    "order_lines_link",
    "product_upsert",
    "refund_create",
    "review_record",
    "reviews_delete",
    "shopper_anonymous_resolve",
    "shopper_merge",
    "shopper_resolve",
    "shopper_update_traits",
    "visitor_resolve",
]
