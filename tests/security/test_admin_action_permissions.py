"""Admin actions change state, so they need the model's change permission, not just the view
permission that shows the list they are run from (DESIGN.md, "Trust: who may do what").

Django offers an action without ``permissions`` to everyone who may see the list: a staff user
who may only *read* campaigns could archive them, broadcast them or rotate the store's identity
secret. A refused action changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model

from commerce import selectors as commerce_selectors
from commerce.models import StoreSettings
from engagement import services
from engagement.models import Campaign, Message
from tests.engagement.conftest import make_campaign, make_shopper
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db


# Patron's own apps (third-party admins, such as django-axes', are theirs).
PATRON_APPS = {"core", "commerce", "engagement", "loyalty", "carts", "chat", "recommendations"}


def test_every_admin_action_asks_for_a_permission_beyond_view() -> None:
    unguarded = []
    for model, model_admin in admin.site._registry.items():
        if type(model_admin).__module__.split(".")[0] not in PATRON_APPS | {"storefront"}:
            continue
        for action in model_admin.actions or []:
            function = getattr(model_admin, action) if isinstance(action, str) else action
            allowed = set(getattr(function, "allowed_permissions", ()))
            if not allowed - {"view"}:
                unguarded.append(f"{model._meta.label}.{getattr(function, '__name__', action)}")
    assert unguarded == []


def _viewer(client: Any, *names: str) -> None:
    user = get_user_model().objects.create_user(username="reader", is_staff=True)
    client.force_login(grant(user, *names))


def _run(client: Any, url: str, action: str, *pks: int, **extra: str) -> Any:
    return client.post(url, {"action": action, "_selected_action": list(pks), **extra})


def test_a_staff_user_who_may_only_view_campaigns_cannot_change_them_by_action(client) -> None:
    campaign = make_campaign()
    services.trigger_fire(trigger="welcome", shopper=make_shopper(), occurrence_key="w")
    (message,) = Message.objects.filter(campaign=campaign)
    state = message.state
    _viewer(client, "engagement.view_campaign", "engagement.view_message")

    responses = [
        _run(client, "/admin/engagement/campaign/", "archive", campaign.pk, confirm="yes"),
        _run(client, "/admin/engagement/campaign/", "pause", campaign.pk),
        _run(client, "/admin/engagement/message/", "cancel", message.pk),
    ]

    # The list again, without the action: it is not offered to them.
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ACTIVE
    assert Message.objects.get(pk=message.pk).state == state


def test_a_staff_user_who_may_only_view_store_settings_cannot_rotate_the_secret(client) -> None:
    row = commerce_selectors.store_settings_get()
    secret = row.identity_secret
    _viewer(client, "commerce.view_storesettings")

    response = _run(client, "/admin/commerce/storesettings/", "rotate_identity_secret", row.pk)

    assert response.status_code == 200
    assert StoreSettings.objects.get().identity_secret == secret
