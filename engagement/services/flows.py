"""Flow controls: filters that end a run, the conditional split, A/B tests of a step.

How they hook into the outbox (the rest of the path is unchanged):

- enrolment writes every step's message as before; steps on the split's ``yes`` and ``no``
  branches are both scheduled, each branch's delays counted from the last step before the
  split (``steps_schedule``);
- the claim's send-time checks run ``flow_filter_failure`` before every step (a run that no
  longer passes the campaign's ``flow_filters`` stops, its reason recorded, nothing more is
  sent) and ``run_branch_decide`` for a step on a branch: the first branch step that comes due
  reads the split's condition, records the branch on the run and cancels the other branch;
- approved messages of a tested step get their variant (``ab_variants_assign``): the winner
  once chosen, else a draw from the weights by a hash of the run; delivery renders the
  variant's subject and content (``step_content``);
- the winner is chosen ``decide_after`` the test's first send, by its metric, at the next
  claim of the step or by beat (``ab_tests_decide_due``), whichever comes first.

Conditions are the language of ``engagement.services.conditions``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Q, prefetch_related_objects
from django.utils import timezone

from commerce.models import Shopper
from core.exceptions import ValidationError
from engagement.models import Campaign, CampaignStep, Message, Run, StepTest, StepVariant
from engagement.services._common import _Approved
from engagement.services.attribution import variant_conversions
from engagement.services.conditions import (
    ConditionContext,
    condition_describe,
    conditions_first_failing,
    conditions_hold,
    conditions_validate,
)

_BRANCHES = (CampaignStep.Branch.YES, CampaignStep.Branch.NO)


# --- Configuration -----------------------------------------------------------------------


def flow_validate(
    *,
    flow_filters: Any,
    split_condition: Any,
    steps: Iterable[tuple[int, str]],
) -> None:
    """Check a campaign's flow controls; raises ``ValidationError`` naming what is wrong.

    ``steps`` are the (position, branch) of its steps. Rules: both condition lists are valid;
    steps on a branch need a split condition and a split condition needs steps on a branch;
    every step before the split comes before (lower position than) every branch step.
    """
    conditions_validate(flow_filters, field="flow filters")
    split = conditions_validate(split_condition, field="split condition")
    flow_branches_validate(has_split=bool(split), steps=steps)


def flow_branches_validate(*, has_split: bool, steps: Iterable[tuple[int, str]]) -> None:
    """The step rules of ``flow_validate`` alone (the conditions checked elsewhere)."""
    steps = sorted(steps)
    branch_positions = [p for p, b in steps if b]
    if branch_positions and not has_split:
        raise ValidationError(
            "steps on the yes or no branch need a split condition", code="invalid_flow"
        )
    if has_split and not branch_positions:
        raise ValidationError(
            "a split condition needs steps on the yes or no branch", code="invalid_flow"
        )
    late = [p for p, b in steps if not b and branch_positions and p > min(branch_positions)]
    if late:
        raise ValidationError(
            f"step {late[0]} is before the split but placed after a branch step: give the "
            "steps before the split the lowest positions",
            code="invalid_flow",
        )


def steps_schedule(
    steps: Iterable[CampaignStep], *, start: dt.datetime
) -> list[tuple[CampaignStep, dt.datetime]]:
    """Each step with the time it falls due for a run started at ``start``.

    Steps before the split follow one another; each branch continues from the last of them.
    """
    cursor: dict[str, dt.datetime] = {"": start}
    scheduled = []
    for step in sorted(steps, key=lambda s: s.position):
        due = cursor.get(step.branch, cursor[""]) + step.delay
        cursor[step.branch] = due
        scheduled.append((step, due))
    return scheduled


# --- Filters and the split (send-time) ---------------------------------------------------


def _context(run: Run, shopper: Shopper, now: dt.datetime) -> ConditionContext:
    return ConditionContext(shopper=shopper, flow_started_at=run.started_at, now=now)


def flow_filter_failure(*, run: Run, campaign: Campaign, shopper: Shopper, now: dt.datetime) -> str:
    """Why the run no longer passes its campaign's flow filters ("" when it passes).

    The reason describes the first filter that does not hold ("orders since the flow started
    = 0"); a filter list that is not valid (changed outside the admin) fails as "invalid: ...",
    so a broken filter never sends to everyone. No query when the campaign has no filters.
    """
    if not campaign.flow_filters:
        return ""
    try:
        filters = conditions_validate(campaign.flow_filters, field="flow filters")
    except ValidationError as exc:
        return f"invalid: {exc.message}"
    failing = conditions_first_failing(filters, context=_context(run, shopper, now))
    return "" if failing is None else condition_describe(failing)


def run_branch_decide(*, run: Run, campaign: Campaign, shopper: Shopper, now: dt.datetime) -> str:
    """The run's branch of the split ("yes" or "no"), deciding it on the first call.

    The first call reads the split condition for the shopper now, records the branch on the
    run with a conditional update (so two workers agree) and cancels the other branch's
    scheduled messages; later calls read the recorded branch. Call inside the claim's
    transaction.
    """
    if run.branch:
        return run.branch
    try:
        split = conditions_validate(campaign.split_condition, field="split condition")
        holds = conditions_hold(split, context=_context(run, shopper, now))
    except ValidationError:
        holds = False  # a broken condition takes the cautious branch
    branch: str = CampaignStep.Branch.YES if holds else CampaignStep.Branch.NO
    decided = Run.objects.filter(pk=run.pk, branch="").update(branch=branch, branch_decided_at=now)
    if decided:
        other = (
            CampaignStep.Branch.NO if branch == CampaignStep.Branch.YES else CampaignStep.Branch.YES
        )
        Message.objects.filter(
            run_id=run.pk, state=Message.State.SCHEDULED, step__branch=other
        ).update(state=Message.State.CANCELLED, reason=branch_cancel_reason(branch))
    else:  # another message of the run decided it first
        branch = Run.objects.values_list("branch", flat=True).get(pk=run.pk)
    run.branch = branch
    return branch


def branch_cancel_reason(branch: str) -> str:
    """The reason on the messages of the branch a run did not take."""
    return f"split: the shopper took the {branch} branch"


# --- A/B tests ---------------------------------------------------------------------------


def variant_pick(*, variants: Sequence[StepVariant], run_id: int, step_id: int) -> StepVariant:
    """The variant a run gets, drawn from the weights by a hash of the run and step ids.

    Stable: the same run always gets the same variant of a step (retries, requeues).
    ``variants`` must be non-empty and in a fixed order (by label).
    """
    total = sum(v.weight for v in variants)
    digest = hashlib.sha256(f"ab:{step_id}:{run_id}".encode()).hexdigest()
    point = int(digest[:12], 16) % total
    for variant in variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return variants[-1]


def ab_test_figures(*, test: StepTest) -> list[dict[str, Any]]:
    """Per variant (in label order): ``label``, ``weight``, ``sent``, ``opened`` (opened or
    clicked), ``clicked``, ``converted`` (messages credited with an order by the attribution
    service's last-touch rule within the store's window) and the rates ``open_rate``,
    ``click_rate``, ``conversion_rate`` (Decimal fractions of ``sent`` to 4 places, None
    before any send), and ``winner`` (bool). A handful of queries."""
    counts = {
        row["variant_id"]: row
        for row in Message.objects.filter(variant__test=test, state=Message.State.SENT)
        .values("variant_id")
        .annotate(
            sent=Count("pk"),
            # A click proves the open an image blocker hid (as the step results count it).
            opened=Count("pk", filter=Q(opened_at__isnull=False) | Q(clicked_at__isnull=False)),
            clicked=Count("pk", filter=Q(clicked_at__isnull=False)),
        )
    }
    conversions = variant_conversions(step=test.step)
    figures = []
    for variant in StepVariant.objects.filter(test=test).order_by("label"):
        row: Mapping[str, Any] = counts.get(variant.pk) or {}
        sent = int(row.get("sent", 0))
        opened, clicked = int(row.get("opened", 0)), int(row.get("clicked", 0))
        converted = conversions.get(variant.pk, 0)

        def rate(n: int, sent: int = sent) -> Decimal | None:
            return (Decimal(n) / sent).quantize(Decimal("0.0001")) if sent else None

        figures.append(
            {
                "variant_id": variant.pk,
                "label": variant.label,
                "weight": variant.weight,
                "sent": sent,
                "opened": opened,
                "clicked": clicked,
                "converted": converted,
                "open_rate": rate(opened),
                "click_rate": rate(clicked),
                "conversion_rate": rate(converted),
                "winner": variant.pk == test.winner_id,
            }
        )
    return figures


_METRIC_COUNT = {
    StepTest.Metric.OPEN_RATE: "opened",
    StepTest.Metric.CLICK_RATE: "clicked",
    StepTest.Metric.CONVERSION_RATE: "converted",
}


def _decision_text(metric: str, figures: Sequence[Mapping[str, Any]], winner: str) -> str:
    label = StepTest.Metric(metric).label.split(" (")[0].lower()
    count = _METRIC_COUNT[StepTest.Metric(metric)]
    parts = [
        f"{f['label']} {f[count]}/{f['sent']}"
        + (f" ({f[metric] * 100:.1f}%)" if f[metric] is not None else "")
        for f in figures
    ]
    return f"{winner} won on {label}: " + ", ".join(parts)


@transaction.atomic
def ab_test_decide(*, test: StepTest, now: dt.datetime | None = None) -> StepVariant | None:
    """Choose the test's winner now by its metric (ties: the first label); returns it.

    Idempotent: a decided test keeps its winner (a conditional update, so two workers agree)
    and that winner is returned. None when the test has no variants.
    """
    now = now or timezone.now()
    if test.winner_id is not None:
        return test.winner
    figures = ab_test_figures(test=test)
    if not figures:
        return None
    metric = test.metric

    def score(figure: Mapping[str, Any]) -> Decimal:
        value = figure[metric]
        return value if value is not None else Decimal(-1)

    best = max(score(f) for f in figures)
    chosen = next(f for f in figures if score(f) == best)
    decided = StepTest.objects.filter(pk=test.pk, winner__isnull=True).update(
        winner_id=chosen["variant_id"],
        decided_at=now,
        decision=_decision_text(metric, figures, chosen["label"])[:500],
    )
    if not decided:
        test.refresh_from_db(fields=["winner", "decided_at", "decision"])
        return test.winner
    test.refresh_from_db(fields=["winner", "decided_at", "decision"])
    return test.winner


def _due(now: dt.datetime) -> Q:
    return Q(winner__isnull=True, started_at__isnull=False, decide_at__lte=now)


def ab_tests_decide_due(*, now: dt.datetime | None = None) -> int:
    """Beat: choose the winner of every test whose time has come; returns how many."""
    now = now or timezone.now()
    due = StepTest.objects.annotate(
        decide_at=ExpressionWrapper(
            F("started_at") + F("decide_after"), output_field=DateTimeField()
        )
    ).filter(_due(now))
    decided = 0
    for test in due.order_by("pk"):
        if ab_test_decide(test=test, now=now) is not None:
            decided += 1
    return decided


def ab_variants_assign(approved: Sequence[_Approved], *, now: dt.datetime) -> None:
    """Give each approved message of a tested step its variant, and record it on the message.

    A message that already has one (sent again after a requeue) keeps it; otherwise it gets
    the winner once chosen (the choice is made here when due), else the run's draw. The
    test's clock starts at its first assignment. No query for a batch without tested steps, a
    few for one with them, none per message. Call inside the claim's transaction, with the
    messages' steps loaded with ``select_related("ab_test")``.
    """
    tests: dict[int, StepTest] = {}
    for item in approved:
        # The claim loaded each step with its test (None when the step is not tested).
        test = getattr(item.message.step, "ab_test", None)
        if test is not None:
            tests[test.step_id] = test
    if not tests:
        return
    prefetch_related_objects(list(tests.values()), "variants")
    for pending in tests.values():
        if (
            pending.winner_id is None
            and pending.started_at is not None
            and pending.started_at + pending.decide_after <= now
        ):
            ab_test_decide(test=pending, now=now)
    assign: dict[int, list[int]] = defaultdict(list)
    started: set[int] = set()
    for item in approved:
        message = item.message
        test = tests.get(message.step_id)
        if test is None:
            continue
        variants = sorted(test.variants.all(), key=lambda v: v.label)
        if not variants:
            continue
        by_id = {v.pk: v for v in variants}
        if message.variant_id in by_id:
            message.variant = by_id[message.variant_id]
            continue
        if test.winner_id in by_id:
            chosen = by_id[test.winner_id]
        else:
            chosen = variant_pick(variants=variants, run_id=message.run_id, step_id=test.step_id)
        message.variant = chosen
        assign[chosen.pk].append(message.pk)
        if test.started_at is None:
            started.add(test.pk)
    for variant_id, ids in assign.items():
        Message.objects.filter(pk__in=ids).update(variant_id=variant_id)
    if started:
        StepTest.objects.filter(pk__in=started, started_at__isnull=True).update(started_at=now)


def step_content(message: Message) -> CampaignStep:
    """The step as this message renders it: the step, or a copy with its variant's subject and
    content (blank variant fields keep the step's; a variant with its own HTML and no plain
    text gets the text derived from its HTML)."""
    step = message.step
    variant = message.variant if message.variant_id is not None else None
    if variant is None:
        return step
    content = copy.copy(step)
    content.subject = variant.subject or step.subject
    if variant.body:
        content.body = variant.body
        content.body_text = variant.body_text
    elif variant.body_text:
        content.body_text = variant.body_text
    return content
