"""Identity resolution for a batch of calls: shoppers and aliases with a constant number of queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection

from commerce import selectors, services
from commerce.models import Shopper, ShopperAlias
from commerce.tracking.decoding import Call

# --- Identity resolution -----------------------------------------------------------------


def _rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


_SHOPPER = Shopper._meta.db_table
_ALIAS = ShopperAlias._meta.db_table


class _Identities:
    """Who is behind each user id and anonymous id of one batch (shopper ids)."""

    def __init__(self, user_ids: set[str], anonymous_ids: set[str]) -> None:
        shoppers: dict[int, selectors.ShopperLink] = {}
        # One index probe per anonymous id (LATERAL ... LIMIT 1 keeps the planner from
        # turning this into sequential scans of both tables joined by hash, which it prefers
        # for a 500-element ``= ANY`` and which grows with the shop: 4.7 ms against 2.0 ms for
        # 500 ids among 20,000 shoppers, the first cost of ingestion inside PostgreSQL).
        alias_rows = (
            _rows(
                "SELECT x.anonymous_id, s.id, s.merged_into_id, s.customer_id "  # noqa: S608  (table names are module constants; values are parameters)
                "FROM unnest(%s::text[]) AS x(anonymous_id) CROSS JOIN LATERAL ("
                f"SELECT a.shopper_id FROM {_ALIAS} a "
                "WHERE a.anonymous_id = x.anonymous_id LIMIT 1) AS a "
                f"JOIN {_SHOPPER} s ON s.id = a.shopper_id",
                [list(anonymous_ids)],
            )
            if anonymous_ids
            else []
        )
        customer_rows = (
            _rows(
                f"SELECT customer_id, id, merged_into_id FROM {_SHOPPER} "  # noqa: S608  (table names are module constants; values are parameters)
                "WHERE customer_id = ANY(%s)",
                [list(user_ids)],
            )
            if user_ids
            else []
        )
        for _, pk, merged_into, customer_id in alias_rows:
            shoppers[pk] = (merged_into, customer_id)
        for customer_id, pk, merged_into in customer_rows:
            shoppers[pk] = (merged_into, customer_id)
        survivors = selectors.shopper_canonical_ids(shoppers) if shoppers else {}
        self.by_anonymous: dict[str, int] = {row[0]: survivors[row[1]] for row in alias_rows}
        self.by_user: dict[str, int] = {row[0]: survivors[row[1]] for row in customer_rows}
        # The shopper each alias row points at (before following merges), and which shoppers
        # are known customers: an untrusted (browser) call must not land on those.
        self.alias_rows: dict[str, int] = {row[0]: row[1] for row in alias_rows}
        self.customers: set[int] = {pk for pk, (_, customer_id) in shoppers.items() if customer_id}

    def replace(self, old: int, new: int) -> None:
        for mapping in (self.by_user, self.by_anonymous):
            for key, value in mapping.items():
                if value == old:
                    mapping[key] = new


def _shoppers_insert(customer_ids: Sequence[str | None]) -> list[tuple[int, str | None]]:
    """INSERT blank shoppers (one per customer id, None for anonymous) in one statement.

    Returns (id, customer_id) of the rows inserted; a customer id that another request
    inserted first is skipped. Column defaults come from the model, so a new field with a
    default needs no change here.
    """
    blank = Shopper()
    columns, values = [], []
    for model_field in Shopper._meta.concrete_fields:
        if model_field.primary_key or model_field.name == "customer_id":
            continue
        column = model_field.column
        assert column is not None  # concrete fields always have a column
        columns.append(connection.ops.quote_name(column))
        values.append(
            model_field.get_db_prep_save(model_field.pre_save(blank, add=True), connection)
        )
    placeholders = ", ".join(["%s"] * len(values))
    return [
        (row[0], row[1])
        for row in _rows(
            f"INSERT INTO {_SHOPPER} (customer_id, {', '.join(columns)}) "  # noqa: S608  (table names are module constants; values are parameters)
            f"SELECT c, {placeholders} FROM unnest(%s::text[]) WITH ORDINALITY AS x(c, n) "
            "ORDER BY n ON CONFLICT DO NOTHING RETURNING id, customer_id",
            [*values, list(customer_ids)],
        )
    ]


def _customers_create(customer_ids: Sequence[str]) -> dict[str, int]:
    """Shoppers for new customer ids (sorted, so concurrent batches lock in one order)."""
    created = {c: pk for pk, c in _shoppers_insert(sorted(customer_ids)) if c is not None}
    missing = [c for c in customer_ids if c not in created]
    if missing:  # inserted by a concurrent request, which has committed by now
        shoppers: dict[int, selectors.ShopperLink] = {
            pk: (merged_into, c)
            for c, pk, merged_into in _rows(
                f"SELECT customer_id, id, merged_into_id FROM {_SHOPPER} "  # noqa: S608  (table names are module constants; values are parameters)
                "WHERE customer_id = ANY(%s)",
                [missing],
            )
        }
        survivors = selectors.shopper_canonical_ids(dict(shoppers))
        created.update({c: survivors[pk] for pk, (_, c) in shoppers.items() if c is not None})
    return created


def _aliases_create(links: Mapping[str, int | None]) -> dict[str, int]:
    """Aliases for new anonymous ids: to the given shopper, or to a new anonymous shopper (None).

    Returns anonymous id -> the shopper that owns it now; when another request created the
    same alias first, its owner wins and the shopper made here is deleted again.
    """
    needing_shopper = sorted(a for a, owner in links.items() if owner is None)
    new_ids = [pk for pk, _ in _shoppers_insert([None] * len(needing_shopper))]
    owners: dict[str, int] = {a: owner for a, owner in links.items() if owner is not None}
    owners.update(zip(needing_shopper, new_ids, strict=True))
    ordered = sorted(owners)
    inserted = {
        row[0]
        for row in _rows(
            f"INSERT INTO {_ALIAS} (anonymous_id, shopper_id, created_at) "  # noqa: S608  (table names are module constants; values are parameters)
            "SELECT a, s, now() FROM unnest(%s::text[], %s::bigint[]) AS x(a, s) "
            "ON CONFLICT (anonymous_id) DO NOTHING RETURNING anonymous_id",
            [ordered, [owners[a] for a in ordered]],
        )
    }
    lost = [a for a in ordered if a not in inserted]
    if not lost:
        return owners
    # Another request created these aliases first: its owners win.
    fresh = set(needing_shopper)
    orphans = [owners[a] for a in lost if a in fresh]
    if orphans:
        with connection.cursor() as cursor:
            # Created in this transaction and referenced by nothing: no cascade to collect.
            cursor.execute(f"DELETE FROM {_SHOPPER} WHERE id = ANY(%s)", [orphans])  # noqa: S608  (table names are module constants; values are parameters)
    rows = _rows(
        f"SELECT a.anonymous_id, s.id, s.merged_into_id, s.customer_id FROM {_ALIAS} a "  # noqa: S608  (table names are module constants; values are parameters)
        f"JOIN {_SHOPPER} s ON s.id = a.shopper_id WHERE a.anonymous_id = ANY(%s)",
        [lost],
    )
    shoppers: dict[int, selectors.ShopperLink] = {r[1]: (r[2], r[3]) for r in rows}
    survivors = selectors.shopper_canonical_ids(shoppers)
    owners.update({r[0]: survivors[r[1]] for r in rows})
    return owners


def _aliases_detach(identities: _Identities, anonymous_ids: Sequence[str]) -> None:
    """Move these anonymous ids off the known customers they belong to, to new anonymous
    shoppers (one each, in one INSERT and one UPDATE), as ``services.shopper_anonymous_resolve``
    does for one id: an anonymous id alone never carries a customer's identity.

    The UPDATE only moves an alias still pointing where it pointed when read; an alias another
    request changed meanwhile is read again and, if it still names a known customer, moved
    unconditionally.
    """
    ordered = sorted(anonymous_ids)
    fresh = [pk for pk, _ in _shoppers_insert([None] * len(ordered))]
    target = dict(zip(ordered, fresh, strict=True))
    moved = {
        row[0]
        for row in _rows(
            f"UPDATE {_ALIAS} AS a SET shopper_id = x.s "  # noqa: S608 (constant names)
            "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS x(a, s, old) "
            "WHERE a.anonymous_id = x.a AND a.shopper_id = x.old RETURNING a.anonymous_id",
            [ordered, fresh, [identities.alias_rows[a] for a in ordered]],
        )
    }
    lost = [a for a in ordered if a not in moved]
    if lost:
        rows = _rows(
            f"SELECT a.anonymous_id, s.id, s.merged_into_id, s.customer_id FROM {_ALIAS} a "  # noqa: S608
            f"JOIN {_SHOPPER} s ON s.id = a.shopper_id WHERE a.anonymous_id = ANY(%s)",
            [lost],
        )
        shoppers: dict[int, selectors.ShopperLink] = {r[1]: (r[2], r[3]) for r in rows}
        survivors = selectors.shopper_canonical_ids(shoppers)
        force = []
        for anonymous_id, pk, _, _ in rows:
            survivor = survivors[pk]
            if shoppers[survivor][1]:
                force.append(anonymous_id)
            else:  # another request detached it first: its anonymous shopper wins
                target[anonymous_id] = survivor
        if force:
            _rows(
                f"UPDATE {_ALIAS} AS a SET shopper_id = x.s "  # noqa: S608
                "FROM unnest(%s::text[], %s::bigint[]) AS x(a, s) "
                "WHERE a.anonymous_id = x.a RETURNING a.anonymous_id",
                [force, [target[a] for a in force]],
            )
        unused = [fresh[i] for i, a in enumerate(ordered) if target[a] != fresh[i]]
        if unused:
            with connection.cursor() as cursor:
                # Created in this transaction and referenced by nothing.
                cursor.execute(f"DELETE FROM {_SHOPPER} WHERE id = ANY(%s)", [unused])  # noqa: S608
    identities.by_anonymous.update(target)


def _shoppers_assign(calls: Sequence[Call], *, trusted: bool = True) -> None:
    """Set ``shopper_id`` on every call, creating and merging shoppers as the calls say.

    A constant number of queries per batch when every identity is known: one for the aliases,
    one for the customers. New identities are created in bulk. When a call ties an anonymous
    id owned by another shopper to a user id (a login, an alias call), the per-shopper merge of
    ``services.shopper_resolve`` runs for that pair.

    ``trusted`` is False for browser write keys, whose calls ``calls_verify`` has already
    stripped of unverified user ids. Then an anonymous id that belongs to a known customer and
    is not tied to that (verified) customer in this request is moved to a new anonymous
    shopper (``_aliases_detach``: the next person on the browser after a logout), and an alias
    call never merges two known customers.
    """
    user_ids = {c.user_id for c in calls if c.user_id}
    anonymous_ids = {c.anonymous_id for c in calls if c.anonymous_id}
    previous_ids = {c.previous_id for c in calls if c.previous_id}
    identities = _Identities(user_ids | previous_ids, anonymous_ids | previous_ids)

    if not trusted:
        if previous_ids & set(identities.by_user):
            # alias(previousId=<another customer>) from a browser: never merge two customers.
            for call in calls:
                if call.previous_id in identities.by_user:
                    call.previous_id = ""
        vouched = {c.anonymous_id for c in calls if c.user_id and c.anonymous_id}
        vouched |= {c.previous_id for c in calls if c.previous_id}
        known = sorted(
            a
            for a, owner in identities.by_anonymous.items()
            if owner in identities.customers and a not in vouched and a in anonymous_ids
        )
        if known:
            _aliases_detach(identities, known)

    missing_users = [u for u in user_ids if u not in identities.by_user]
    if missing_users:
        identities.by_user.update(_customers_create(missing_users))

    # A new anonymous id seen with a user id belongs to that user's shopper from the start.
    pairs: list[tuple[str, str, bool]] = []  # (user id, anonymous id, from an alias call)
    for call in calls:
        if call.user_id and call.anonymous_id:
            pairs.append((call.user_id, call.anonymous_id, False))
        if call.previous_id:
            pairs.append((call.user_id, call.previous_id, True))
    new_links: dict[str, int | None] = {}
    for user_id, anonymous_id, from_alias in pairs:
        if (
            anonymous_id not in identities.by_anonymous
            and anonymous_id not in new_links
            and not (from_alias and anonymous_id in identities.by_user)
        ):
            new_links[anonymous_id] = identities.by_user[user_id]
    for anonymous_id in anonymous_ids:
        if anonymous_id not in identities.by_anonymous and anonymous_id not in new_links:
            new_links[anonymous_id] = None
    if new_links:
        identities.by_anonymous.update(_aliases_create(new_links))

    for user_id, anonymous_id, from_alias in pairs:
        target = identities.by_user[user_id]
        if (
            from_alias
            and anonymous_id in identities.by_user
            and anonymous_id not in identities.by_anonymous
        ):
            # alias(previousId=<an earlier user id>, userId=<the new one>): one person.
            source = identities.by_user[anonymous_id]
            if source != target:
                merged = services.shopper_merge(
                    source=Shopper.objects.get(pk=source), target=Shopper.objects.get(pk=target)
                )
                identities.replace(source, merged.pk)
            continue
        owner = identities.by_anonymous[anonymous_id]
        if owner == target:
            continue
        # Merges an anonymous owner into the user's shopper; moves a known customer's device.
        shopper = services.shopper_resolve(customer_id=user_id, anonymous_id=anonymous_id)
        if Shopper.objects.filter(pk=owner, merged_into__isnull=False).exists():
            identities.replace(owner, shopper.pk)
        identities.by_anonymous[anonymous_id] = shopper.pk
        identities.by_user[user_id] = shopper.pk

    for call in calls:
        call.shopper_id = (
            identities.by_user[call.user_id]
            if call.user_id
            else identities.by_anonymous[call.anonymous_id]
        )
