"""Marketers run campaigns without seeing shoppers' personal data (DESIGN.md, "Trust"): every
engagement and chat admin page names a shopper "Shopper #id" and hides addresses and what was
written for them, unless the user has ``commerce.view_shopper_personal_data``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from chat.models import Conversation, CsatRating
from chat.models import Message as ChatMessage
from commerce.models import Product, Shopper
from engagement.models import (
    Message,
    NpsResponse,
    ProductWatch,
    PushSubscription,
    Run,
    Suppression,
    Unsubscribe,
)
from tests.engagement.conftest import make_campaign
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db

EMAIL = "ilze.berzina@pasts.example"
FIRST_NAME = "Ilzīte"
LAST_NAME = "Bērziņa"
PHONE = "+37120001234"
# What must not appear anywhere on a page a marketer sees.
PERSONAL = (EMAIL, FIRST_NAME, LAST_NAME, PHONE, "ilze.berzina")

ADMIN_APPS = ("engagement", "chat")


def _marketer(*extra_permissions: str) -> tuple[Client, Any]:
    """A staff user of the Marketers group (made by the migrations), logged in, who may also
    view every engagement and chat model (so every page of theirs is checked), plus
    ``extra_permissions``."""
    user = get_user_model().objects.create_user("mara", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="Marketers"))
    views = [
        f"{model._meta.app_label}.view_{model._meta.model_name}"
        for model in admin.site._registry
        if model._meta.app_label in ADMIN_APPS
    ]
    user = grant(user, *views, *extra_permissions)
    client = Client()
    client.force_login(user)
    return client, user


@pytest.fixture
def shopper() -> Shopper:
    """One shopper who appears in every engagement and chat table."""
    shopper = Shopper.objects.create(
        customer_id="c-77",
        email=EMAIL,
        first_name=FIRST_NAME,
        last_name=LAST_NAME,
        phone=PHONE,
        email_consent=True,
    )
    campaign = make_campaign(
        "welcome", steps=[{"subject": "Hi {{ first_name }}", "body": "<p>{{ email }}</p>"}]
    )
    step = campaign.steps.get()
    run = Run.objects.create(
        campaign=campaign,
        shopper=shopper,
        occurrence_key="k-1",
        data={"email": EMAIL, "name": FIRST_NAME},
        email_to=EMAIL,
    )
    message = Message.objects.create(
        campaign=campaign,
        step=step,
        run=run,
        shopper=shopper,
        occurrence_key="k-1",
        channel="email",
        state=Message.State.SENT,
        due_at=timezone.now(),
        recipient=EMAIL,
        subject=f"Hi {FIRST_NAME}",
        body=f"<p>Dear {FIRST_NAME} {LAST_NAME}</p>",
    )
    Unsubscribe.objects.create(shopper=shopper, channel="sms", message=message)
    Suppression.objects.create(channel="email", address=EMAIL, reason="bounce")
    Suppression.objects.create(channel="sms", address=PHONE, reason="manual")
    NpsResponse.objects.create(message=message, shopper=shopper, campaign=campaign, score=9)
    product = Product.objects.create(sku="LAMP-1", title="Lamp", price=Decimal("10.00"))
    ProductWatch.objects.create(shopper=shopper, product=product, kind="back_in_stock")
    PushSubscription.objects.create(
        shopper=shopper,
        endpoint="https://push.example/ilze.berzina",
        p256dh="key",
        auth="auth",
    )
    conversation = Conversation.objects.create(shopper=shopper)
    ChatMessage.objects.create(
        conversation=conversation, seq=1, author_kind="shopper", body=f"I am {FIRST_NAME}"
    )
    CsatRating.objects.create(
        conversation=conversation, rating=5, comment=f"Thanks, {FIRST_NAME} here"
    )
    return shopper


def _pages() -> list[str]:
    """Every engagement and chat admin list, and the change page of every row in them."""
    urls = []
    for model in admin.site._registry:
        opts = model._meta
        if opts.app_label not in ADMIN_APPS:
            continue
        base = f"/admin/{opts.app_label}/{opts.model_name}/"
        urls.append(base)
        urls += [
            f"{base}{pk}/change/" for pk in model._default_manager.values_list("pk", flat=True)
        ]
    return urls


def _leaks(client: Client, url: str) -> list[str]:
    content = client.get(url).content.decode()
    return [value for value in PERSONAL if value in content]


def test_no_engagement_or_chat_admin_page_shows_a_marketer_personal_data(shopper):
    client, _ = _marketer()
    pages = _pages()
    assert len(pages) > 25  # every list and its rows are visited

    leaks = {url: found for url in pages if (found := _leaks(client, url))}

    assert leaks == {}
    # The pages do show the shopper, by id.
    messages = client.get("/admin/engagement/message/")
    assert messages.status_code == 200
    assert f"Shopper #{shopper.pk}" in messages.content.decode()
    run = Run.objects.get()
    assert (
        f"Shopper #{shopper.pk}"
        in client.get(f"/admin/engagement/run/{run.pk}/change/").content.decode()
    )


def test_a_marketer_cannot_find_shoppers_by_email_in_the_admin_search(shopper):
    client, _ = _marketer()

    response = client.get("/admin/engagement/message/", {"q": EMAIL})
    suppressions = client.get("/admin/engagement/suppression/", {"q": EMAIL})

    assert response.context["cl"].result_count == 0
    # No search on addresses at all: the query filters nothing (both rows listed, masked).
    assert list(suppressions.context["cl"].search_fields) == []
    assert suppressions.context["cl"].result_count == 2


def test_the_raw_id_label_names_the_shopper_by_id(shopper):
    client, _ = _marketer("engagement.add_unsubscribe")

    response = client.get("/admin/engagement/unsubscribe/add/", {"shopper": shopper.pk})

    assert response.status_code == 200
    content = response.content.decode()
    assert f"Shopper #{shopper.pk}" in content
    assert [value for value in PERSONAL if value in content] == []


def test_with_the_personal_data_permission_the_pages_show_the_shopper(shopper):
    client, _ = _marketer("commerce.view_shopper_personal_data")
    message = Message.objects.get()

    listing = client.get("/admin/engagement/message/").content.decode()
    page = client.get(f"/admin/engagement/message/{message.pk}/change/").content.decode()
    found = client.get("/admin/engagement/message/", {"q": EMAIL})
    suppressions = client.get("/admin/engagement/suppression/").content.decode()

    assert EMAIL in listing
    assert EMAIL in page
    assert f"Dear {FIRST_NAME} {LAST_NAME}" in page
    assert found.context["cl"].result_count == 1
    assert EMAIL in suppressions
    assert PHONE in suppressions


def _preview_url() -> str:
    step = Message.objects.get().step
    return f"/admin/engagement/campaign/{step.campaign_id}/steps/{step.pk}/preview/"


def test_a_marketer_previews_with_the_sample_shopper_not_a_real_one(shopper):
    client, _ = _marketer()

    sample = client.get(_preview_url())
    real = client.get(_preview_url(), {"shopper": shopper.pk})

    assert sample.status_code == 200
    assert sample.context["rendered"].subject == "Hi Sam"
    assert "sample.shopper@example.com" in sample.content.decode()
    assert real.status_code == 403
    leaked = [value for value in PERSONAL if value in real.content.decode()]
    assert leaked == []


def test_with_the_permission_the_preview_renders_for_the_chosen_shopper(shopper):
    client, _ = _marketer("commerce.view_shopper_personal_data")

    response = client.get(_preview_url(), {"shopper": shopper.pk})

    assert response.status_code == 200
    assert response.context["rendered"].subject == f"Hi {FIRST_NAME}"
    assert f"To:</strong> {EMAIL}" in response.content.decode()
