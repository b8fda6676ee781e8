"""The verified-identity rule for widget APIs: one serializer and one helper every DRF view uses.

A widget request names its shopper with ``anonymous_id`` (analytics.js's, or the widget's own)
and, for a logged-in customer, ``user_id`` with ``user_hash`` =
``hex(HMAC-SHA256(identity secret, user_id))`` computed by the store's backend
(docs/identity.md). A ``user_id`` without its valid ``user_hash`` is ignored: the request acts
on the anonymous shopper only, never on a known customer. Views::

    identity = VisitorIdentitySerializer(data=request.data)
    identity.is_valid(raise_exception=True)
    shopper = visitor_shopper(identity.validated_data, create=True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

from rest_framework import serializers

from commerce import selectors, services
from commerce.models import Shopper


class VisitorIdentitySerializer(serializers.Serializer[Any]):
    """Who the browser says it is: an anonymous id and/or a customer id with its proof."""

    anonymous_id = serializers.CharField(max_length=255, required=False, allow_blank=True)
    user_id = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="The store's customer id; counts only with user_hash",
    )
    user_hash = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,
        help_text="hex(HMAC-SHA256(identity secret, user_id)), computed by the store's backend",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (attrs.get("anonymous_id", "").strip() or attrs.get("user_id", "").strip()):
            raise serializers.ValidationError("anonymous_id or user_id is required")
        return attrs


@overload
def visitor_shopper(data: Mapping[str, Any], *, create: Literal[True]) -> Shopper: ...


@overload
def visitor_shopper(data: Mapping[str, Any], *, create: Literal[False]) -> Shopper | None: ...


def visitor_shopper(data: Mapping[str, Any], *, create: bool) -> Shopper | None:
    """The verified customer, or else the anonymous shopper, for validated identity ``data``.

    ``create=True`` (writes): ``services.visitor_resolve``, which creates the anonymous shopper
    when new and raises ``PermissionDenied`` (403 ``identity_unverified``) for a ``user_id``
    without valid proof and no ``anonymous_id``. ``create=False`` (reads):
    ``selectors.visitor_find``, None when the visitor has nothing to read.
    """
    anonymous_id = str(data.get("anonymous_id") or "")
    customer_id = str(data.get("user_id") or "")
    proof = data.get("user_hash")
    if create:
        return services.visitor_resolve(
            anonymous_id=anonymous_id, customer_id=customer_id, proof=proof
        ).shopper
    return selectors.visitor_find(anonymous_id=anonymous_id, customer_id=customer_id, proof=proof)
