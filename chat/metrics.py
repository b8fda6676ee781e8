"""Chat metrics: bot resolution rate, first response time, resolution time, CSAT — overall and
per agent, over conversations created in a period."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q, QuerySet

from chat.models import Conversation, CsatRating
from chat.selectors import agent_name


def _seconds(value: dt.timedelta | None) -> float | None:
    return round(value.total_seconds(), 1) if value is not None else None


def _figures(
    conversations: QuerySet[Conversation], ratings: QuerySet[CsatRating]
) -> dict[str, Any]:
    first_response = ExpressionWrapper(
        F("first_agent_response_at") - F("handed_off_at"), output_field=DurationField()
    )
    resolution = ExpressionWrapper(F("resolved_at") - F("created_at"), output_field=DurationField())
    agg = conversations.aggregate(
        total=Count("pk"),
        resolved=Count("pk", filter=Q(state=Conversation.State.RESOLVED)),
        resolved_by_bot=Count(
            "pk", filter=Q(state=Conversation.State.RESOLVED, handed_off_at__isnull=True)
        ),
        handed_off=Count("pk", filter=Q(handed_off_at__isnull=False)),
        avg_first_response=Avg(first_response, filter=Q(first_agent_response_at__isnull=False)),
        avg_resolution=Avg(resolution, filter=Q(state=Conversation.State.RESOLVED)),
    )
    csat = ratings.aggregate(
        n=Count("pk"), avg=Avg("rating"), good=Count("pk", filter=Q(rating__gte=4))
    )
    resolved = agg["resolved"] or 0
    return {
        "conversations": agg["total"],
        "resolved": resolved,
        "handed_off": agg["handed_off"],
        "bot_resolution_rate": round(agg["resolved_by_bot"] / resolved, 4) if resolved else None,
        "first_response_s": _seconds(agg["avg_first_response"]),
        "resolution_s": _seconds(agg["avg_resolution"]),
        "csat_count": csat["n"],
        "csat_average": round(float(csat["avg"]), 2) if csat["avg"] is not None else None,
        "csat_satisfied_share": round(csat["good"] / csat["n"], 4) if csat["n"] else None,
    }


def chat_metrics(*, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    conversations = Conversation.objects.filter(created_at__gte=since, created_at__lt=until)
    ratings = CsatRating.objects.filter(conversation__in=conversations)
    per_agent = []
    agent_ids = (
        conversations.exclude(assigned_agent__isnull=True)
        .values_list("assigned_agent_id", flat=True)
        .distinct()
    )
    from django.contrib.auth import get_user_model

    users = {u.pk: u for u in get_user_model().objects.filter(pk__in=list(agent_ids))}
    for user_id in sorted(users):
        figures = _figures(
            conversations.filter(assigned_agent_id=user_id), ratings.filter(agent_id=user_id)
        )
        figures.pop("bot_resolution_rate")
        per_agent.append({"agent": {"id": user_id, "name": agent_name(users[user_id])}, **figures})
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "overall": _figures(conversations, ratings),
        "agents": per_agent,
        "labels": _label_counts(conversations),
    }


def _label_counts(conversations: QuerySet[Conversation]) -> dict[str, int]:
    """Conversations per label (a conversation counts once under each of its labels), most
    frequent first, then by name."""
    counts: Counter[str] = Counter()
    for labels in conversations.exclude(labels=[]).values_list("labels", flat=True):
        counts.update(set(labels))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
