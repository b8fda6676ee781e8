"""Concurrent redemptions of one coupon through the coupon API, against two real server
processes: a limit holds however the calls interleave (DESIGN.md, fault tests: concurrent
redemptions).

The race is made certain, not hoped for: the test holds the coupon's row lock while both calls
arrive, waits until PostgreSQL shows both servers waiting on a lock (each has passed whatever it
read before), then lets them go.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.db import connection, transaction

from commerce.models import Coupon, CouponRedemption, Shopper, WriteKey
from tests.support.processes import asgi_server

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def servers(django_db_setup: Any, django_db_blocker: Any) -> Iterator[tuple[str, str]]:
    """Two server processes, so the two calls run in two database sessions at once."""
    with contextlib.ExitStack() as stack:
        yield (stack.enter_context(asgi_server()), stack.enter_context(asgi_server()))


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        (count,) = cursor.fetchone()
    return int(count)


def _redeem_together(
    servers: tuple[str, str], coupon: Coupon, key: str, orders: tuple[str, str]
) -> list[httpx.Response]:
    """Server 1 redeems ``coupon`` for shopper c-1 and order ``orders[0]``, server 2 for
    ``orders[1]``, while the test holds the coupon's row; released once both calls wait on a
    lock in PostgreSQL (30 s at most)."""

    def redeem(server: str, order: str) -> httpx.Response:
        body = {"code": coupon.code, "userId": "c-1", "orderId": order, "subtotal": "20.00"}
        return httpx.post(f"{server}/v1/coupons/redeem", json=body, auth=(key, ""), timeout=60)

    with ThreadPoolExecutor(max_workers=2) as pool:
        with transaction.atomic():
            Coupon.objects.select_for_update().get(pk=coupon.pk)
            calls = [
                pool.submit(redeem, server, order)
                for server, order in zip(servers, orders, strict=True)
            ]
            deadline = time.monotonic() + 30
            while _waiting_on_locks() < 2:
                assert not any(c.done() for c in calls), [
                    c.result().text for c in calls if c.done()
                ]
                assert time.monotonic() < deadline, "the calls never waited on the coupon"
                time.sleep(0.05)
        return [call.result() for call in calls]


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"usage_limit": 1}, id="single-use"),
        pytest.param({"usage_limit": None, "usage_limit_per_shopper": 1}, id="once-per-shopper"),
    ],
)
def test_two_concurrent_redemptions_of_a_one_use_coupon_one_wins(servers, limits):
    key = WriteKey.objects.create(name="store server", server_side=True).key
    shopper = Shopper.objects.create(customer_id="c-1", email="c1@example.com")
    coupon = Coupon.objects.create(code="ONCE10", kind="percent", value=Decimal(10), **limits)

    responses = _redeem_together(servers, coupon, key, orders=("A-1", "A-2"))

    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    (refused,) = [r for r in responses if r.status_code == 409]
    assert refused.json()["error"]["code"] in {"coupon_used_up", "coupon_used_by_you"}
    coupon.refresh_from_db()
    assert coupon.times_used == 1
    assert CouponRedemption.objects.filter(coupon=coupon, shopper=shopper).count() == 1


@pytest.mark.parametrize(
    "usage_limit", [pytest.param(None, id="unlimited"), pytest.param(1, id="single-use")]
)
def test_two_concurrent_redemptions_for_one_order_count_once_and_say_so(servers, usage_limit):
    key = WriteKey.objects.create(name="store server", server_side=True).key
    Shopper.objects.create(customer_id="c-1", email="c1@example.com")
    coupon = Coupon.objects.create(
        code="ORDER10", kind="percent", value=Decimal(10), usage_limit=usage_limit
    )

    responses = _redeem_together(servers, coupon, key, orders=("A-9", "A-9"))

    # One call counted the use (201); the other found it done (200, the same redemption).
    assert sorted(r.status_code for r in responses) == [200, 201], [r.text for r in responses]
    assert [r.json() for r in responses] == [responses[0].json()] * 2
    assert (responses[0].json()["amount"], responses[0].json()["times_used"]) == ("2.00", 1)
    coupon.refresh_from_db()
    assert coupon.times_used == 1
    assert CouponRedemption.objects.filter(coupon=coupon, order_number="A-9").count() == 1
