"""Revenue attribution: a campaign's results per step, and its uplift against the control group.

Two questions, two rules (both computed with aggregate SQL, a fixed number of queries
whatever the campaign's size):

1. **Which step earned an order** (the funnel)? Last touch within the campaign: an order of
   the shopper placed within the window after an open or a click of one of the campaign's
   messages belongs to the message touched last before it (its open or its click, whichever
   came later and before the order). An order belongs to one step of a campaign at most. This
   is how Klaviyo credits flow revenue; it cannot say how much would have come anyway.
2. **Did the campaign cause it** (the uplift)? Intent to treat against the control group:
   every enrolment (run) counts from its start, whatever became of its messages (a message
   skipped for lack of consent too, since the control group holds such shoppers as well), and
   converts when its shopper placed an order within the window after the start. Treated runs
   (every state but held out) are compared with held-out runs.

Orders count unless cancelled or fully refunded; revenue is net of refunds
(``total - refunded_total``), in the orders' currency (a store sells in one).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal
from statistics import NormalDist
from typing import Any

from django.db import connection
from django.db.models import Count, Q

from commerce.models import Order
from core.exceptions import ValidationError
from engagement import selectors
from engagement.models import Campaign, CampaignStep, Message, Unsubscribe

# Two-sided 95%: the normal quantile of 0.975 (1.959963984540054).
Z_95 = NormalDist().inv_cdf(0.975)
_ZERO = Decimal(0)
_NOT_COUNTED = [str(Order.Status.CANCELLED), str(Order.Status.REFUNDED)]


# --- Statistics ----------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``successes / trials`` (``trials`` > 0).

    Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
    inference. JASA 22(158), 209-212:
    ``(p + z^2/2n -/+ z*sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``.
    """
    if trials <= 0:
        raise ValueError("trials must be positive")
    n, p = trials, successes / trials
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return (centre - half) / scale, (centre + half) / scale


def newcombe_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, *, z: float = Z_95
) -> tuple[float, float]:
    """95% interval of the difference of two independent proportions ``p_a - p_b``.

    Newcombe's hybrid score interval (method 10 of Newcombe, R. G. (1998). Interval estimation
    for the difference between independent proportions: comparison of eleven methods.
    Statistics in Medicine 17(8), 873-890), built from the two Wilson intervals
    ``(l_a, u_a)`` and ``(l_b, u_b)``:
    ``d - sqrt((p_a - l_a)^2 + (u_b - p_b)^2)`` to ``d + sqrt((u_a - p_a)^2 + (p_b - l_b)^2)``.
    Unlike the Wald interval it stays inside [-1, 1] and behaves with rates near 0, which is
    where conversion rates live. Both trial counts must be positive.
    """
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    low_a, high_a = wilson_interval(successes_a, trials_a, z=z)
    low_b, high_b = wilson_interval(successes_b, trials_b, z=z)
    d = p_a - p_b
    return (
        d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
        d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2),
    )


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the incomplete beta's continued fraction (Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for coefficient in (even, odd):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def _regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _regularized_beta(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile (0.5 < probability < 1) of Student's t, by bisection."""
    if not 0.5 < probability < 1 or df <= 0:
        raise ValueError("need 0.5 < probability < 1 and df > 0")
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < probability:
        low, high = high, high * 2
    for _ in range(200):
        middle = (low + high) / 2
        if student_t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-13:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class WelchInterval:
    """95% Welch interval of a difference of means ``mean_a - mean_b`` (money: Decimal)."""

    difference: Decimal
    low: Decimal
    high: Decimal
    df: float


def welch_interval(
    *,
    n_a: int,
    sum_a: Decimal,
    sum_squares_a: Decimal,
    n_b: int,
    sum_b: Decimal,
    sum_squares_b: Decimal,
) -> WelchInterval | None:
    """Welch's interval for the difference of two means with unequal variances, from sums.

    Welch, B. L. (1947). The generalization of 'Student's' problem when several different
    population variances are involved. Biometrika 34(1-2), 28-35; degrees of freedom by the
    Welch-Satterthwaite equation: ``se^2 = s_a^2/n_a + s_b^2/n_b``,
    ``df = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))``, interval
    ``d -/+ t(0.975, df) * se`` with sample variances ``s^2 = (sum_squares - sum^2/n)/(n-1)``.
    None when a group has fewer than 2 values or both groups have no variance.
    """
    if n_a < 2 or n_b < 2:
        return None
    var_a = (sum_squares_a - sum_a * sum_a / n_a) / (n_a - 1)
    var_b = (sum_squares_b - sum_b * sum_b / n_b) / (n_b - 1)
    part_a, part_b = max(var_a, _ZERO) / n_a, max(var_b, _ZERO) / n_b
    se_squared = part_a + part_b
    if se_squared <= 0:
        return None
    df = float(se_squared**2 / (part_a**2 / (n_a - 1) + part_b**2 / (n_b - 1)))
    margin = Decimal(repr(student_t_quantile(0.975, df))) * se_squared.sqrt()
    difference = sum_a / n_a - sum_b / n_b
    return WelchInterval(
        difference=difference, low=difference - margin, high=difference + margin, df=df
    )


# --- Results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One step's funnel. ``converted``: its messages whose shopper placed at least one order
    credited to it; ``orders`` and ``revenue``: the orders credited to it (last touch)."""

    step_id: int
    position: int
    channel: str
    subject: str
    sent: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    orders: int = 0
    revenue: Decimal = _ZERO
    unsubscribed: int = 0


@dataclass(frozen=True)
class GroupOutcome:
    """Enrolments of one group (treated or control), and how many ordered within the window."""

    runs: int = 0
    converted: int = 0
    revenue: Decimal = _ZERO
    revenue_squares: Decimal = _ZERO

    @property
    def rate(self) -> float | None:
        return self.converted / self.runs if self.runs else None

    @property
    def revenue_per_recipient(self) -> Decimal | None:
        return self.revenue / self.runs if self.runs else None


@dataclass(frozen=True)
class Uplift:
    """Treated against control (intent to treat, see the module docstring).

    ``absolute`` is the difference of conversion rates (treated - control, a proportion:
    0.05 = 5 points) with its Newcombe 95% ``interval``; ``relative`` is ``absolute`` over the
    control's rate. ``revenue`` is the Welch 95% interval of revenue per recipient (treated -
    control); ``incremental_revenue`` = that difference x treated runs, with ``..._interval``
    scaled the same way. Fields are None when the data cannot give them yet.
    """

    treated: GroupOutcome
    control: GroupOutcome
    absolute: float | None = None
    relative: float | None = None
    interval: tuple[float, float] | None = None
    revenue: WelchInterval | None = None
    incremental_revenue: Decimal | None = None
    incremental_revenue_interval: tuple[Decimal, Decimal] | None = None

    @property
    def significant(self) -> bool:
        """Whether the conversion interval excludes 0."""
        return self.interval is not None and (self.interval[0] > 0 or self.interval[1] < 0)


@dataclass(frozen=True)
class CampaignAttribution:
    campaign_id: int
    window: dt.timedelta
    steps: list[StepResult]
    uplift: Uplift
    reading: str = field(default="")


# Each counted order of a shopper the campaign touched, with the message it is credited to
# (rule 1 of the module docstring): the one place that rule is written.
_CREDITED_ORDERS_SQL = """
FROM commerce_order o
JOIN LATERAL (
    SELECT m.id AS message_id, m.step_id, m.variant_id
    FROM engagement_message m
    WHERE m.campaign_id = %(campaign)s AND m.shopper_id = o.shopper_id
      AND GREATEST(CASE WHEN m.opened_at < o.placed_at THEN m.opened_at END,
                   CASE WHEN m.clicked_at < o.placed_at THEN m.clicked_at END)
          >= o.placed_at - %(window)s
    ORDER BY GREATEST(CASE WHEN m.opened_at < o.placed_at THEN m.opened_at END,
                      CASE WHEN m.clicked_at < o.placed_at THEN m.clicked_at END) DESC, m.id DESC
    LIMIT 1
) credited ON true
WHERE o.status <> ALL(%(not_counted)s)
  AND o.shopper_id IN (
      SELECT t.shopper_id FROM engagement_message t
      WHERE t.campaign_id = %(campaign)s
        AND (t.opened_at IS NOT NULL OR t.clicked_at IS NOT NULL))
"""

_STEP_ORDERS_SQL = (
    """
SELECT credited.step_id, count(*), count(DISTINCT credited.message_id),
       coalesce(sum(o.total - o.refunded_total), 0)"""
    + _CREDITED_ORDERS_SQL
    + "GROUP BY credited.step_id"
)

# Per A/B variant of one step: its messages credited with at least one order.
_VARIANT_CONVERSIONS_SQL = (
    "SELECT credited.variant_id, count(DISTINCT credited.message_id)"
    + _CREDITED_ORDERS_SQL
    + "AND credited.step_id = %(step)s AND credited.variant_id IS NOT NULL "
    + "GROUP BY credited.variant_id"
)

_GROUPS_SQL = """
SELECT r.state = 'held_out', count(*), count(*) FILTER (WHERE bought.orders > 0),
       coalesce(sum(bought.revenue), 0), coalesce(sum(bought.revenue * bought.revenue), 0)
FROM engagement_run r
CROSS JOIN LATERAL (
    SELECT count(*) AS orders, coalesce(sum(o.total - o.refunded_total), 0) AS revenue
    FROM commerce_order o
    WHERE o.shopper_id = r.shopper_id AND o.status <> ALL(%(not_counted)s)
      AND o.placed_at >= r.started_at AND o.placed_at < r.started_at + %(window)s
) bought
WHERE r.campaign_id = %(campaign)s
GROUP BY 1
"""


def _sql_params(campaign: Campaign, window: dt.timedelta) -> dict[str, Any]:
    return {"campaign": campaign.pk, "window": window, "not_counted": _NOT_COUNTED}


def _step_results(campaign: Campaign, window: dt.timedelta) -> list[StepResult]:
    counts: dict[int, tuple[int, int, int]] = {
        step_id: (sent, opened, clicked)
        for step_id, sent, opened, clicked in Message.objects.filter(
            campaign=campaign, state=Message.State.SENT
        )
        .values("step_id")
        .annotate(
            sent=Count("pk"),
            opened=Count("pk", filter=Q(opened_at__isnull=False) | Q(clicked_at__isnull=False)),
            clicked=Count("pk", filter=Q(clicked_at__isnull=False)),
        )
        .values_list("step_id", "sent", "opened", "clicked")
    }
    unsubscribed = dict(
        Unsubscribe.objects.filter(message__campaign=campaign)
        .values("message__step_id")
        .annotate(n=Count("pk"))
        .values_list("message__step_id", "n")
    )
    credited: dict[int, tuple[int, int, Decimal]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_STEP_ORDERS_SQL, _sql_params(campaign, window))
        for step_id, orders, converted, revenue in cursor.fetchall():
            credited[step_id] = (orders, converted, Decimal(revenue))
    results = []
    for step in CampaignStep.objects.filter(campaign=campaign).order_by("position"):
        sent, opened, clicked = counts.get(step.pk, (0, 0, 0))
        orders, converted, revenue = credited.get(step.pk, (0, 0, _ZERO))
        results.append(
            StepResult(
                step_id=step.pk,
                position=step.position,
                channel=step.channel,
                subject=step.subject,
                sent=sent,
                opened=opened,
                clicked=clicked,
                converted=converted,
                orders=orders,
                revenue=revenue,
                unsubscribed=unsubscribed.get(step.pk, 0),
            )
        )
    return results


def variant_conversions(
    *, step: CampaignStep, window: dt.timedelta | None = None
) -> dict[int, int]:
    """Per A/B variant of ``step`` (by variant id): how many of its messages earned at least
    one order, credited by the same last-touch rule as the step results (module docstring,
    rule 1) within ``window`` (default: the store's ``attribution_window_days``). One query
    (two with the default window); variants without a conversion are absent."""
    if window is None:
        window = dt.timedelta(days=selectors.engagement_settings().attribution_window_days)
    params = {**_sql_params(step.campaign, window), "step": step.pk}
    with connection.cursor() as cursor:
        cursor.execute(_VARIANT_CONVERSIONS_SQL, params)
        return {variant_id: converted for variant_id, converted in cursor.fetchall()}


def _uplift(campaign: Campaign, window: dt.timedelta) -> Uplift:
    groups = {True: GroupOutcome(), False: GroupOutcome()}
    with connection.cursor() as cursor:
        cursor.execute(_GROUPS_SQL, _sql_params(campaign, window))
        for held_out, runs, converted, revenue, squares in cursor.fetchall():
            groups[bool(held_out)] = GroupOutcome(
                runs=runs,
                converted=converted,
                revenue=Decimal(revenue),
                revenue_squares=Decimal(squares),
            )
    treated, control = groups[False], groups[True]
    if not treated.runs or not control.runs:
        return Uplift(treated=treated, control=control)
    treated_rate, control_rate = treated.converted / treated.runs, control.converted / control.runs
    absolute = treated_rate - control_rate
    revenue = welch_interval(
        n_a=treated.runs,
        sum_a=treated.revenue,
        sum_squares_a=treated.revenue_squares,
        n_b=control.runs,
        sum_b=control.revenue,
        sum_squares_b=control.revenue_squares,
    )
    incremental = incremental_interval = None
    if revenue is not None:
        incremental = revenue.difference * treated.runs
        incremental_interval = (revenue.low * treated.runs, revenue.high * treated.runs)
    return Uplift(
        treated=treated,
        control=control,
        absolute=absolute,
        relative=absolute / control_rate if control_rate else None,
        interval=newcombe_interval(
            treated.converted, treated.runs, control.converted, control.runs
        ),
        revenue=revenue,
        incremental_revenue=incremental,
        incremental_revenue_interval=incremental_interval,
    )


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def uplift_reading(uplift: Uplift, *, window: dt.timedelta) -> str:
    """A merchant's plain-language reading of the uplift: what it says and what to do."""
    days = window.days
    treated, control = uplift.treated, uplift.control
    if not control.runs:
        return (
            "No control group yet: set a control percentage on the campaign to learn how many "
            "of these orders it caused."
        )
    if not treated.runs or uplift.interval is None or uplift.absolute is None:
        return "No shopper has been sent this campaign yet."
    treated_rate, control_rate = treated.converted / treated.runs, control.converted / control.runs
    low, high = uplift.interval
    facts = (
        f"{treated_rate:.1%} of the {treated.runs} shoppers it targeted ordered within {days} days, "
        f"against {control_rate:.1%} of the {control.runs} held out: "
        f"{_points(uplift.absolute)} points (95% interval {_points(low)} to {_points(high)})"
    )
    money = ""
    if uplift.incremental_revenue is not None and uplift.incremental_revenue_interval:
        money_low, money_high = uplift.incremental_revenue_interval
        money = (
            f"; incremental revenue {uplift.incremental_revenue:.2f} "
            f"(95% interval {money_low:.2f} to {money_high:.2f})"
        )
    if low > 0:
        return f"The campaign raises conversion: {facts}{money}. It earns its sends."
    if high < 0:
        return (
            f"The campaign lowers conversion: {facts}{money}. Shoppers who get it buy less "
            "than those held out; change or pause it."
        )
    return (
        f"Not significant yet: {facts}{money}. The interval includes zero, so the difference "
        "may be chance; keep the control group running before deciding."
    )


def campaign_attribution(
    *, campaign: Campaign, window: dt.timedelta | None = None
) -> CampaignAttribution:
    """A campaign's results per step and its uplift against the control group.

    ``window`` (default: the store's ``attribution_window_days``) bounds both rules of the
    module docstring: an order counts for a step when placed within it after the last open or
    click of the step's message, and for the uplift when placed within it after enrolment.
    Per step: ``sent``, ``opened`` (opened or clicked: a click proves the open an image blocker
    hid), ``clicked``, ``converted``, ``orders``, ``revenue`` (net, Decimal) and
    ``unsubscribed`` (one-click or preference-centre unsubscribes from that step's messages).
    Read-only; six queries whatever the number of shoppers, messages and orders.
    ``ValidationError`` for a window that is not positive.
    """
    if window is None:
        window = dt.timedelta(days=selectors.engagement_settings().attribution_window_days)
    if window <= dt.timedelta(0):
        raise ValidationError("the attribution window must be positive", code="invalid_window")
    uplift = _uplift(campaign, window)
    return CampaignAttribution(
        campaign_id=campaign.pk,
        window=window,
        steps=_step_results(campaign, window),
        uplift=uplift,
        reading=uplift_reading(uplift, window=window),
    )
