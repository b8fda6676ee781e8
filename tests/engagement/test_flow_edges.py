"""The triggers at their edges (#15 section 1): each fault found, driven as a store drives it.

Events go through the tracking API with a server-side write key (the processing task runs
eagerly on commit), staff through the admin and the staff API, shoppers through the widget
API and the links in their email; the outbox is delivered by the service the worker runs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from commerce import services as commerce_services
from commerce.models import Coupon, CouponRedemption, Order, Product, Shopper, WriteKey
from engagement import services
from engagement.models import Broadcast, Message, NpsResponse, Run, Unsubscribe
from tests.commerce.tracking_support import basic_auth, post
from tests.engagement.conftest import make_campaign, make_shopper

pytestmark = pytest.mark.django_db

Send = Callable[..., None]
_ids = iter(range(1, 10**6))


@pytest.fixture
def server_key() -> WriteKey:
    return WriteKey.objects.create(name="shop server", server_side=True)


@pytest.fixture
def send(client, django_capture_on_commit_callbacks, server_key) -> Send:
    """POST calls to /v1/batch with the server-side key; the processing it queues runs."""

    def _send(*calls: dict[str, Any]) -> None:
        batch = [{"messageId": f"m-{next(_ids)}", **call} for call in calls]
        with django_capture_on_commit_callbacks(execute=True):
            response = post(client, "/v1/batch", {"batch": batch}, key=server_key.key)
        assert response.status_code == 200, response.content
        assert "errors" not in response.json(), response.json()

    return _send


def identify(user_id: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user_id, "traits": traits}


def event(user_id: str, name: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user_id, "event": name, "properties": properties}


def order_completed(user_id: str, number: str, **properties: Any) -> dict[str, Any]:
    return event(
        user_id,
        "Order Completed",
        order_id=number,
        products=[{"sku": "MUG", "name": "Mug", "price": 20, "quantity": 1}],
        **properties,
    )


def deliver_all_due() -> None:
    """What the worker does: deliver everything due, after pulling later steps forward."""
    Message.objects.filter(state=Message.State.SCHEDULED).update(due_at=timezone.now())
    services.outbox_deliver_batch()


# --- Test sends ----------------------------------------------------------------------------


def test_a_test_send_from_the_preview_carries_links_that_act_on_nobody(admin_client, client):
    campaign = make_campaign(steps=[{"subject": "Hi {{ first_name }}"}])
    shopper = make_shopper(first_name="Anete")
    step = campaign.steps.get()

    admin_client.post(
        f"/admin/engagement/campaign/{campaign.pk}/steps/{step.pk}/preview/",
        {"shopper": shopper.pk, "address": "staff@shop.example"},
    )

    (email,) = mail.outbox
    unsubscribe = email.extra_headers["List-Unsubscribe"].strip("<>")
    one_click = client.post(unsubscribe, {"List-Unsubscribe": "One-Click"})
    preferences = re.search(r"(https?://\S+/e/preferences/[^\s)]+)", str(email.body))
    assert preferences is not None
    preferences_page = client.get(preferences.group(1))

    assert one_click.status_code == 200
    assert "test message" in one_click.content.decode()
    assert preferences_page.status_code == 404
    assert Unsubscribe.objects.count() == 0
    assert Shopper.objects.get(pk=shopper.pk).email_consent is True


# --- Offer coupons ---------------------------------------------------------------------------


def _owned_coupon(owner: Shopper, **fields: Any) -> Coupon:
    (coupon,) = commerce_services.coupons_issue(
        kind=Coupon.Kind.PERCENT,
        value=Decimal("15"),
        source=Coupon.Source.CAMPAIGN,
        owners=[owner],
        prefix="LTO",
        **fields,
    )
    return coupon


def test_an_order_naming_a_single_use_coupon_counts_it_once_and_flags_other_uses(send):
    send(
        identify("c-1", email="one@example.com", email_consent=True),
        identify("c-2", email="two@example.com"),
    )
    owner = Shopper.objects.get(customer_id="c-1")
    coupon = _owned_coupon(owner)
    first = order_completed("c-1", "A-1", coupon=coupon.code.lower())

    send(first)
    send({**first, "messageId": "m-retried"})  # the store's retry of the same order
    send(order_completed("c-2", "B-1", coupon=coupon.code))  # another shopper's order
    send(order_completed("c-1", "A-2", coupon=coupon.code))  # the owner, once more

    coupon.refresh_from_db()
    assert coupon.times_used == 1
    assert list(CouponRedemption.objects.values_list("order__number", "shopper_id")) == [
        ("A-1", owner.pk)
    ]
    problems = dict(Order.objects.values_list("number", "coupon_problem"))
    assert problems["A-1"] == ""
    assert problems["B-1"].startswith("coupon_not_yours")
    assert problems["A-2"].startswith("coupon_used_up")


def test_a_store_validates_and_redeems_a_code_with_its_server_key(
    client, send, server_key, settings
):
    send(identify("c-1", email="one@example.com", email_consent=True))
    owner = Shopper.objects.get(customer_id="c-1")
    coupon = _owned_coupon(owner, min_spend=Decimal("10"))
    browser = WriteKey.objects.create(name="shop pages")

    def call(path: str, body: dict[str, Any], key: WriteKey = server_key) -> Any:
        return client.post(
            f"/v1/coupons/{path}",
            body,
            content_type="application/json",
            headers={"Authorization": basic_auth(key.key)},
        )

    basket = {"code": coupon.code, "userId": "c-1", "subtotal": 40}
    assert call("validate", basket, browser).status_code == 403
    assert call("redeem", {**basket, "orderId": "A-1"}, browser).status_code == 403
    valid = call("validate", basket).json()
    small = call("validate", {**basket, "subtotal": 5}).json()
    someone_else = call("validate", {**basket, "userId": "c-2"}).json()
    redeemed = call("redeem", {**basket, "orderId": "A-1"})
    retried = call("redeem", {**basket, "orderId": "A-1"})
    again = call("redeem", {**basket, "orderId": "A-2"})
    bad = call("redeem", {**basket, "orderId": "A-3", "subtotal": "lots"})
    blank = call("redeem", {**basket, "orderId": "   "})
    # The order the store sends afterwards names the code: linked, not counted again.
    send(order_completed("c-1", "A-1", coupon=coupon.code))

    assert (valid["valid"], valid["discount"], valid["reason"]) == (True, "6.00", "")
    assert (small["valid"], small["reason"]) == (False, "coupon_min_spend")
    assert (someone_else["valid"], someone_else["reason"]) == (False, "coupon_not_yours")
    assert redeemed.status_code == 201
    assert redeemed.json()["times_used"] == 1
    assert (retried.status_code, retried.json()["times_used"]) == (200, 1)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "coupon_used_up")
    assert bad.status_code == 400
    assert (blank.status_code, blank.json()["error"]["detail"]) == (
        400,
        {"orderId": ["This field may not be blank."]},
    )
    coupon.refresh_from_db()
    assert coupon.times_used == 1
    assert list(CouponRedemption.objects.values_list("order_number", "order__number")) == [
        ("A-1", "A-1")
    ]
    assert Order.objects.get(number="A-1").coupon_problem == ""

    settings.PATRON_RATE_LIMITS = {**settings.PATRON_RATE_LIMITS, "coupons": (1, 60)}
    call("validate", basket)
    limited = call("validate", basket)
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) > 0


def test_the_offer_email_prints_the_expiry_as_a_date_and_the_percent_as_15_percent():
    campaign = make_campaign(
        "limited_offer",
        trigger_options={"coupon": {"kind": "percent", "value": "15", "valid_hours": 48}},
        steps=[
            {
                "subject": "{{ coupon.label }} off",
                "body": "<p>{{ coupon.value }}% with {{ coupon.code }} until {{ coupon.valid_until }}</p>",
            }
        ],
    )
    english = make_shopper(locale="en")
    turkish = make_shopper(locale="tr", time_zone="Europe/Istanbul")
    services.broadcast_send(broadcast_id=Broadcast.objects.create(campaign=campaign).pk)

    services.outbox_deliver_batch()

    by_address = {m.to[0]: m for m in mail.outbox}
    # The label follows the shopper's language: Turkish writes the percent sign first.
    assert by_address[english.email].subject == "15% off"
    assert by_address[turkish.email].subject == "%15 off"
    turkish_months = "Ocak Şubat Mart Nisan Mayıs Haziran Temmuz Ağustos Eylül Ekim Kasım Aralık"
    for shopper in (english, turkish):
        coupon = Coupon.objects.get(owner=shopper)
        assert coupon.valid_until is not None
        body = by_address[shopper.email].body
        assert f"15% with {coupon.code} until" in body
        assert "15.00" not in body
        assert coupon.valid_until.isoformat()[:10] not in body  # not the raw ISO string
        local = coupon.valid_until.astimezone(services.shopper_zone(shopper)).date()
        if shopper is turkish:
            month = turkish_months.split()[local.month - 1]
            assert f"until {local.day:02} {month} {local.year}" in body
        else:
            assert f"{local.day}, {local.year}" in body


# --- Price drop and back in stock --------------------------------------------------------------


def _set_product(admin_client: Any, sku: str, **fields: Any) -> None:
    """The merchant changes the product through the staff API; beat's scan detects it."""
    response = admin_client.patch(f"/api/products/{sku}/", fields, content_type="application/json")
    assert response.status_code == 200, response.content
    services.product_changes_detect()


def test_a_price_drop_below_the_campaigns_threshold_announces_nothing(admin_client, send):
    Product.objects.create(sku="MUG", title="Mug", price=Decimal("10.00"), stock=5)
    default = make_campaign("price_drop", name="default threshold")
    steep = make_campaign("price_drop", name="20%", trigger_options={"min_drop_percent": 20})
    by_amount = make_campaign("price_drop", name="2.00", trigger_options={"min_drop_amount": "2"})
    send(
        identify("c-1", email="one@example.com", email_consent=True),
        event("c-1", "Product Viewed", sku="MUG"),
    )
    services.product_changes_detect()

    _set_product(admin_client, "MUG", price="9.99")  # a cent off
    assert Run.objects.count() == 0
    _set_product(admin_client, "MUG", price="8.49")  # 15% (and 1.50) below 9.99

    assert sorted(Run.objects.values_list("campaign__name", flat=True)) == [default.name]
    _set_product(admin_client, "MUG", price="6.00")  # 29% and 2.49 below 8.49
    assert sorted(Run.objects.values_list("campaign__name", flat=True)) == sorted(
        [by_amount.name, steep.name, default.name]
    )


def test_a_restock_tells_a_viewer_once_within_the_period_and_follow_ups_stop_at_zero_stock(
    admin_client, send
):
    Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)
    make_campaign(
        "back_in_stock",
        steps=[
            {"subject": "{{ product.title }} is back"},
            {"subject": "Going fast", "delay": dt.timedelta(days=1)},
        ],
    )
    send(
        identify("c-1", email="one@example.com", email_consent=True),
        event("c-1", "Product Viewed", sku="LAMP"),
    )
    services.product_changes_detect()

    _set_product(admin_client, "LAMP", stock=3)
    services.outbox_deliver_batch()
    _set_product(admin_client, "LAMP", stock=0)  # sold out again before the follow-up
    _set_product(admin_client, "LAMP", stock=4)  # and restocked within the period
    deliver_all_due()

    assert [m.subject for m in mail.outbox] == ["Lamp is back"]
    assert Run.objects.count() == 1
    follow_up = Message.objects.get(step__position=2)
    assert (follow_up.state, follow_up.reason) == (
        Message.State.CANCELLED,
        "sequence ended: end condition of Back in stock",
    )


def test_price_drop_follow_ups_stop_when_the_price_goes_back_up(admin_client, send):
    Product.objects.create(sku="MUG", title="Mug", price=Decimal("10.00"), stock=5)
    make_campaign(
        "price_drop",
        steps=[
            {"subject": "{{ product.title }} now {{ new_price }}"},
            {"subject": "Last chance", "delay": dt.timedelta(days=1)},
        ],
    )
    send(
        identify("c-1", email="one@example.com", email_consent=True),
        event("c-1", "Product Viewed", sku="MUG"),
    )
    services.product_changes_detect()

    _set_product(admin_client, "MUG", price="7.00")
    services.outbox_deliver_batch()
    _set_product(admin_client, "MUG", price="10.00")
    deliver_all_due()

    assert [m.subject for m in mail.outbox] == ["Mug now 7.00"]
    assert Message.objects.get(step__position=2).state == Message.State.CANCELLED


# --- Post-purchase ---------------------------------------------------------------------------


def test_no_review_request_or_reminder_for_an_order_refunded_in_full(send):
    make_campaign(
        "review_request",
        steps=[
            {"subject": "Review", "delay": dt.timedelta(days=7)},
            {"subject": "Reminder", "delay": dt.timedelta(days=3)},
        ],
    )
    send(
        identify("c-1", email="one@example.com", email_consent=True), order_completed("c-1", "R-1")
    )
    kept = order_completed("c-1", "R-2")
    send(kept)

    send(event("c-1", "Order Refunded", order_id="R-1"))
    deliver_all_due()

    assert Order.objects.get(number="R-1").status == Order.Status.REFUNDED
    assert [m.subject for m in mail.outbox] == ["Review", "Reminder"]  # R-2's only
    refunded = Message.objects.filter(run__occurrence_key="order:R-1")
    assert set(refunded.values_list("state", flat=True)) == {Message.State.CANCELLED}


def test_nps_is_asked_once_per_shopper_within_the_throttle_and_not_reminded_after_answering(
    send, client, settings
):
    settings.PATRON_NPS_THROTTLE_DAYS = 30
    make_campaign(
        "nps_survey",
        steps=[
            {"subject": "How likely?", "body": "{% for l in nps_links %}{{ l.url }} {% endfor %}"},
            {"subject": "Reminder", "delay": dt.timedelta(days=3)},
        ],
    )
    send(
        identify("c-1", email="one@example.com", email_consent=True), order_completed("c-1", "N-1")
    )
    send(order_completed("c-1", "N-2"))  # a second order a moment later
    services.outbox_deliver_batch()
    (asked,) = mail.outbox
    link = re.search(r"(https?://\S+/e/nps/\S+?)\?score=9", str(asked.body))
    assert link is not None

    assert client.post(link.group(1), {"score": "9"}).status_code == 200
    deliver_all_due()

    assert [m.subject for m in mail.outbox] == ["How likely?"]
    assert Run.objects.filter(campaign__trigger="nps_survey").count() == 1
    reminder = Message.objects.get(step__position=2)
    assert reminder.state == Message.State.CANCELLED


def test_the_campaign_admin_shows_the_nps_score(admin_client):
    campaign = make_campaign("nps_survey")
    step = campaign.steps.get()
    for score in (10, 9, 9, 8, 7, 3, 0, 10):
        shopper = make_shopper()
        run = Run.objects.create(
            campaign=campaign, shopper=shopper, occurrence_key="x", started_at=timezone.now()
        )
        message = Message.objects.create(
            campaign=campaign,
            step=step,
            run=run,
            shopper=shopper,
            occurrence_key="x",
            due_at=timezone.now(),
        )
        NpsResponse.objects.create(message=message, shopper=shopper, campaign=campaign, score=score)

    page = admin_client.get(f"/admin/engagement/campaign/{campaign.pk}/change/").content.decode()

    # 4 promoters, 2 passives, 2 detractors of 8: (4 - 2) / 8 = 25.
    assert "NPS 25 · 8 answers: 4 promoters, 2 passives, 2 detractors" in page


# --- Welcome ---------------------------------------------------------------------------------


def test_welcome_starts_when_the_email_arrives_after_the_first_identify(send):
    make_campaign("welcome", requires_consent=False, steps=[{"subject": "Welcome"}])

    send(identify("c-1", name="Ann"))
    send(identify("c-1", email="ann@example.com"))
    services.outbox_deliver_batch()

    assert [(m.to, m.subject) for m in mail.outbox] == [(["ann@example.com"], "Welcome")]


def test_consent_given_late_starts_the_welcome_at_step_one(send):
    make_campaign(
        "welcome",
        steps=[{"subject": "Step 1"}, {"subject": "Step 2", "delay": dt.timedelta(hours=1)}],
    )

    send(identify("c-1", email="ann@example.com", email_consent=False))
    services.outbox_deliver_batch()
    send(identify("c-1", email_consent=True))
    deliver_all_due()
    send(identify("c-1", email="ann@example.com", email_consent=True))  # said again: no rerun
    deliver_all_due()

    assert [m.subject for m in mail.outbox] == ["Step 1", "Step 2"]
    assert Run.objects.count() == 1


# --- Notify me -------------------------------------------------------------------------------


def test_a_guests_notify_me_with_an_email_is_sent_and_says_why(client, admin_client):
    Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)
    make_campaign(
        "back_in_stock",
        steps=[
            {"subject": "{{ product.title }} is back"},
            {"subject": "Other lamps you may like", "delay": dt.timedelta(days=2)},
        ],
    )
    browser = WriteKey.objects.create(name="shop pages")
    response = client.post(
        "/api/engagement/notify-requests",
        {"anonymous_id": "guest-1", "sku": "LAMP", "kind": "back_in_stock", "email": "g@ex.com"},
        content_type="application/json",
        headers={"Authorization": basic_auth(browser.key)},
    )
    assert response.status_code == 201
    services.product_changes_detect()

    _set_product(admin_client, "LAMP", stock=2)
    deliver_all_due()

    assert [(m.to, m.subject) for m in mail.outbox] == [(["g@ex.com"], "Lamp is back")]
    first, follow_up = Message.objects.order_by("step__position")
    assert first.state == Message.State.SENT
    assert "asked for it (notify me)" in first.reason
    # The request was consent to that one message, not to the sequence.
    assert (follow_up.state, follow_up.reason) == (Message.State.SKIPPED, "no consent")


# --- Birthday, browse abandonment, win-back ----------------------------------------------------


def test_the_birthday_comes_on_the_shoppers_own_day_in_their_time_zone():
    make_campaign("birthday")
    angeleno = make_shopper(birthday=dt.date(1990, 3, 2), time_zone="America/Los_Angeles")

    # 03:00 UTC on 2 March is still 1 March, 19:00, in Los Angeles.
    assert services.birthday_scan(now=dt.datetime(2027, 3, 2, 3, tzinfo=dt.UTC)) == 0
    assert services.birthday_scan(now=dt.datetime(2027, 3, 2, 9, tzinfo=dt.UTC)) == 1
    # 06:00 UTC on 3 March is 2 March, 22:00, there: still the day, already enrolled.
    assert services.birthday_scan(now=dt.datetime(2027, 3, 3, 6, tzinfo=dt.UTC)) == 0

    assert list(Run.objects.values_list("shopper_id", "occurrence_key")) == [
        (angeleno.pk, "birthday:2027")
    ]


@pytest.mark.parametrize("key", ["id", "productId", "product_id", "sku"])
def test_product_viewed_naming_the_product_by_any_accepted_key_counts_for_browse_abandonment(
    send, key
):
    Product.objects.create(sku="MUG", title="Blue mug", price=Decimal("12.00"))
    make_campaign("browse_abandoned", trigger_options={"views": 2}, steps=[{"subject": "x"}])

    send(
        identify("c-1", email="one@example.com", email_consent=True),
        event("c-1", "Product Viewed", **{key: "MUG"}),
        event("c-1", "Product Viewed", **{key: "MUG"}),
    )

    run = Run.objects.get()
    assert (run.campaign.trigger, run.data["sku"]) == ("browse_abandoned", "MUG")


def test_win_back_reaches_customers_already_lapsed_when_the_campaign_starts():
    make_campaign("win_back", trigger_options={"days": 60}, steps=[{"subject": "We miss you"}])
    long_gone = make_shopper()
    just_lapsed = make_shopper()
    active = make_shopper()
    now = timezone.now()
    for number, shopper, days in (
        ("L-1", long_gone, 400),
        ("J-1", just_lapsed, 61),
        ("A-1", active, 10),
    ):
        Order.objects.create(
            number=number, shopper=shopper, placed_at=now - dt.timedelta(days=days)
        )

    assert services.win_back_scan() == 2
    assert services.win_back_scan() == 0

    assert sorted(Run.objects.values_list("shopper_id", "occurrence_key")) == [
        (long_gone.pk, "lastorder:L-1"),
        (just_lapsed.pk, "lastorder:J-1"),
    ]
