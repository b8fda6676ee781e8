"""Patron's own words in campaign emails and on the pages their links open speak the shopper's
language (their ``locale``), Turkish and Latvian included (#11 point 3)."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from engagement import services, tokens
from tests.engagement.conftest import html_of, make_campaign, make_shopper

pytestmark = pytest.mark.django_db


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_a_marketing_emails_footer_is_in_the_shoppers_language() -> None:
    shopper = make_shopper(locale="lv-LV")
    make_campaign(steps=[{"subject": "Jaunumi", "body": "<p>Sveiki!</p>", "body_text": "Sveiki!"}])
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

    services.outbox_deliver_batch()

    assert len(mail.outbox) == 1
    html = html_of(mail.outbox[0])
    assert ">E-pasta iestatījumi</a> · " in html
    assert ">Atteikties</a></p>" in html
    assert "\nAtteikties: http" in mail.outbox[0].body


def test_the_preference_centre_and_unsubscribe_pages_speak_the_shoppers_language() -> None:
    shopper = make_shopper(locale="tr")
    browser = Client(headers={"accept-language": "en"})

    preferences = browser.get(_path(tokens.preferences_url(shopper.pk))).content.decode()

    assert '<html lang="tr">' in preferences
    assert "Mesaj tercihleriniz" in preferences
    assert "Size nasıl ulaşabiliriz" in preferences
    assert "E-posta" in preferences  # the email channel's label
    assert "1 hafta" in preferences


def test_a_shopper_without_a_shipped_locale_reads_the_browsers_language() -> None:
    shopper = make_shopper(locale="de-DE")
    browser = Client(headers={"accept-language": "lv"})

    preferences = browser.get(_path(tokens.preferences_url(shopper.pk))).content.decode()

    assert '<html lang="lv">' in preferences
    assert "Jūsu ziņu iestatījumi" in preferences
