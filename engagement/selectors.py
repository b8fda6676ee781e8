"""Read queries of the engagement app: audiences, shoppers by identity, campaign results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from commerce import selectors as commerce_selectors
from commerce.models import Shopper, ShopperAlias
from core.exceptions import ValidationError
from engagement.models import (
    SUBSCRIBABLE_CHANNELS,
    Campaign,
    Channel,
    EngagementSettings,
    Message,
    NpsResponse,
    Preference,
    Segment,
    SegmentMembership,
    Topic,
    Unsubscribe,
)

# Shopper fields an audience rule may test, and the operators each kind of field allows.
_TEXT_FIELDS = {
    "email",
    "phone",
    "first_name",
    "last_name",
    "locale",
    "time_zone",
    "country",
    "customer_id",
}
_ORDERED_FIELDS = {"created_at", "birthday"}
_BOOL_FIELDS = {"email_consent", "sms_consent", "push_consent"}
_TEXT_OPS = {"eq": "iexact", "ne": "iexact", "startswith": "istartswith", "contains": "icontains"}
_ORDER_OPS = {"eq": "exact", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte"}


def _rule_q(rule: Mapping[str, Any]) -> Q:
    if not isinstance(rule, Mapping):
        raise ValidationError(f"an audience rule must be an object, got {rule!r}")
    field = str(rule.get("field", ""))
    op = str(rule.get("op", "eq"))
    value = rule.get("value")
    if field in _TEXT_FIELDS:
        if op == "in" and isinstance(value, list):
            return Q(**{f"{field}__in": [str(v) for v in value]})
        if op == "empty":
            return Q(**{field: ""}) if value in (True, None) else ~Q(**{field: ""})
        if op not in _TEXT_OPS or not isinstance(value, str):
            raise ValidationError(f"rule on {field}: op {op!r} needs a string value")
        q = Q(**{f"{field}__{_TEXT_OPS[op]}": value})
        return ~q if op == "ne" else q
    if field in _ORDERED_FIELDS:
        if op not in _ORDER_OPS or value is None:
            raise ValidationError(f"rule on {field}: op must be one of {sorted(_ORDER_OPS)}")
        return Q(**{f"{field}__{_ORDER_OPS[op]}": value})
    if field in _BOOL_FIELDS:
        if op != "eq" or not isinstance(value, bool):
            raise ValidationError(f"rule on {field}: use op eq with true or false")
        return Q(**{field: value})
    if field == "tags":
        if op == "contains" and isinstance(value, str):
            return Q(tags__contains=[value])
        if op == "not_contains" and isinstance(value, str):
            return ~Q(tags__contains=[value])
        if op == "any" and isinstance(value, list):
            q = Q(pk__in=[])
            for tag in value:
                q |= Q(tags__contains=[str(tag)])
            return q
        raise ValidationError("rule on tags: use contains, not_contains or any")
    if field.startswith("traits."):
        key = field.removeprefix("traits.")
        if not key.isidentifier():
            raise ValidationError(f"rule on {field}: trait names are identifiers")
        if op == "eq":
            return Q(**{f"traits__{key}": value})
        if op == "exists":
            return Q(**{"traits__has_key": key})
        raise ValidationError(f"rule on {field}: use eq or exists")
    raise ValidationError(f"unknown audience field {field!r}")


def rules_q(rules: Sequence[Mapping[str, Any]] | Any) -> Q:
    """The Q for a list of audience rules, all of which must hold; raises ValidationError."""
    if not isinstance(rules, list):
        raise ValidationError("audience rules must be a list")
    q = Q()
    for rule in rules:
        q &= _rule_q(rule)
    return q


def segment_q(segment: Segment) -> Q:
    if segment.kind == Segment.Kind.FILTER:
        return rules_q(segment.rules)
    return Q(
        Exists(SegmentMembership.objects.filter(segment_id=segment.pk, shopper_id=OuterRef("pk")))
    )


def audience_q(campaign: Campaign) -> Q:
    if campaign.audience == Campaign.Audience.SEGMENT:
        if campaign.segment is None:
            return Q(pk__in=[])
        return segment_q(campaign.segment)
    if campaign.audience == Campaign.Audience.FILTER:
        return rules_q(campaign.audience_rules)
    return Q()


def audience_shoppers(campaign: Campaign) -> QuerySet[Shopper]:
    return Shopper.objects.filter(audience_q(campaign), merged_into__isnull=True)


def audience_includes(*, campaign: Campaign, shopper: Shopper) -> bool:
    if campaign.audience == Campaign.Audience.ALL:
        return True
    return Shopper.objects.filter(audience_q(campaign), pk=shopper.pk).exists()


def shopper_find(*, customer_id: str = "", anonymous_id: str = "") -> Shopper | None:
    """The (surviving) shopper known by these ids, without creating one.

    Trusts both ids: for server-side callers only. Ids that come from a browser go through
    ``commerce.selectors.visitor_find`` (verified identity, docs/identity.md).
    """
    shopper: Shopper | None = None
    if customer_id:
        shopper = Shopper.objects.filter(customer_id=customer_id).first()
    if shopper is None and anonymous_id:
        alias = (
            ShopperAlias.objects.select_related("shopper").filter(anonymous_id=anonymous_id).first()
        )
        shopper = alias.shopper if alias else None
    return commerce_selectors.shopper_canonical(shopper) if shopper is not None else None


def onsite_messages_pending(*, shopper: Shopper, limit: int = 20) -> list[Message]:
    return list(
        Message.objects.filter(
            shopper=shopper, channel="onsite", state=Message.State.SENT, seen_at__isnull=True
        ).order_by("-sent_at", "-id")[:limit]
    )


def topics_list() -> list[Topic]:
    """Every topic a shopper may opt out of, by name (as the preference centre lists them)."""
    return list(Topic.objects.order_by("name", "key"))


def preference_centre(*, shopper: Shopper) -> dict[str, Any]:
    """What the preference centre shows a shopper: ``channels`` (``key``, ``label``, ``on``:
    consent given and no unsubscribe recorded), ``topics`` (``key``, ``name``,
    ``description``, ``on``: not opted out) and ``paused_until`` (aware datetime or None)."""
    unsubscribed = set(
        Unsubscribe.objects.filter(shopper=shopper).values_list("channel", flat=True)
    )
    preference = Preference.objects.filter(shopper=shopper).first()
    opted_out = (
        set(preference.topics_opted_out.values_list("key", flat=True)) if preference else set()
    )
    return {
        "channels": [
            {
                "key": c,
                "label": Channel(c).label,
                "on": c not in unsubscribed and bool(getattr(shopper, f"{c}_consent")),
            }
            for c in SUBSCRIBABLE_CHANNELS
        ],
        "topics": [
            {
                "key": t.key,
                "name": t.name,
                "description": t.description,
                "on": t.key not in opted_out,
            }
            for t in topics_list()
        ],
        "paused_until": preference.paused_until if preference else None,
    }


def campaign_scheduled_counts(*, campaign_ids: Sequence[int]) -> dict[int, int]:
    """Per campaign id, how many of its messages wait to be sent (what archiving cancels)."""
    rows = (
        Message.objects.filter(campaign_id__in=campaign_ids, state=Message.State.SCHEDULED)
        .values("campaign_id")
        .annotate(n=Count("pk"))
    )
    counts = {campaign_id: 0 for campaign_id in campaign_ids}
    counts.update({row["campaign_id"]: row["n"] for row in rows})
    return counts


def nps_score(*, campaign: Campaign | None = None) -> dict[str, Any]:
    """The Net Promoter Score of the answers (to ``campaign``, or to every campaign).

    ``score`` is the share of promoters (9-10) minus the share of detractors (0-6), in whole
    percentage points from -100 to 100 (None without answers); also the counts.
    """
    answers = NpsResponse.objects.all()
    if campaign is not None:
        answers = answers.filter(campaign=campaign)
    counts = answers.aggregate(
        responses=Count("pk"),
        promoters=Count("pk", filter=Q(score__gte=9)),
        detractors=Count("pk", filter=Q(score__lte=6)),
    )
    total = counts["responses"]
    score = None
    if total:
        score = int(
            (Decimal(counts["promoters"] - counts["detractors"]) * 100 / total).quantize(
                Decimal(1), rounding=ROUND_HALF_UP
            )
        )
    return {
        **counts,
        "passives": total - counts["promoters"] - counts["detractors"],
        "score": score,
    }


def engagement_settings() -> EngagementSettings:
    """The store's engagement settings: the saved row, or an unsaved one with the defaults."""
    return EngagementSettings.objects.filter(pk=1).first() or EngagementSettings(pk=1)
