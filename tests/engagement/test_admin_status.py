"""The admin changes campaign state only through the services (#10 point 3): the status is
read-only in the form; the buttons and actions call ``campaign_status_set`` and show the
merchant its refusal; runs, broadcasts and unsubscribes go through their services too."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.utils import timezone

from commerce.models import Shopper
from engagement import services
from engagement.models import (
    Broadcast,
    Campaign,
    CampaignStep,
    Message,
    Run,
    Suppression,
    Unsubscribe,
)
from tests.engagement.conftest import make_campaign, make_shopper
from tests.support.admin_forms import change_form_data

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/engagement/campaign/"


def _change_url(campaign: Campaign) -> str:
    return f"/admin/engagement/campaign/{campaign.pk}/change/"


def _status_url(campaign: Campaign, status: str) -> str:
    return f"/admin/engagement/campaign/{campaign.pk}/status/{status}/"


def _said(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _scheduled(campaign: Campaign, *shoppers: Shopper) -> list[Message]:
    """One message per shopper, due in a day (scheduled, not yet sent)."""
    for shopper in shoppers:
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")
    return list(Message.objects.filter(campaign=campaign).order_by("pk"))


def _stepless(status: str = Campaign.Status.DRAFT) -> Campaign:
    return Campaign.objects.create(name="empty", trigger="welcome", status=status)


# --- The status field ----------------------------------------------------------------------


def test_the_change_form_does_not_save_a_posted_status(admin_client):
    campaign = _stepless()
    page = admin_client.get(_change_url(campaign))
    data = change_form_data(page)
    assert "status" not in data

    response = admin_client.post(_change_url(campaign), {**data, "status": "active"})

    assert response.status_code == 302
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT


def test_a_campaign_added_in_the_admin_starts_as_a_draft_whatever_is_posted(admin_client):
    page = admin_client.get("/admin/engagement/campaign/add/")
    data = {
        **change_form_data(page),
        "name": "New",
        "trigger": "welcome",
        "trigger_options": "{}",
        "audience_rules": "[]",
        "status": "active",
    }

    response = admin_client.post("/admin/engagement/campaign/add/", data)

    assert response.status_code == 302
    assert list(Campaign.objects.filter(name="New").values_list("status", flat=True)) == ["draft"]


def test_activating_a_stepless_campaign_shows_the_error_and_changes_nothing(admin_client):
    campaign = _stepless()

    button = admin_client.post(_status_url(campaign, "active"), follow=True)
    action = admin_client.post(
        CHANGELIST, {"action": "activate", "_selected_action": [campaign.pk]}, follow=True
    )

    assert _said(button) == ["empty: a campaign needs at least one step before it can run"]
    assert _said(action) == ["empty: a campaign needs at least one step before it can run"]
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT


def test_the_change_page_offers_the_status_buttons(admin_client):
    campaign = make_campaign(status=Campaign.Status.DRAFT)

    content = admin_client.get(_change_url(campaign)).content.decode()

    assert f'href="{_status_url(campaign, "active")}"' in content
    assert f'href="{_status_url(campaign, "archived")}"' in content


def test_activating_with_a_step_runs_the_campaign(admin_client):
    campaign = make_campaign(status=Campaign.Status.DRAFT)

    response = admin_client.post(_status_url(campaign, "active"), follow=True)

    assert _said(response) == ["welcome campaign: active"]
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ACTIVE


def test_archiving_asks_first_then_cancels_the_scheduled_messages_only(admin_client):
    campaign = make_campaign(steps=[{"delay": dt.timedelta(days=1)}])
    first, second = _scheduled(campaign, make_shopper(), make_shopper())
    Message.objects.filter(pk=second.pk).update(state=Message.State.SENT)

    confirm = admin_client.get(_status_url(campaign, "archived"))

    assert confirm.status_code == 200
    assert confirm.context["scheduled"] == 1
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ACTIVE

    done = admin_client.post(_status_url(campaign, "archived"), follow=True)

    assert _said(done) == ["welcome campaign: archived, 1 scheduled messages cancelled"]
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ARCHIVED
    states = dict(Message.objects.values_list("pk", "state"))
    assert states == {first.pk: Message.State.CANCELLED, second.pk: Message.State.SENT}


def test_the_archive_action_confirms_before_it_cancels(admin_client):
    campaign = make_campaign(steps=[{"delay": dt.timedelta(days=1)}])
    (message,) = _scheduled(campaign, make_shopper())
    selected = {"action": "archive", "_selected_action": [campaign.pk]}

    asked = admin_client.post(CHANGELIST, selected)

    assert asked.status_code == 200
    assert asked.context["rows"] == [(campaign, 1)]
    assert Message.objects.get(pk=message.pk).state == Message.State.SCHEDULED

    admin_client.post(CHANGELIST, {**selected, "confirm": "yes"})

    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ARCHIVED
    assert Message.objects.get(pk=message.pk).state == Message.State.CANCELLED


def test_removing_the_last_step_of_an_active_campaign_is_refused_until_it_is_paused(
    admin_client,
):
    campaign = make_campaign()
    step = campaign.steps.get()
    data = change_form_data(admin_client.get(_change_url(campaign)))
    data["steps-0-DELETE"] = "on"

    refused = admin_client.post(_change_url(campaign), data)

    assert refused.status_code == 200
    errors = refused.context["inline_admin_formsets"][0].formset.non_form_errors()
    assert errors == [
        "a campaign needs at least one step before it can run: pause or archive it before "
        "removing its last step."
    ]
    assert list(CampaignStep.objects.filter(campaign=campaign)) == [step]

    admin_client.post(_status_url(campaign, "paused"))
    data = change_form_data(admin_client.get(_change_url(campaign)))
    data["steps-0-DELETE"] = "on"
    allowed = admin_client.post(_change_url(campaign), data)

    assert allowed.status_code == 302
    assert not CampaignStep.objects.filter(campaign=campaign).exists()


# --- Runs, broadcasts, unsubscribes ----------------------------------------------------------


def test_stopping_runs_in_the_admin_cancels_their_scheduled_messages(admin_client):
    campaign = make_campaign(steps=[{"delay": dt.timedelta(days=1)}])
    (message,) = _scheduled(campaign, make_shopper())
    run = Run.objects.get()
    page = admin_client.get(f"/admin/engagement/run/{run.pk}/change/")
    assert "state" not in change_form_data(page)

    response = admin_client.post(
        "/admin/engagement/run/", {"action": "stop", "_selected_action": [run.pk]}, follow=True
    )

    assert _said(response) == ["stopped 1 runs, cancelled 1 scheduled messages"]
    assert Run.objects.get(pk=run.pk).state == Run.State.STOPPED
    assert Message.objects.get(pk=message.pk).state == Message.State.CANCELLED


def test_a_broadcast_of_a_draft_campaign_is_refused_in_the_add_form(admin_client):
    draft = make_campaign("limited_offer", status=Campaign.Status.DRAFT)

    response = admin_client.post(
        "/admin/engagement/broadcast/add/",
        {"campaign": draft.pk, "send_at_0": "2030-01-01", "send_at_1": "10:00:00"},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["campaign"] == [
        "activate the campaign before broadcasting it"
    ]
    assert not Broadcast.objects.exists()


def test_a_broadcast_added_in_the_admin_for_now_is_sent_at_once(
    admin_client, django_capture_on_commit_callbacks
):
    campaign = make_campaign("limited_offer")
    shopper = make_shopper(first_name="Anete")
    now = timezone.localtime()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/engagement/broadcast/add/",
            {
                "campaign": campaign.pk,
                "send_at_0": f"{now:%Y-%m-%d}",
                "send_at_1": f"{now:%H:%M:%S}",
            },
        )

    assert response.status_code == 302
    broadcast = Broadcast.objects.get()
    assert broadcast.campaign_id == campaign.pk
    assert broadcast.finished_at is not None
    assert broadcast.enrolled == 1
    # Delivered in the same eager run: an offer without a coupon option has no coupon to add.
    assert [(m.to, m.subject) for m in mail.outbox] == [([shopper.email], "Hello Anete")]


def test_an_unsubscribe_added_in_the_admin_drops_consent_and_skips_scheduled_mail(admin_client):
    campaign = make_campaign(steps=[{"delay": dt.timedelta(days=1)}])
    shopper = make_shopper()
    (message,) = _scheduled(campaign, shopper)

    response = admin_client.post(
        "/admin/engagement/unsubscribe/add/", {"shopper": shopper.pk, "channel": "email"}
    )

    assert response.status_code == 302
    assert Unsubscribe.objects.get().source == "admin"
    assert Shopper.objects.get(pk=shopper.pk).email_consent is False
    assert Message.objects.get(pk=message.pk).state == Message.State.SKIPPED


def test_a_suppression_added_in_the_admin_is_stored_as_the_send_time_check_reads_it(
    admin_client,
):
    response = admin_client.post(
        "/admin/engagement/suppression/add/",
        {
            "channel": "email",
            "address": " Bob@Example.COM ",
            "reason": "manual",
            "created_at_0": "2026-01-01",
            "created_at_1": "10:00:00",
        },
    )

    assert response.status_code == 302
    assert list(Suppression.objects.values_list("channel", "address")) == [
        ("email", "bob@example.com")
    ]
