"""The campaign page in the admin shows each step's results and the uplift, as staff see it."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from engagement.models import EngagementSettings
from tests.engagement.test_attribution import _build_the_worked_example

pytestmark = pytest.mark.django_db


def _text(html: str) -> str:
    """The page's text: tags dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def marketer() -> Client:
    """A staff user of the Marketers group (made by the migrations), logged in."""
    user = get_user_model().objects.create_user("mara", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="Marketers"))
    client = Client()
    client.force_login(user)
    return client


def test_the_campaign_page_shows_each_steps_figures_and_the_uplift(marketer):
    campaign = _build_the_worked_example()
    EngagementSettings.objects.create(pk=1, attribution_window_days=5)

    response = marketer.get(f"/admin/engagement/campaign/{campaign.pk}/change/")

    assert response.status_code == 200
    text = _text(response.content.decode())
    # Step, channel, sent, opened, clicked, converted, orders, revenue, unsubscribed (figures
    # of tests/engagement/test_attribution.py's worked example, rates of those sent).
    assert "1. Welcome email 10 7 (70.0%) 1 (10.0%) 2 (20.0%) 3 170.00 1 (10.0%)" in text
    assert "2. Still there? email 2 1 (50.0%) 1 (50.0%) 1 (50.0%) 1 50.00 0 (0.0%)" in text
    assert "targeted 5 of 10 shoppers ordered, control group 2 of 10" in text
    assert "Conversion uplift +30.00 points (95% interval -10.67 to +59.99, Newcombe)" in text
    assert "relative +150.0%" in text
    assert "Revenue per recipient +21.00 (95% interval -6.58 to +48.58, Welch)" in text
    assert "incremental revenue 210.00 (95% interval -65.78 to 485.78)" in text
    assert "Not significant yet:" in text


def test_marketers_set_smart_sending_for_the_store(marketer):
    response = marketer.post(
        "/admin/engagement/engagementsettings/add/",
        {"smart_sending_hours": "8", "attribution_window_days": "5"},
    )

    assert response.status_code == 302
    settings = EngagementSettings.objects.get()
    assert (settings.pk, settings.smart_sending_hours) == (1, 8)
    # One row only: no second "add".
    assert marketer.get("/admin/engagement/engagementsettings/add/").status_code == 403
