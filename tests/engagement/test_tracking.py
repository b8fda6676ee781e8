"""Opens, clicks, unsubscribes, the preference centre and NPS answers, through their URLs."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from commerce.models import Shopper
from engagement import selectors, services, tokens
from engagement.models import Message, NpsResponse, Preference, Topic, Unsubscribe
from tests.engagement.conftest import html_of, make_campaign, make_shopper, search

pytestmark = pytest.mark.django_db

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


@pytest.fixture
def client() -> Client:
    """A shopper's browser (scanners and bare HTTP clients record nothing: see the tests below)."""
    return Client(headers={"User-Agent": BROWSER})


def _sent_email(body: str = '<p><a href="https://shop.example/sale?a=1&amp;b=2">Sale</a></p>'):
    shopper = make_shopper()
    make_campaign(
        steps=[{"subject": "Hi", "body": body}, {"subject": "Again", "delay": dt.timedelta(days=1)}]
    )
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    services.outbox_deliver_batch()
    message = Message.objects.get(state="sent")
    # Handed over a minute ago: past the window in which gateways scan links on delivery.
    minute_ago = timezone.now() - dt.timedelta(minutes=1)
    Message.objects.filter(pk=message.pk).update(handed_at=minute_ago, sent_at=minute_ago)
    return shopper, message, mail.outbox[-1]


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_open_pixel_records_once(client):
    _, message, email = _sent_email()
    pixel = search(r'src="([^"]+/e/o/[^"]+)"', html_of(email))

    first = client.get(_path(pixel))
    message.refresh_from_db()
    opened = message.opened_at
    second = client.get(_path(pixel))
    message.refresh_from_db()

    assert first.status_code == second.status_code == 200
    assert first["Content-Type"] == "image/gif"
    assert opened is not None
    assert message.opened_at == opened


def test_forged_open_and_click_tokens_are_rejected_and_record_nothing(client):
    _, message, _ = _sent_email()
    forged_open = tokens.make("open", message.pk)[:-3] + "abc"
    other_purpose = tokens.make("unsubscribe", message.pk)
    forged_click = tokens.make("click", [message.pk, "https://evil.example"])[:-2] + "xx"

    assert client.get(f"/e/o/{forged_open}.gif").status_code == 404
    assert client.get(f"/e/o/{other_purpose}.gif").status_code == 404
    response = client.get(f"/e/c/{forged_click}")

    assert response.status_code == 404
    assert "Location" not in response
    message.refresh_from_db()
    assert message.opened_at is None
    assert message.clicked_at is None


def test_click_redirects_and_records_the_first_click_and_an_open(client):
    _, message, email = _sent_email()
    link = search(r'href="([^"]+/e/c/[^"]+)"', html_of(email))

    response = client.get(_path(link))
    message.refresh_from_db()
    clicked = message.clicked_at
    client.get(_path(link))
    message.refresh_from_db()

    assert response.status_code == 302
    assert response["Location"] == "https://shop.example/sale?a=1&b=2"
    assert clicked is not None
    assert message.clicked_at == clicked
    assert message.opened_at is not None
    assert message.clicked_url == "https://shop.example/sale?a=1&b=2"


def test_one_click_unsubscribe_post_stops_the_next_step(client):
    shopper, message, email = _sent_email()
    url = email.extra_headers["List-Unsubscribe"].strip("<>")

    response = client.post(
        _path(url),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 200
    shopper.refresh_from_db()
    assert shopper.email_consent is False
    unsubscribe = Unsubscribe.objects.get(shopper=shopper)
    assert (unsubscribe.channel, unsubscribe.source, unsubscribe.message_id) == (
        "email",
        "one-click",
        message.pk,
    )
    second = Message.objects.get(step__position=2)
    assert (second.state, second.reason) == ("skipped", "unsubscribed")
    Message.objects.filter(pk=second.pk).update(state="scheduled", due_at=timezone.now())
    services.outbox_deliver_batch()
    second.refresh_from_db()
    assert (second.state, second.reason) == ("skipped", "unsubscribed")
    assert len(mail.outbox) == 1


def test_unsubscribe_link_shows_a_confirmation_first(client):
    shopper, _, email = _sent_email()
    url = _path(email.extra_headers["List-Unsubscribe"].strip("<>"))

    page = client.get(url)
    assert page.status_code == 200
    assert Unsubscribe.objects.count() == 0
    done = client.post(url)

    assert done.status_code == 200
    assert b"You are unsubscribed" in done.content
    assert Unsubscribe.objects.filter(shopper=shopper, source="link").count() == 1
    assert client.get("/e/unsubscribe/forged").status_code == 404


def test_preference_centre_sets_channels_topics_and_pause(client):
    surveys = Topic.objects.create(key="surveys", name="Surveys")
    offers = Topic.objects.create(key="offers", name="Offers")
    shopper = make_shopper(sms_consent=False)
    url = _path(tokens.preferences_url(shopper.pk))

    page = client.get(url)
    assert page.status_code == 200
    assert b"Surveys" in page.content
    response = client.post(
        url, {"channel_email": "on", "channel_sms": "on", "topic_offers": "on", "pause_days": "30"}
    )

    assert response.status_code == 200
    shopper.refresh_from_db()
    assert (shopper.email_consent, shopper.sms_consent, shopper.push_consent) == (True, True, False)
    assert set(Unsubscribe.objects.filter(shopper=shopper).values_list("channel", flat=True)) == {
        "push"
    }
    preference = Preference.objects.get(shopper=shopper)
    assert list(preference.topics_opted_out.all()) == [surveys]
    assert preference.paused_until is not None
    assert preference.paused_until > timezone.now() + dt.timedelta(days=29)
    assert offers not in preference.topics_opted_out.all()
    assert client.get(url[:-4] + "abcd").status_code == 404


def test_nps_link_stores_the_answer_and_a_later_comment(client):
    shopper = make_shopper()
    nine = next(link for link, target in _nps_links(shopper) if target.endswith("score=9"))
    target = client.get(_path(nine))["Location"]

    page = client.get(_path(target))
    client.post(_path(target), {"score": "9", "comment": "Fast delivery"})

    assert page.status_code == 200
    answer = NpsResponse.objects.get()
    assert (answer.shopper_id, answer.score, answer.comment) == (shopper.pk, 9, "Fast delivery")
    bad = client.get(_path(target).replace("score=9", "score=11"))
    assert bad.status_code == 400
    assert NpsResponse.objects.get().score == 9


def test_unsubscribed_shopper_is_never_resubscribed_by_a_second_click(client):
    shopper, _, email = _sent_email()
    url = _path(email.extra_headers["List-Unsubscribe"].strip("<>"))
    client.post(
        url, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    client.post(
        url, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert Unsubscribe.objects.count() == 1
    assert Shopper.objects.get(pk=shopper.pk).email_consent is False


SCANNERS = [
    "",  # no user agent at all
    "python-requests/2.31.0",
    "Mozilla/5.0 (compatible; Microsoft Office SafeLinks)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Proofpoint URL Defense",
    "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]


@pytest.mark.parametrize("user_agent", SCANNERS)
def test_a_scanner_gets_the_redirect_and_the_pixel_and_records_nothing(user_agent):
    _, message, email = _sent_email()
    link = search(r'href="([^"]+/e/c/[^"]+)"', html_of(email))
    pixel = search(r'src="([^"]+/e/o/[^"]+)"', html_of(email))
    scanner = Client(headers={"User-Agent": user_agent} if user_agent else {})

    clicked = scanner.get(_path(link))
    opened = scanner.get(_path(pixel))

    assert clicked.status_code == 302
    assert clicked["Location"] == "https://shop.example/sale?a=1&b=2"
    assert opened.status_code == 200
    message.refresh_from_db()
    assert (message.opened_at, message.clicked_at, message.clicked_url) == (None, None, "")


def test_head_requests_never_record_an_open_or_a_click(client):
    _, message, email = _sent_email()
    link = search(r'href="([^"]+/e/c/[^"]+)"', html_of(email))
    pixel = search(r'src="([^"]+/e/o/[^"]+)"', html_of(email))

    clicked = client.head(_path(link))
    opened = client.head(_path(pixel))

    assert clicked.status_code == 302
    assert opened.status_code == 200
    message.refresh_from_db()
    assert (message.opened_at, message.clicked_at) == (None, None)


def test_a_browser_like_fetch_right_after_delivery_is_a_scanner(client, settings):
    settings.PATRON_LINK_SCANNER_SECONDS = 10
    _, message, email = _sent_email()
    link = search(r'href="([^"]+/e/c/[^"]+)"', html_of(email))
    Message.objects.filter(pk=message.pk).update(handed_at=timezone.now())

    assert client.get(_path(link)).status_code == 302
    message.refresh_from_db()
    assert (message.opened_at, message.clicked_at) == (None, None)

    Message.objects.filter(pk=message.pk).update(
        handed_at=timezone.now() - dt.timedelta(seconds=11)
    )
    client.get(_path(link))
    message.refresh_from_db()
    assert message.clicked_at is not None


def test_gmail_image_proxy_counts_as_an_open_but_not_as_a_click():
    _, message, email = _sent_email()
    link = search(r'href="([^"]+/e/c/[^"]+)"', html_of(email))
    pixel = search(r'src="([^"]+/e/o/[^"]+)"', html_of(email))
    proxy = Client(
        headers={
            "User-Agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
        }
    )

    proxy.get(_path(link))
    message.refresh_from_db()
    assert message.clicked_at is None
    proxy.get(_path(pixel))
    message.refresh_from_db()
    assert message.opened_at is not None
    assert message.clicked_at is None


def _nps_links(shopper: Shopper) -> list[tuple[str, str]]:
    """The NPS email's score links: (the tracked click link, the NPS page it leads to)."""
    make_campaign(
        "nps_survey",
        steps=[
            {
                "subject": "How did we do?",
                "body": '{% for l in nps_links %}<a href="{{ l.url }}">{{ l.score }}</a>{% endfor %}',
            }
        ],
    )
    services.trigger_fire(trigger="nps_survey", shopper=shopper, occurrence_key="order:1")
    services.outbox_deliver_batch()
    links = re.findall(r'href="([^"]+/e/c/[^"]+)"', html_of(mail.outbox[0]))
    targets = [tokens.read("click", link.rsplit("/", 1)[1])[1] for link in links]
    return [(link, t) for link, t in zip(links, targets, strict=True) if "/e/nps/" in t]


def test_a_scanner_fetching_all_eleven_score_links_records_no_answer(client):
    shopper = make_shopper()
    targets = [target for _, target in _nps_links(shopper)]
    assert len(targets) == 11

    pages = [client.get(_path(target)) for target in targets]
    heads = [client.head(_path(target)) for target in targets]

    assert [p.status_code for p in pages] == [200] * 11
    assert [h.status_code for h in heads] == [200] * 11
    assert NpsResponse.objects.count() == 0
    # The page pre-selects the score the shopper chose and asks them to confirm it.
    assert 'value="7" checked' in pages[7].content.decode()
    assert pages[7].content.decode().count(" checked") == 1
    assert 'method="post"' in pages[7].content.decode()


def test_the_nps_answer_is_recorded_by_the_confirming_post_with_csrf(client):
    shopper = make_shopper()
    target = _path(_nps_links(shopper)[7][1])
    guarded = Client(enforce_csrf_checks=True, headers={"User-Agent": BROWSER})

    page = guarded.get(target)
    token = search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    forged = guarded.post(target, {"score": "0"})
    assert forged.status_code == 403
    assert NpsResponse.objects.count() == 0

    answered = guarded.post(target, {"score": "8", "comment": "", "csrfmiddlewaretoken": token})

    assert answered.status_code == 200
    answer = NpsResponse.objects.get()
    assert (answer.shopper_id, answer.score, answer.comment) == (shopper.pk, 8, "")
    assert guarded.post(target, {"score": "11", "csrfmiddlewaretoken": token}).status_code == 400
    assert NpsResponse.objects.get().score == 8


def test_the_preference_centre_shows_a_channel_off_when_unsubscribed_despite_consent():
    surveys = Topic.objects.create(key="surveys", name="Surveys")
    Topic.objects.create(key="offers", name="Offers")
    shopper = make_shopper(email_consent=True, sms_consent=True)
    services.preferences_update(
        shopper=shopper, channels={}, topics_opted_out=[surveys.key], pause_days=0
    )
    Unsubscribe.objects.create(shopper=shopper, channel="sms", source="reply")

    centre = selectors.preference_centre(shopper=shopper)

    assert [(c["key"], c["on"]) for c in centre["channels"]] == [
        ("email", True),
        ("sms", False),
        ("push", False),
    ]
    assert [(t["key"], t["on"]) for t in centre["topics"]] == [
        ("offers", True),
        ("surveys", False),
    ]
    assert centre["paused_until"] is None
