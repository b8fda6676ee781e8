"""Following ``merged_into``: one selector (``commerce.selectors.shopper_canonical``) for every
caller, with chains followed to their end, cycles resolved to one member, and a depth bound.

Chains and cycles are written with plain UPDATEs: ``services.shopper_merge`` makes chains, and
no service makes a cycle, so a cycle stands for corrupt data that must not hang a request.
"""

from __future__ import annotations

import gzip
import logging
from itertools import pairwise
from pathlib import Path

import pytest

from commerce import importers, selectors
from commerce.models import Order, Shopper, ShopperAlias
from engagement import selectors as engagement_selectors

pytestmark = pytest.mark.django_db


def _chain(*shoppers: Shopper) -> None:
    """Point each shopper's ``merged_into`` at the next one."""
    for source, target in pairwise(shoppers):
        Shopper.objects.filter(pk=source.pk).update(merged_into=target)


def _fresh(shopper: Shopper) -> Shopper:
    return Shopper.objects.get(pk=shopper.pk)


def test_a_chain_of_merges_is_followed_to_its_end():
    first, middle, last = (Shopper.objects.create() for _ in range(3))
    _chain(first, middle, last)

    assert selectors.shopper_canonical(_fresh(first)).pk == last.pk
    assert selectors.shopper_canonical(_fresh(middle)).pk == last.pk
    assert selectors.shopper_canonical(_fresh(last)).pk == last.pk
    links: dict[int, selectors.ShopperLink] = {first.pk: (middle.pk, None)}
    assert selectors.shopper_canonical_ids(links) == {
        first.pk: last.pk,
        middle.pk: last.pk,
        last.pk: last.pk,
    }
    # The rows loaded on the way are handed back, with their customer ids.
    assert links[last.pk] == (None, None)


def test_a_shopper_never_merged_costs_no_query(django_assert_num_queries):
    shopper = Shopper.objects.create()

    with django_assert_num_queries(0):
        assert selectors.shopper_canonical(shopper) is shopper


@pytest.mark.timeout(20)
def test_a_cycle_resolves_every_member_to_the_same_shopper_and_is_logged(caplog):
    a, b, c = (Shopper.objects.create() for _ in range(3))
    _chain(a, b, c, a)
    outside = Shopper.objects.create()
    _chain(outside, b)

    with caplog.at_level(logging.ERROR, logger="commerce.selectors"):
        survivors = {selectors.shopper_canonical(_fresh(s)).pk for s in (a, b, c, outside)}
        batch = selectors.shopper_canonical_ids(
            {s.pk: (s.merged_into_id, None) for s in map(_fresh, (c, outside))}
        )

    assert survivors == {a.pk}  # the lowest id of the cycle, whichever member one starts from
    assert set(batch.values()) == {a.pk}
    assert "merge cycle" in caplog.text


@pytest.mark.timeout(20)
def test_a_chain_longer_than_the_bound_stops_there(caplog):
    shoppers = [Shopper.objects.create() for _ in range(selectors.SHOPPER_MERGE_DEPTH_MAX + 5)]
    _chain(*shoppers)

    with caplog.at_level(logging.ERROR, logger="commerce.selectors"):
        reached = selectors.shopper_canonical(_fresh(shoppers[0]))

    assert reached.pk == shoppers[selectors.SHOPPER_MERGE_DEPTH_MAX].pk
    assert "merge chain longer than" in caplog.text


@pytest.mark.timeout(20)
def test_server_side_lookups_follow_the_chain_and_survive_a_cycle():
    known = Shopper.objects.create(customer_id="c-1")
    middle, last = Shopper.objects.create(), Shopper.objects.create(customer_id="c-2")
    _chain(known, middle, last)
    ShopperAlias.objects.create(anonymous_id="anon-1", shopper=middle)

    assert engagement_selectors.shopper_find(customer_id="c-1") == last
    assert engagement_selectors.shopper_find(anonymous_id="anon-1") == last

    _chain(last, known)  # corrupt: c-2 -> c-1 -> middle -> c-2
    assert engagement_selectors.shopper_find(customer_id="c-2") == known
    assert engagement_selectors.shopper_find(anonymous_id="anon-1") == known


HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
ROW = "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"


def test_an_import_puts_orders_on_the_end_of_a_merge_chain(tmp_path: Path):
    path = tmp_path / "online_retail.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(HEADER + ROW)
    imported = Shopper.objects.create(customer_id="17850")
    middle, survivor = Shopper.objects.create(), Shopper.objects.create(customer_id="web-17850")
    _chain(imported, middle, survivor)

    importers.online_retail_import(path=path)

    assert list(Order.objects.values_list("number", "shopper_id")) == [("UCI-536365", survivor.pk)]
