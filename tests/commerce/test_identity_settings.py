"""The store's identity secret: moved from the chat settings keeping its value, rotatable in the
admin, and the one check every browser entry uses."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from commerce import selectors, services
from commerce.models import Shopper, ShopperAlias, StoreSettings
from core.exceptions import PermissionDenied
from tests.support.identity import SECRET, user_hash

BEFORE = [
    ("chat", "0007_message_path_indexes"),
    ("commerce", "0004_store_settings_identity_secret"),
]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_data_migration_keeps_the_chat_identity_secret():
    # Given a shop whose chat settings hold the identity secret its backend signs with,
    old_apps = _migrate(BEFORE)
    old_apps.get_model("chat", "ChatSettings").objects.update_or_create(
        pk=1, defaults={"identity_secret": "the-shops-old-secret"}
    )
    old_apps.get_model("commerce", "StoreSettings").objects.all().delete()

    # when Patron is upgraded,
    executor = MigrationExecutor(connection)
    _migrate(executor.loader.graph.leaf_nodes())

    # then the store keeps that secret, so the hashes the shop sends still verify.
    assert StoreSettings.objects.get().identity_secret == "the-shops-old-secret"
    selectors.identity_secret_invalidate()
    proof = user_hash("c-1", "the-shops-old-secret")
    assert selectors.identity_verified(customer_id="c-1", proof=proof) is True
    selectors.identity_secret_invalidate()


@pytest.mark.django_db
def test_a_new_store_gets_a_random_secret():
    StoreSettings.objects.all().delete()
    selectors.identity_secret_invalidate()

    secret = selectors.identity_secret_get()

    assert len(secret) == 64
    assert int(secret, 16) >= 0
    assert StoreSettings.objects.get().identity_secret == secret


@pytest.mark.django_db
def test_rotating_in_the_admin_invalidates_every_old_hash(admin_client, identity_secret):
    old = user_hash("c-1")
    assert selectors.identity_verified(customer_id="c-1", proof=old) is True

    response = admin_client.post(
        "/admin/commerce/storesettings/",
        {"action": "rotate_identity_secret", "_selected_action": ["1"]},
    )

    assert response.status_code == 302
    new_secret = StoreSettings.objects.get().identity_secret
    assert new_secret != SECRET
    assert len(new_secret) == 64
    assert selectors.identity_verified(customer_id="c-1", proof=old) is False
    assert selectors.identity_verified(customer_id="c-1", proof=user_hash("c-1", new_secret))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "proof", [None, "", 42, "0" * 64, user_hash("c-2"), user_hash("c-1")[:-1], "g" * 64]
)
def test_only_the_exact_hmac_verifies(identity_secret, proof):
    assert selectors.identity_verified(customer_id="c-1", proof=proof) is False
    assert selectors.identity_verified(customer_id="c-1", proof=user_hash("c-1").upper())
    assert selectors.identity_verified(customer_id="", proof=user_hash("")) is False


@pytest.mark.django_db
def test_visitor_resolve_without_proof_never_returns_the_customer(identity_secret):
    ana = Shopper.objects.create(customer_id="c-ana", email="ana@example.com")
    ShopperAlias.objects.create(anonymous_id="anon-ana", shopper=ana)

    found = selectors.visitor_find(anonymous_id="anon-ana", customer_id="c-ana")
    claimed = services.visitor_resolve(anonymous_id="anon-x", customer_id="c-ana", proof="00")
    device = services.visitor_resolve(anonymous_id="anon-ana")
    found_after = selectors.visitor_find(anonymous_id="anon-ana")
    with pytest.raises(PermissionDenied) as refused:
        services.visitor_resolve(customer_id="c-ana", proof="")
    proven = services.visitor_resolve(
        anonymous_id="anon-ana", customer_id="c-ana", proof=user_hash("c-ana")
    )

    assert (claimed.verified, claimed.shopper.customer_id) == (False, None)
    assert claimed.shopper.pk != ana.pk
    assert (device.verified, device.shopper.customer_id) == (False, None)
    assert device.shopper.pk != ana.pk
    assert found is None  # reading never hands out the customer, nor creates anything
    assert found_after is not None
    assert found_after.pk == device.shopper.pk
    assert refused.value.code == "identity_unverified"
    assert (proven.verified, proven.shopper.pk) == (True, ana.pk)
    # The proven login folded the anonymous visit on her device back into her.
    device.shopper.refresh_from_db()
    assert device.shopper.merged_into_id == ana.pk
    assert ShopperAlias.objects.get(anonymous_id="anon-ana").shopper_id == ana.pk
