"""Shoppers and their identities: resolving, traits, merging."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, models, transaction

from commerce import registry
from commerce.models import Shopper, ShopperAlias
from commerce.selectors import shopper_canonical
from core.exceptions import Conflict, ValidationError

# --- Shoppers and identity ---------------------------------------------------------------

# Identify traits that map onto Shopper columns; everything else is kept in ``traits``.
_TRAIT_FIELDS = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "locale": "locale",
    "timezone": "time_zone",
    "country": "country",
}


# Consent given or withdrawn in the store (a checkbox at checkout) arrives as a boolean trait.
CONSENT_TRAITS = {
    "email_consent": "email_consent",
    "emailConsent": "email_consent",
    "sms_consent": "sms_consent",
    "smsConsent": "sms_consent",
    "push_consent": "push_consent",
    "pushConsent": "push_consent",
}


def _shopper_for_customer_id(customer_id: str) -> Shopper:
    try:
        return shopper_canonical(Shopper.objects.get(customer_id=customer_id))
    except Shopper.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return Shopper.objects.create(customer_id=customer_id)
    except IntegrityError:  # created concurrently: the unique constraint decided
        return shopper_canonical(Shopper.objects.get(customer_id=customer_id))


def _shopper_for_anonymous_id(anonymous_id: str) -> Shopper:
    alias = ShopperAlias.objects.select_related("shopper").filter(anonymous_id=anonymous_id).first()
    if alias is not None:
        return shopper_canonical(alias.shopper)
    try:
        with transaction.atomic():
            shopper = Shopper.objects.create()
            ShopperAlias.objects.create(anonymous_id=anonymous_id, shopper=shopper)
            return shopper
    except IntegrityError:
        alias = ShopperAlias.objects.select_related("shopper").get(anonymous_id=anonymous_id)
        return shopper_canonical(alias.shopper)


@transaction.atomic
def shopper_resolve(*, customer_id: str | None = None, anonymous_id: str | None = None) -> Shopper:
    """The shopper behind a customer id and/or an anonymous id, created if new.

    When both are given and they belong to two shoppers, the anonymous one is merged into the
    customer's, so a visitor's browsing history follows them once they log in.
    """
    customer_id = (customer_id or "").strip() or None
    anonymous_id = (anonymous_id or "").strip() or None
    if customer_id is None and anonymous_id is None:
        raise ValidationError("either userId or anonymousId is required", code="missing_identity")
    if customer_id is None:
        assert anonymous_id is not None
        return _shopper_for_anonymous_id(anonymous_id)

    shopper = _shopper_for_customer_id(customer_id)
    if anonymous_id is None:
        return shopper
    alias = ShopperAlias.objects.filter(anonymous_id=anonymous_id).first()
    if alias is None:
        ShopperAlias.objects.get_or_create(anonymous_id=anonymous_id, defaults={"shopper": shopper})
        alias = ShopperAlias.objects.get(anonymous_id=anonymous_id)
    owner = shopper_canonical(alias.shopper) if alias.shopper_id != shopper.pk else shopper
    if owner.pk != shopper.pk:
        if owner.customer_id:
            # The device belonged to another customer (a shared computer): move the device,
            # never merge two known customers.
            ShopperAlias.objects.filter(pk=alias.pk).update(shopper=shopper)
        else:
            shopper = shopper_merge(source=owner, target=shopper)
    return shopper


@transaction.atomic
def shopper_update_traits(*, shopper: Shopper, traits: Mapping[str, Any]) -> Shopper:
    """Apply identify traits: known ones to columns, the rest merged into ``traits``."""
    changed: set[str] = set()
    extra = dict(shopper.traits)
    consent_fields = CONSENT_TRAITS
    for key, value in traits.items():
        if key in consent_fields and isinstance(value, bool):
            if getattr(shopper, consent_fields[key]) != value:
                setattr(shopper, consent_fields[key], value)
                changed.add(consent_fields[key])
        elif key in _TRAIT_FIELDS and isinstance(value, str):
            field = _TRAIT_FIELDS[key]
            max_length = Shopper._meta.get_field(field).max_length or 255  # type: ignore[union-attr]  # trait fields are CharFields, which have max_length
            value = value.strip()[:max_length]
            if field == "email":
                value = value.lower()
            if getattr(shopper, field) != value:
                setattr(shopper, field, value)
                changed.add(field)
        elif (
            key == "name"
            and isinstance(value, str)
            and not (traits.get("firstName") or traits.get("first_name"))
        ):
            first, _, last = value.strip().partition(" ")
            shopper.first_name, shopper.last_name = first[:150], last[:150]
            changed |= {"first_name", "last_name"}
        elif key == "birthday" and isinstance(value, str):
            try:
                shopper.birthday = dt.date.fromisoformat(value[:10])
                changed.add("birthday")
            except ValueError:
                extra[key] = value
        else:
            extra[key] = value
    if extra != shopper.traits:
        shopper.traits = extra
        changed.add("traits")
    if changed:
        shopper.save(update_fields=[*changed, "updated_at"])
    return shopper


def _merge_json_lists(first: list[Any], second: list[Any]) -> list[Any]:
    return [*first, *(item for item in second if item not in first)]


@transaction.atomic
def shopper_merge(*, source: Shopper, target: Shopper) -> Shopper:
    """Fold ``source`` into ``target``: aliases, events, orders and every other app's rows.

    Locks both rows in primary-key order. Apps registered through
    ``registry.register_shopper_merge_handler`` fold their per-shopper rows first; every
    remaining foreign key to ``source`` is then re-pointed at ``target``. ``source`` stays as
    a tombstone with ``merged_into`` set so late references still resolve.
    """
    if source.pk == target.pk:
        return target
    locked = {
        s.pk: s
        for s in Shopper.objects.select_for_update()
        .filter(pk__in=[source.pk, target.pk])
        .order_by("pk")
    }
    source, target = locked[source.pk], locked[target.pk]
    if source.merged_into_id is not None:
        raise Conflict(f"shopper {source.pk} was already merged into {source.merged_into_id}")

    for handler in registry.merge_handlers():
        handler(source, target)

    for relation in Shopper._meta.related_objects:
        if not isinstance(relation, models.ManyToOneRel) or relation.related_model is Shopper:
            continue
        related_model = relation.related_model
        field_name = relation.field.name
        related_model._default_manager.filter(**{field_name: source}).update(**{field_name: target})

    # Fill gaps in the target's profile from the source; the target's own values win.
    updates: list[str] = []
    for field in (
        "email",
        "phone",
        "first_name",
        "last_name",
        "locale",
        "time_zone",
        "country",
        "birthday",
    ):
        if not getattr(target, field) and getattr(source, field):
            setattr(target, field, getattr(source, field))
            updates.append(field)
    for consent in ("email_consent", "sms_consent", "push_consent"):
        if getattr(source, consent) and not getattr(target, consent):
            setattr(target, consent, True)
            updates.append(consent)
    target.traits = {**source.traits, **target.traits}
    target.tags = _merge_json_lists(target.tags, source.tags)
    target.created_at = min(target.created_at, source.created_at)
    target.save(update_fields=[*updates, "traits", "tags", "created_at", "updated_at"])

    source.merged_into = target
    source.save(update_fields=["merged_into", "updated_at"])
    return target
