"""Verified identity: who a browser visitor is, and the identity secret."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from commerce import selectors
from commerce.models import Shopper, ShopperAlias, StoreSettings, new_identity_secret
from commerce.services.shoppers import _shopper_for_anonymous_id, shopper_resolve
from core.exceptions import PermissionDenied, ValidationError

# --- Verified identity: who a browser visitor is ----------------------------------------


@dataclass(frozen=True)
class Visitor:
    """Who a browser visitor is: ``verified`` when a customer id came with its valid proof."""

    shopper: Shopper
    verified: bool


@transaction.atomic
def shopper_anonymous_resolve(*, anonymous_id: str) -> Shopper:
    """The anonymous shopper behind ``anonymous_id`` as seen from a browser without proof.

    When the id is new, a new anonymous shopper. When it belongs to (or was merged into) a
    known customer (a customer id is set: the visitor logged in on this browser earlier), the
    id is moved to a new anonymous shopper: whoever holds the id now, for instance the next
    person on a shared computer after logout, starts over as an anonymous shopper and gets
    nothing of the customer's. The customer's history stays with the customer; logging in
    again with proof folds the new anonymous shopper into the customer (``shopper_resolve``).
    Locks the alias row.
    """
    anonymous_id = anonymous_id.strip()
    if not anonymous_id:
        raise ValidationError("anonymous_id is required", code="missing_identity")
    alias = (
        ShopperAlias.objects.select_for_update()
        .select_related("shopper")
        .filter(anonymous_id=anonymous_id)
        .first()
    )
    if alias is None:
        return _shopper_for_anonymous_id(anonymous_id)
    owner = selectors.shopper_canonical(alias.shopper)
    if not owner.customer_id:
        return owner
    fresh = Shopper.objects.create()
    ShopperAlias.objects.filter(pk=alias.pk).update(shopper=fresh)
    return fresh


def visitor_resolve(
    *,
    anonymous_id: str | None = None,
    customer_id: str | None = None,
    proof: object = None,
    secret: str | None = None,
) -> Visitor:
    """The shopper a browser visitor acts as, created if new: the one rule for browser entries.

    - ``customer_id`` with valid ``proof`` (``hex(HMAC-SHA256(identity secret, customer id))``,
      see ``selectors.identity_verified``): that customer, with ``anonymous_id`` tied to them
      (an anonymous shopper behind it is merged in, as on login).
    - otherwise the anonymous shopper behind ``anonymous_id`` (``shopper_anonymous_resolve``):
      never a known customer, whatever customer id was claimed.

    Raises ``PermissionDenied`` (``identity_unverified``) for a customer id without valid proof
    and no anonymous id, and ``ValidationError`` when neither id is given. Server-side callers
    that trust their input use ``shopper_resolve`` instead.
    """
    customer_id = (customer_id or "").strip() or None
    anonymous_id = (anonymous_id or "").strip() or None
    if customer_id is not None and selectors.identity_verified(
        customer_id=customer_id, proof=proof, secret=secret
    ):
        return Visitor(
            shopper=shopper_resolve(customer_id=customer_id, anonymous_id=anonymous_id),
            verified=True,
        )
    if anonymous_id is None:
        if customer_id is not None:
            raise PermissionDenied(
                "a customer id from a browser needs its proof (user_hash)",
                code="identity_unverified",
            )
        raise ValidationError("anonymous_id or user_id is required", code="missing_identity")
    return Visitor(shopper=shopper_anonymous_resolve(anonymous_id=anonymous_id), verified=False)


@transaction.atomic
def identity_secret_rotate() -> StoreSettings:
    """Give the store a new identity secret; every proof signed with the old one stops working."""
    row = selectors.store_settings_get()
    row.identity_secret = new_identity_secret()
    row.save(update_fields=["identity_secret", "updated_at"])
    selectors.identity_secret_invalidate()
    return row
