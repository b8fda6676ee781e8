"""Consent and unsubscribes: unsubscribe links, preferences, suppressions, push subscriptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext

from commerce import selectors as commerce_selectors
from commerce import services as commerce_services
from commerce.models import Shopper
from core.exceptions import NotFound, ValidationError
from engagement import tokens
from engagement.models import (
    SUBSCRIBABLE_CHANNELS,
    Channel,
    Message,
    Preference,
    PushSubscription,
    Suppression,
    Topic,
    Unsubscribe,
)
from engagement.services._common import _CONSENT_FIELD


@transaction.atomic
def shopper_unsubscribe(
    *, shopper: Shopper, channel: str, source: str, message: Message | None = None
) -> bool:
    """Stop ``channel`` for this shopper: record it, drop the consent, skip what is scheduled.

    Returns False when the shopper had already unsubscribed (nothing changes then).
    """
    if channel not in SUBSCRIBABLE_CHANNELS:
        raise ValidationError(f"cannot unsubscribe from {channel}")
    try:
        with transaction.atomic():
            Unsubscribe.objects.create(
                shopper=shopper, channel=channel, source=source[:32], message=message
            )
    except IntegrityError:
        return False
    Shopper.objects.filter(pk=shopper.pk).update(**{_CONSENT_FIELD[channel]: False})
    scheduled = Message.objects.filter(
        shopper=shopper, channel=channel, state=Message.State.SCHEDULED
    )
    # A receipt or a reply already on its way is not marketing: it still goes.
    scheduled.exclude(campaign__transactional=True).update(
        state=Message.State.SKIPPED, reason="unsubscribed"
    )
    return True


def unsubscribe_by_token(*, token: str, source: str) -> tuple[Shopper | None, str]:
    """Unsubscribe the shopper a message's link names from its channel; returns them and the
    channel. A preview's or test send's link names nobody: (None, channel), nothing changes.
    ``NotFound`` for a forged or mangled token."""
    value = tokens.read("unsubscribe", token)
    if (
        isinstance(value, list)
        and len(value) == 2
        and value[0] == tokens.TEST
        and isinstance(value[1], str)
    ):
        return None, value[1]
    if not (isinstance(value, list) and len(value) == 3):
        raise NotFound("this link is not valid", code="bad_token")
    message_id, shopper_id, channel = value
    shopper = Shopper.objects.filter(pk=shopper_id).first()
    if shopper is None:
        raise NotFound("this link is not valid", code="bad_token")
    shopper = commerce_selectors.shopper_canonical(shopper)
    message = Message.objects.filter(pk=message_id).first()
    shopper_unsubscribe(shopper=shopper, channel=channel, source=source, message=message)
    return shopper, channel


def shopper_for_preferences(*, token: str) -> Shopper:
    shopper_id = tokens.read("preferences", token)
    shopper = Shopper.objects.filter(pk=shopper_id).first() if isinstance(shopper_id, int) else None
    if shopper is None:
        raise NotFound("this link is not valid", code="bad_token")
    return commerce_selectors.shopper_canonical(shopper)


@transaction.atomic
def preferences_update(
    *,
    shopper: Shopper,
    channels: Mapping[str, bool],
    topics_opted_out: Iterable[str],
    pause_days: int | None = None,
) -> Preference:
    """Apply the preference centre: channels on or off, topics left, a pause (0 resumes)."""
    shopper = Shopper.objects.select_for_update().get(pk=shopper.pk)
    for channel, wanted in channels.items():
        if channel not in SUBSCRIBABLE_CHANNELS:
            raise ValidationError(f"unknown channel {channel!r}")
        if wanted:
            Unsubscribe.objects.filter(shopper=shopper, channel=channel).delete()
            Shopper.objects.filter(pk=shopper.pk).update(**{_CONSENT_FIELD[channel]: True})
        else:
            shopper_unsubscribe(shopper=shopper, channel=channel, source="preferences")
    preference, _ = Preference.objects.get_or_create(shopper=shopper)
    keys = set(topics_opted_out)
    topics = list(Topic.objects.filter(key__in=keys))
    if len(topics) != len(keys):
        raise ValidationError("unknown topic")
    preference.topics_opted_out.set(topics)
    if pause_days is not None:
        if pause_days < 0 or pause_days > 365:
            raise ValidationError(gettext("pause must be between 0 and 365 days"))
        preference.paused_until = (
            timezone.now() + dt.timedelta(days=pause_days) if pause_days else None
        )
        preference.save(update_fields=["paused_until", "updated_at"])
    return preference


@transaction.atomic
def suppression_add(*, channel: str, address: str, reason: str = Suppression.Reason.MANUAL) -> bool:
    address = address.strip().lower() if channel == Channel.EMAIL else address.strip()
    _, created = Suppression.objects.get_or_create(
        channel=channel, address=address, defaults={"reason": reason}
    )
    return created


@transaction.atomic
def push_subscription_save(
    *,
    endpoint: str,
    p256dh: str,
    auth: str,
    anonymous_id: str | None = None,
    customer_id: str | None = None,
    proof: object = None,
) -> PushSubscription:
    """Save a browser's push subscription for the visitor, in one transaction.

    The visitor is resolved by ``commerce.services.visitor_resolve`` (a customer only with
    ``proof``, else the anonymous shopper, created if new); an endpoint seen before moves to
    this visitor and is active again. ``ValidationError`` for an endpoint that is not https
    (outside DEBUG), ``PermissionDenied`` as ``visitor_resolve`` says; then nothing is
    stored, not even a new shopper.
    """
    if not endpoint.startswith("https://") and not settings.DEBUG:
        raise ValidationError("a push endpoint must be an https URL")
    shopper = commerce_services.visitor_resolve(
        anonymous_id=anonymous_id, customer_id=customer_id, proof=proof
    ).shopper
    subscription, _ = PushSubscription.objects.update_or_create(
        endpoint=endpoint,
        defaults={"shopper": shopper, "p256dh": p256dh, "auth": auth, "active": True},
    )
    return subscription
