"""Revenue attribution: each step's funnel (last touch) and the uplift against the control group.

Every expected figure below is computed by hand in the comments beside it (z = 1.959963984540054,
the normal 0.975 quantile; z^2 = 3.841458820694124).
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import pytest

from commerce.models import Order, Shopper
from core.exceptions import ValidationError
from engagement import services
from engagement.models import (
    Campaign,
    CampaignStep,
    EngagementSettings,
    Message,
    Run,
    Unsubscribe,
)
from engagement.services import attribution
from tests.engagement.conftest import make_campaign, make_shopper

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)
FIVE_DAYS = dt.timedelta(days=5)
_numbers = itertools.count(1)


def _run(campaign: Campaign, shopper: Shopper, *, held_out: bool = False) -> Run:
    return Run.objects.create(
        campaign=campaign,
        shopper=shopper,
        occurrence_key="k",
        state=Run.State.HELD_OUT if held_out else Run.State.ACTIVE,
        started_at=T0,
        occurred_at=T0,
    )


def _message(
    run: Run,
    step: CampaignStep,
    *,
    sent_at: dt.datetime = T0,
    state: str = Message.State.SENT,
    opened: dt.datetime | None = None,
    clicked: dt.datetime | None = None,
) -> Message:
    """A message as delivery and tracking leave it (a click records the open too)."""
    return Message.objects.create(
        campaign=run.campaign,
        step=step,
        run=run,
        shopper=run.shopper,
        occurrence_key=run.occurrence_key,
        channel=step.channel,
        state=state,
        due_at=sent_at,
        sent_at=sent_at if state == Message.State.SENT else None,
        opened_at=opened or clicked,
        clicked_at=clicked,
    )


def _order(
    shopper: Shopper,
    total: str,
    at: dt.datetime,
    *,
    status: str = Order.Status.PAID,
    refunded: str = "0",
) -> Order:
    return Order.objects.create(
        number=f"A-{next(_numbers)}",
        shopper=shopper,
        total=Decimal(total),
        refunded_total=Decimal(refunded),
        status=status,
        placed_at=at,
    )


def _two_step_campaign(**fields: Any) -> tuple[Campaign, CampaignStep, CampaignStep]:
    campaign = make_campaign(
        steps=[{"subject": "Welcome"}, {"subject": "Still there?", "delay": D}], **fields
    )
    first, second = campaign.steps.order_by("position")
    return campaign, first, second


def _build_the_worked_example() -> Campaign:
    """Ten treated shoppers (t1..t10), ten held out (c1..c10), a second campaign's touch."""
    campaign, first, second = _two_step_campaign(control_percent=Decimal("50"))
    other = make_campaign(name="other")
    t = [make_shopper() for _ in range(10)]
    c = [make_shopper() for _ in range(10)]
    runs = [_run(campaign, s) for s in t]
    for shopper in c:
        _run(campaign, shopper, held_out=True)
    # Step 1 went to all ten; step 2 to t2 and t9 (t10's was skipped: not "sent").
    m = [_message(run, first) for run in runs]
    _message(runs[1], second, sent_at=T0 + D, clicked=T0 + D + H)
    _message(runs[8], second, sent_at=T0 + D)
    _message(runs[9], second, sent_at=T0 + D, state=Message.State.SKIPPED)
    for i in (0, 1, 4, 5, 6, 7):  # t1, t2, t5, t6, t7, t8 opened step 1 an hour after
        Message.objects.filter(pk=m[i].pk).update(opened_at=T0 + H)
    Message.objects.filter(pk=m[2].pk).update(opened_at=T0 + 2 * H, clicked_at=T0 + 2 * H)
    Unsubscribe.objects.create(shopper=t[6], channel="email", message=m[6])  # t7
    # t4 touched only another campaign's message before ordering: nothing for this one.
    other_run = _run(other, t[3])
    _message(other_run, other.steps.get(), opened=T0 + 12 * H)

    _order(t[0], "100.00", T0 + 2 * H)  # t1: 1 h after opening step 1 -> step 1
    _order(t[1], "50.00", T0 + D + 2 * H)  # t2: step 2 clicked after step 1's open -> step 2
    _order(t[2], "80.00", T0 + 6 * D + 2 * H)  # t3: 6 days after the click: outside
    _order(t[3], "30.00", T0 + D)  # t4: no touch of this campaign
    _order(t[4], "90.00", T0 + 3 * H, status=Order.Status.CANCELLED)  # t5: cancelled
    _order(t[5], "40.00", T0 + H / 2)  # t6: before the open
    _order(t[7], "20.00", T0 + 2 * H)  # t8: two orders after opening step 1,
    _order(t[7], "60.00", T0 + 3 * H, status="partially_refunded", refunded="10.00")  # net 50
    _order(c[0], "60.00", T0 + 2 * D)
    _order(c[1], "20.00", T0 + 3 * D)
    _order(c[2], "45.00", T0 + D, status=Order.Status.REFUNDED)  # refunded in full
    _order(c[3], "70.00", T0 - H)  # before enrolment
    return campaign


def test_each_step_is_credited_its_orders_by_last_touch_within_the_window():
    campaign = _build_the_worked_example()

    result = services.campaign_attribution(campaign=campaign, window=FIVE_DAYS)

    first, second = result.steps
    # Step 1: sent to t1..t10 = 10; opened t1 t2 t3 t5 t6 t7 t8 = 7 (t3 by its click);
    # clicked t3 = 1; orders credited: t1's 100.00, t8's 20.00 and 60.00 - 10.00 = 50.00
    # -> 3 orders from 2 recipients, 170.00. Not credited: t2's order (step 2 touched last),
    # t3's (6 days after the click > 5), t4's (no touch), t5's (cancelled), t6's (placed
    # before the open). Unsubscribed: t7 = 1.
    assert (
        first.sent,
        first.opened,
        first.clicked,
        first.converted,
        first.orders,
        first.revenue,
        first.unsubscribed,
    ) == (10, 7, 1, 2, 3, Decimal("170.00"), 1)
    # Step 2: sent t2 and t9 = 2 (t10's skipped), opened and clicked by t2, whose 50.00
    # order came an hour after that click.
    assert (
        second.sent,
        second.opened,
        second.clicked,
        second.converted,
        second.orders,
        second.revenue,
        second.unsubscribed,
    ) == (2, 1, 1, 1, 1, Decimal("50.00"), 0)


def test_uplift_against_the_control_group_with_newcombe_and_welch_intervals():
    campaign = _build_the_worked_example()

    uplift = services.campaign_attribution(campaign=campaign, window=FIVE_DAYS).uplift

    # Orders within 5 days of enrolment (T0), not cancelled or refunded in full:
    # treated: t1 100, t2 50, t4 30, t6 40, t8 20 + 50 = 70 -> 5 of 10, revenue 290;
    # control: c1 60, c2 20 -> 2 of 10, revenue 80 (c3 refunded in full, c4 before T0).
    assert (uplift.treated.runs, uplift.treated.converted, uplift.treated.revenue) == (
        10,
        5,
        Decimal("290.00"),
    )
    assert (uplift.control.runs, uplift.control.converted, uplift.control.revenue) == (
        10,
        2,
        Decimal("80.00"),
    )
    # Absolute uplift 0.5 - 0.2 = 0.3; relative 0.3 / 0.2 = 1.5.
    assert uplift.absolute == pytest.approx(0.3, abs=1e-12)
    assert uplift.relative == pytest.approx(1.5, abs=1e-12)
    # Wilson 5/10: centre 0.5 + z^2/20 = 0.69207294; half-width
    # z * sqrt(0.25/10 + z^2/400) = z * sqrt(0.03460365) = 0.36459359; scale 1 + z^2/10 =
    # 1.38414588 -> (0.23659309, 0.76340691).
    # Wilson 2/10: centre 0.2 + z^2/20 = 0.39207294; half-width
    # z * sqrt(0.16/10 + z^2/400) = 0.31361657 -> (0.05668215, 0.50983753).
    # Newcombe: low  = 0.3 - sqrt((0.5 - 0.23659309)^2 + (0.50983753 - 0.2)^2)
    #                = 0.3 - sqrt(0.26340691^2 + 0.30983753^2) = 0.3 - 0.40667247 = -0.10667247
    #           high = 0.3 + sqrt((0.76340691 - 0.5)^2 + (0.2 - 0.05668215)^2)
    #                = 0.3 + sqrt(0.26340691^2 + 0.14331785^2) = 0.3 + 0.29987198 = 0.59987198
    assert uplift.interval is not None
    assert round(uplift.interval[0], 4) == -0.1067
    assert round(uplift.interval[1], 4) == 0.5999
    assert not uplift.significant
    # Welch on revenue per recipient: treated values 100 50 0 30 0 40 0 70 0 0: mean 29,
    # s^2 = (19900 - 290^2/10) / 9 = 1276.6667, s^2/n = 127.6667; control 60 20 and eight 0:
    # mean 8, s^2 = (4000 - 80^2/10) / 9 = 373.3333, s^2/n = 37.3333. se^2 = 165,
    # se = 12.8452326; df = 165^2 / (127.6667^2/9 + 37.3333^2/9) = 13.8490;
    # t(0.975, 13.849) = 2.1469820; 21 -/+ 2.1469820 * 12.8452326 = 21 -/+ 27.5784834
    # -> (-6.5785, 48.5785); incremental revenue 21 x 10 treated = 210, (-65.7848, 485.7848).
    revenue = uplift.revenue
    assert revenue is not None
    assert revenue.difference == Decimal("21")
    assert round(revenue.df, 4) == 13.8490
    assert round(revenue.low, 4) == Decimal("-6.5785")
    assert round(revenue.high, 4) == Decimal("48.5785")
    assert uplift.incremental_revenue == Decimal("210")
    assert uplift.incremental_revenue_interval is not None
    assert [round(v, 4) for v in uplift.incremental_revenue_interval] == [
        Decimal("-65.7848"),
        Decimal("485.7848"),
    ]


def test_the_reading_says_not_significant_yet_while_the_interval_spans_zero():
    campaign = _build_the_worked_example()

    reading = services.campaign_attribution(campaign=campaign, window=FIVE_DAYS).reading

    assert reading.startswith("Not significant yet: 50.0% of the 10 shoppers it targeted ordered")
    assert "against 20.0% of the 10 held out: +30.0 points" in reading
    assert "(95% interval -10.7 to +60.0)" in reading
    assert "incremental revenue 210.00 (95% interval -65.78 to 485.78)" in reading


def _groups(campaign: Campaign, *, treated: int, treated_bought: int, control: int, bought: int):
    for n, held_out, buyers in ((treated, False, treated_bought), (control, True, bought)):
        for i in range(n):
            shopper = make_shopper()
            _run(campaign, shopper, held_out=held_out)
            if i < buyers:
                _order(shopper, "10.00", T0 + D)


@pytest.mark.parametrize(
    ("treated_bought", "control_bought", "low", "high", "verdict"),
    [
        # Newcombe (1998), Table II, example (b): 9/10 - 3/10 -> 0.1705 to 0.8090.
        (9, 3, 0.1705, 0.8090, "The campaign raises conversion"),
        (3, 9, -0.8090, -0.1705, "The campaign lowers conversion"),
    ],
)
def test_a_significant_uplift_reads_as_such(treated_bought, control_bought, low, high, verdict):
    campaign = make_campaign(control_percent=Decimal("50"))
    _groups(campaign, treated=10, treated_bought=treated_bought, control=10, bought=control_bought)

    result = services.campaign_attribution(campaign=campaign, window=FIVE_DAYS)

    assert result.uplift.interval is not None
    assert [round(v, 4) for v in result.uplift.interval] == [low, high]
    assert result.uplift.significant
    assert result.reading.startswith(verdict)


def test_newcombe_interval_matches_the_published_examples():
    # Newcombe (1998), Table II, method 10, examples (a) and (d)-(h).
    cases = {
        (56, 70, 48, 80): (0.0524, 0.3339),
        (5, 56, 0, 29): (-0.0381, 0.1926),
        (0, 10, 0, 20): (-0.1611, 0.2775),
        (0, 10, 0, 10): (-0.2775, 0.2775),
        (10, 10, 0, 20): (0.6791, 1.0),
        (10, 10, 0, 10): (0.6075, 1.0),
    }
    for counts, expected in cases.items():
        assert tuple(round(v, 4) for v in attribution.newcombe_interval(*counts)) == expected


def test_student_t_quantiles_match_the_tables():
    # Two-sided 95% critical values of Student's t (any statistics table): 12.706 for 1
    # degree of freedom, 2.571 for 5, 2.228 for 10, 2.042 for 30, 1.984 for 100.
    assert [round(attribution.student_t_quantile(0.975, df), 3) for df in (1, 5, 10, 30, 100)] == [
        12.706,
        2.571,
        2.228,
        2.042,
        1.984,
    ]


def test_without_a_control_group_the_reading_asks_for_one():
    campaign = make_campaign()
    _groups(campaign, treated=3, treated_bought=1, control=0, bought=0)

    result = services.campaign_attribution(campaign=campaign, window=FIVE_DAYS)

    assert result.uplift.interval is None
    assert result.uplift.absolute is None
    assert result.reading.startswith("No control group yet")


def test_the_window_comes_from_the_store_settings_and_must_be_positive():
    campaign = _build_the_worked_example()
    EngagementSettings.objects.create(pk=1, attribution_window_days=7)

    first = services.campaign_attribution(campaign=campaign).steps[0]

    # With 7 days, t3's 80.00 order (6 days after the click) is credited to step 1 as well.
    assert (first.converted, first.orders, first.revenue) == (3, 4, Decimal("250.00"))
    with pytest.raises(ValidationError):
        services.campaign_attribution(campaign=campaign, window=dt.timedelta(0))


@pytest.mark.parametrize("shoppers", [4, 40])
def test_attribution_runs_the_same_queries_whatever_the_campaign_size(
    shoppers, django_assert_num_queries
):
    campaign, first, _ = _two_step_campaign(control_percent=Decimal("50"))
    for i in range(shoppers):
        shopper = make_shopper()
        run = _run(campaign, shopper, held_out=i % 2 == 1)
        if not run.is_control:
            _message(run, first, opened=T0 + H)
            _order(shopper, "10.00", T0 + 2 * H)

    # Group totals, step counts, unsubscribes, credited orders, the steps: five.
    with django_assert_num_queries(5):
        result = services.campaign_attribution(campaign=campaign, window=FIVE_DAYS)

    assert result.steps[0].orders == shoppers // 2
