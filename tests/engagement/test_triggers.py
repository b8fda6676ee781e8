"""Engagement's own triggers, driven through the real event-processing path."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from commerce import services as commerce_services
from commerce.models import Coupon, Order, Product, Shopper
from engagement import registry, services
from engagement.models import (
    Broadcast,
    Message,
    ProductChange,
    ProductWatch,
    Run,
    Suppression,
)
from tests.engagement.conftest import make_campaign, make_shopper, process, track

pytestmark = pytest.mark.django_db


def test_identify_of_a_new_customer_with_email_is_welcomed_once(write_key):
    make_campaign("welcome", steps=[{"subject": "Welcome {{ first_name }}"}])
    shopper = make_shopper(first_name="Mara")
    first = track(
        write_key,
        shopper,
        "",
        type="identify",
        user_id=shopper.customer_id,
        properties={"email": shopper.email, "email_consent": True},
    )
    again = track(write_key, shopper, "", type="identify", user_id=shopper.customer_id)

    process(first, again)
    process(first, again)

    run = Run.objects.get()
    assert (run.shopper_id, run.occurrence_key) == (shopper.pk, "welcome")
    services.outbox_deliver_batch()
    assert [m.subject for m in mail.outbox] == ["Welcome Mara"]


def test_identify_without_email_or_of_a_returning_customer_is_not_welcomed(write_key):
    make_campaign("welcome")
    anonymous = make_shopper(email="")
    returning = make_shopper()
    Order.objects.create(
        number="old", shopper=returning, placed_at=timezone.now() - dt.timedelta(days=300)
    )

    process(
        track(write_key, anonymous, "", type="identify", user_id=anonymous.customer_id),
        track(write_key, returning, "", type="identify", user_id=returning.customer_id),
    )

    assert Run.objects.count() == 0


def _views(write_key, shopper, sku, n, start):
    return [
        track(
            write_key,
            shopper,
            "Product Viewed",
            properties={"sku": sku},
            at=start + dt.timedelta(minutes=i),
        )
        for i in range(n)
    ]


def test_browse_abandonment_fires_after_n_views_within_the_window(write_key):
    Product.objects.create(sku="MUG", title="Blue mug", price=Decimal("12.00"))
    make_campaign(
        "browse_abandoned",
        trigger_options={"views": 3, "window_hours": 2},
        steps=[
            {"subject": "Still thinking about {{ product.title }}?", "delay": dt.timedelta(hours=1)}
        ],
    )
    shopper = make_shopper()
    start = timezone.now() - dt.timedelta(minutes=30)

    process(*_views(write_key, shopper, "MUG", 2, start))
    assert Run.objects.count() == 0
    process(*_views(write_key, shopper, "MUG", 2, start + dt.timedelta(minutes=5)))

    run = Run.objects.get()
    assert run.data["sku"] == "MUG"
    message = Message.objects.get()
    assert message.due_at > timezone.now() + dt.timedelta(minutes=59)
    Message.objects.update(due_at=timezone.now())
    services.outbox_deliver_batch()
    assert [m.subject for m in mail.outbox] == ["Still thinking about Blue mug?"]


def test_browse_abandonment_ends_when_that_product_is_added_to_the_cart(write_key):
    Product.objects.create(sku="MUG", title="Blue mug", price=Decimal("12.00"))
    Product.objects.create(sku="CUP", title="Cup", price=Decimal("5.00"))
    make_campaign(
        "browse_abandoned",
        trigger_options={"views": 2},
        steps=[{"subject": "x", "delay": dt.timedelta(hours=1)}],
    )
    shopper = make_shopper()
    process(*_views(write_key, shopper, "MUG", 2, timezone.now() - dt.timedelta(minutes=10)))

    process(track(write_key, shopper, "Product Added", properties={"sku": "CUP"}))
    assert Run.objects.get().state == Run.State.ACTIVE
    process(track(write_key, shopper, "Product Added", properties={"sku": "MUG"}))

    assert Run.objects.get().state == Run.State.STOPPED
    assert Message.objects.get().state == Message.State.CANCELLED


def test_views_already_added_to_cart_do_not_fire(write_key):
    Product.objects.create(sku="MUG", title="Blue mug", price=Decimal("12.00"))
    make_campaign("browse_abandoned", trigger_options={"views": 2})
    shopper = make_shopper()
    start = timezone.now() - dt.timedelta(minutes=10)
    added = track(write_key, shopper, "Product Added", properties={"sku": "MUG"}, at=start)
    process(added, *_views(write_key, shopper, "MUG", 3, start + dt.timedelta(minutes=1)))
    assert Run.objects.count() == 0


def test_win_back_fires_once_for_a_lapsed_customer_and_ends_on_a_new_order(write_key):
    make_campaign(
        "win_back",
        trigger_options={"days": 60},
        steps=[{"subject": "a"}, {"subject": "b", "delay": dt.timedelta(days=5)}],
    )
    lapsed = make_shopper()
    recent = make_shopper()
    Order.objects.create(
        number="L1", shopper=lapsed, placed_at=timezone.now() - dt.timedelta(days=61)
    )
    Order.objects.create(
        number="R1", shopper=recent, placed_at=timezone.now() - dt.timedelta(days=10)
    )

    assert services.win_back_scan() == 1
    assert services.win_back_scan() == 0
    process(track(write_key, lapsed, "Order Completed", properties={"order_id": "L2"}))

    run = Run.objects.get()
    assert (run.shopper_id, run.occurrence_key, run.state) == (lapsed.pk, "lastorder:L1", "stopped")


def test_notify_me_and_recent_viewers_hear_about_restock_and_price_drop(write_key):
    product = Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)
    make_campaign("back_in_stock", steps=[{"subject": "{{ product.title }} is back"}])
    # Smart sending off: the viewer hears about both changes at once here (smart sending would
    # keep the second email; tests/engagement/test_smart_sending.py).
    make_campaign(
        "price_drop",
        steps=[{"subject": "{{ product.title }} now {{ new_price }}"}],
        smart_sending=False,
    )
    asker = make_shopper()
    viewer = make_shopper()
    stranger = make_shopper()
    services.product_watch_create(shopper=asker, product=product, kind="back_in_stock")
    process(track(write_key, viewer, "Product Viewed", properties={"sku": "LAMP"}))
    assert services.product_changes_detect() == []

    Product.objects.filter(pk=product.pk).update(stock=5, price=Decimal("30.00"))
    changes = services.product_changes_detect()
    assert services.product_changes_detect() == []

    assert sorted(c.kind for c in changes) == ["back_in_stock", "price_drop"]
    runs = Run.objects.order_by("campaign__trigger", "shopper_id")
    assert [(r.campaign.trigger, r.shopper_id) for r in runs] == [
        ("back_in_stock", asker.pk),
        ("back_in_stock", viewer.pk),
        ("price_drop", viewer.pk),
    ]
    assert not Run.objects.filter(shopper=stranger).exists()
    assert ProductWatch.objects.get().notified_at is not None
    services.outbox_deliver_batch()
    assert sorted(m.subject for m in mail.outbox) == [
        "Lamp is back",
        "Lamp is back",
        "Lamp now 30.00",
    ]
    assert ProductChange.objects.count() == 2


def test_order_completed_asks_for_a_review_and_nps_and_a_review_ends_it(write_key):
    make_campaign(
        "review_request",
        steps=[
            {
                "subject": "Review {% for l in lines %}{{ l.title }}{% endfor %}",
                "delay": dt.timedelta(days=7),
            }
        ],
    )
    make_campaign("nps_survey", steps=[{"subject": "NPS"}])
    shopper = make_shopper()
    _order, _ = commerce_services.order_create(
        number="9001",
        shopper=shopper,
        lines=[
            commerce_services.LineInput(sku="S", quantity=1, unit_price=Decimal("3"), title="Socks")
        ],
    )
    event = track(write_key, shopper, "Order Completed", properties={"order_id": "9001"})

    process(event)
    assert services.post_purchase_scan() == 0

    assert sorted(Run.objects.values_list("campaign__trigger", "occurrence_key")) == [
        ("nps_survey", "order:9001"),
        ("review_request", "order:9001"),
    ]
    process(track(write_key, shopper, "Product Reviewed", properties={"sku": "S"}))
    review = Run.objects.get(campaign__trigger="review_request")
    assert review.state == Run.State.STOPPED
    assert Run.objects.get(campaign__trigger="nps_survey").state == Run.State.ACTIVE


def test_birthday_scan_once_a_year_and_leap_day_birthdays_on_the_28th():
    make_campaign("birthday")
    leap = make_shopper(birthday=dt.date(2000, 2, 29))
    other = make_shopper(birthday=dt.date(1990, 3, 1))

    noon = dt.datetime(2027, 2, 28, 12, tzinfo=dt.UTC)
    assert services.birthday_scan(now=noon) == 1
    assert services.birthday_scan(now=noon) == 0

    assert list(Run.objects.values_list("shopper_id", "occurrence_key")) == [
        (leap.pk, "birthday:2027")
    ]
    assert not Run.objects.filter(shopper=other).exists()


def test_limited_offer_broadcast_issues_expiring_coupons_once_per_shopper_sent_to():
    campaign = make_campaign(
        "limited_offer",
        trigger_options={
            "coupon": {"kind": "percent", "value": "15", "valid_hours": 24, "prefix": "LTO"}
        },
        steps=[{"subject": "15% off", "body": "<p>Use {{ coupon.code }}</p>"}],
    )
    shoppers = [make_shopper() for _ in range(3)]
    bounced = make_shopper()
    Suppression.objects.create(channel="email", address=bounced.email, reason="bounce")
    no_address = make_shopper(email="")
    broadcast = Broadcast.objects.create(campaign=campaign)

    assert services.broadcast_send(broadcast_id=broadcast.pk) == 5
    assert services.broadcast_send(broadcast_id=broadcast.pk) == 0
    assert Coupon.objects.count() == 0  # enrolled is not sent: no coupon yet

    services.outbox_deliver_batch()
    services.outbox_deliver_batch()

    coupons = list(Coupon.objects.order_by("owner_id"))
    assert [c.owner_id for c in coupons] == [s.pk for s in shoppers]
    assert all(c.code.startswith("LTO") and c.usage_limit == 1 and c.active for c in coupons)
    for coupon in coupons:
        assert coupon.valid_until is not None
        assert (
            timezone.now() + dt.timedelta(hours=23)
            < coupon.valid_until
            < timezone.now() + dt.timedelta(hours=25)
        )
    bodies = {m.to[0]: m.body for m in mail.outbox}
    assert sorted(bodies) == sorted(s.email for s in shoppers)
    for shopper, coupon in zip(shoppers, coupons, strict=True):
        assert coupon.code in bodies[shopper.email]
        run = Run.objects.get(shopper=shopper)
        assert run.data["coupon"]["code"] == coupon.code
    skipped = dict(
        Message.objects.filter(shopper__in=[bounced, no_address]).values_list(
            "shopper_id", "reason"
        )
    )
    assert skipped == {bounced.pk: "suppressed (bounce)", no_address.pk: "no email address"}


def test_other_apps_register_triggers_with_their_context_and_end_events(write_key):
    registry.register_trigger(
        "test_cart_abandoned",
        label="Cart abandoned (test)",
        context=lambda shopper, occurrence: {"total": f"£{occurrence.data['total']}"},
        ends_on=["Order Completed"],
    )
    make_campaign(
        "test_cart_abandoned",
        steps=[
            {"subject": "Your cart: {{ total }}"},
            {"subject": "later", "delay": dt.timedelta(hours=24)},
        ],
    )
    shopper = make_shopper()

    services.trigger_fire(
        trigger="test_cart_abandoned",
        shopper=shopper,
        occurrence_key="cart:7:1",
        data={"total": "18.50"},
    )
    services.outbox_deliver_batch()
    process(track(write_key, shopper, "Order Completed", properties={"order_id": "X"}))

    assert [m.subject for m in mail.outbox] == ["Your cart: £18.50"]
    assert list(Message.objects.order_by("step__position").values_list("state", flat=True)) == [
        "sent",
        "cancelled",
    ]


def test_merging_shoppers_keeps_one_enrolment_per_occurrence():
    make_campaign("welcome", steps=[{"subject": "w", "delay": dt.timedelta(hours=1)}])
    source = make_shopper(customer_id=None)
    target = make_shopper()
    services.trigger_fire(trigger="welcome", shopper=source, occurrence_key="welcome")
    services.trigger_fire(trigger="welcome", shopper=target, occurrence_key="welcome")

    commerce_services.shopper_merge(source=source, target=target)

    assert Run.objects.filter(shopper=target).count() == 2
    states = sorted(Message.objects.filter(shopper=target).values_list("state", flat=True))
    assert states == ["cancelled", "scheduled"]
    assert Shopper.objects.get(pk=source.pk).merged_into_id == target.pk


def test_a_broadcast_is_queued_only_once_its_transaction_commits(
    django_capture_on_commit_callbacks,
):
    campaign = make_campaign(
        "limited_offer",
        trigger_options={"coupon": {"kind": "percent", "value": "15", "valid_hours": 24}},
    )
    make_shopper()

    def schedule_then_fail() -> None:
        with transaction.atomic():
            services.broadcast_schedule(campaign=campaign)
            raise RuntimeError("the admin action failed after scheduling")

    with (
        django_capture_on_commit_callbacks(execute=True) as rolled_back,
        pytest.raises(RuntimeError),
    ):
        schedule_then_fail()
    assert rolled_back == []  # nothing queued for the broadcast that never was
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = services.broadcast_schedule(campaign=campaign)

    assert list(Broadcast.objects.values_list("pk", flat=True)) == [broadcast.pk]
    broadcast.refresh_from_db()
    assert broadcast.finished_at is not None  # the task ran (eagerly) after the commit
    assert Run.objects.filter(campaign=campaign).count() == 1
