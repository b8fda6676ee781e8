"""The admin: campaigns with registered triggers, step preview with a real shopper, test sends."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import resolve

from engagement import tokens
from engagement.models import Broadcast, Campaign, CampaignStep, Message
from tests.engagement.conftest import make_campaign, make_shopper

pytestmark = pytest.mark.django_db


def _preview_url(step: CampaignStep) -> str:
    return f"/admin/engagement/campaign/{step.campaign_id}/steps/{step.pk}/preview/"


def test_campaign_form_offers_the_registered_triggers(admin_client):
    response = admin_client.get("/admin/engagement/campaign/add/")
    assert response.status_code == 200
    content = response.content.decode()
    assert 'value="browse_abandoned"' in content
    assert 'value="limited_offer"' in content


def test_step_preview_renders_for_a_chosen_shopper_without_tracking(admin_client):
    campaign = make_campaign(
        steps=[{"subject": "Hi {{ first_name }}", "body": '<a href="https://shop.example/x">x</a>'}]
    )
    shopper = make_shopper(first_name="Anete")
    step = campaign.steps.get()

    response = admin_client.get(_preview_url(step), {"shopper": shopper.pk})

    assert response.status_code == 200
    assert response.context["rendered"].subject == "Hi Anete"
    assert "https://shop.example/x" in response.context["rendered"].html
    assert "/e/o/" not in response.context["rendered"].html
    assert Message.objects.count() == 0


def test_test_send_goes_to_the_given_address_outside_the_outbox(admin_client):
    campaign = make_campaign(steps=[{"subject": "Hi {{ first_name }}"}])
    shopper = make_shopper(first_name="Anete")
    step = campaign.steps.get()

    response = admin_client.post(
        _preview_url(step), {"shopper": shopper.pk, "address": "staff@shop.example"}
    )

    assert response.status_code == 200
    assert [(m.to, m.subject) for m in mail.outbox] == [(["staff@shop.example"], "[TEST] Hi Anete")]
    assert Message.objects.count() == 0


def test_template_errors_show_in_the_preview_not_as_a_500(admin_client):
    campaign = make_campaign(steps=[{"subject": "{% if %}"}])
    shopper = make_shopper()
    response = admin_client.get(_preview_url(campaign.steps.get()), {"shopper": shopper.pk})
    assert response.status_code == 200
    assert "TemplateSyntaxError" in response.context["error"]


def test_broadcast_action_schedules_a_broadcast(admin_client):
    campaign = make_campaign("limited_offer")
    draft = make_campaign("limited_offer", name="draft", status=Campaign.Status.DRAFT)
    make_shopper()

    admin_client.post(
        "/admin/engagement/campaign/",
        {"action": "broadcast_now", "_selected_action": [campaign.pk, draft.pk]},
    )

    assert list(Broadcast.objects.values_list("campaign_id", flat=True)) == [campaign.pk]


def test_message_links_resolve_to_the_engagement_views():
    for url, name in [
        (tokens.open_url(1), "open"),
        (tokens.click_url(1, "https://x.example"), "click"),
        (tokens.unsubscribe_url(1, 2, "email"), "unsubscribe"),
        (tokens.preferences_url(2), "preferences"),
        (tokens.nps_url(1, 7).split("?")[0], "nps"),
    ]:
        match = resolve("/" + url.split("/", 3)[3])
        assert (match.namespace, match.url_name) == ("engagement", name)


HOSTILE_BODY = (
    '"><script>document.title="pwned"</script>'
    "<img src=x onerror=\"document.title='pwned'\"><p>Hi {{ first_name }}</p>"
)


@pytest.mark.parametrize("transactional", [True, False])
def test_step_preview_keeps_the_step_body_inside_a_sandboxed_srcdoc(admin_client, transactional):
    """A marketer's step body is markup for the recipient's mail client, never for the admin's
    page: in the preview it is escaped into the iframe's srcdoc (even when rendering returned
    it marked safe, as for transactional campaigns), and the iframe has an empty sandbox."""
    from html.parser import HTMLParser

    campaign = make_campaign(
        transactional=transactional,
        requires_consent=not transactional,
        steps=[{"subject": '</p><script>document.title="s"</script>', "body": HOSTILE_BODY}],
    )
    shopper = make_shopper(first_name="Anete")

    response = admin_client.get(_preview_url(campaign.steps.get()), {"shopper": shopper.pk})

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.iframes: list[dict[str, str | None]] = []
            self.scripts: list[str] = []
            self.handlers: list[tuple[str, str]] = []
            self._in_script = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "iframe":
                self.iframes.append(dict(attrs))
            if tag == "script":
                self._in_script = True
            self.handlers += [(tag, k) for k, _ in attrs if k.startswith("on")]

        def handle_endtag(self, tag: str) -> None:
            self._in_script = False

        def handle_data(self, data: str) -> None:
            if self._in_script:
                self.scripts.append(data)

    page = Page()
    page.feed(response.content.decode())
    assert response.status_code == 200
    # The admin page itself runs none of the step's script or handlers.
    assert not [s for s in page.scripts if "pwned" in s or 'title="s"' in s]
    assert page.handlers == []
    # The whole body sits, unescaped again by the parser, in the one sandboxed srcdoc.
    assert len(page.iframes) == 1
    assert page.iframes[0]["sandbox"] == ""
    srcdoc = page.iframes[0]["srcdoc"] or ""
    assert srcdoc.startswith('"><script>document.title="pwned"</script>')
    assert "<p>Hi Anete</p>" in srcdoc
