"""The HTML pages of chat: the agent console's gate and the public help centre."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import KnowledgeArticle
from commerce.models import WriteKey
from tests.chat.conftest import make_agent

pytestmark = pytest.mark.django_db

JSONLD_RE = re.compile(r'<script type="application/ld\+json">(.*?)</script>', re.S)


def test_console_sends_anonymous_users_to_the_login_page():
    response = Client().get("/console/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/console/"


def test_console_refuses_staff_without_the_agent_permission():
    clerk = get_user_model().objects.create_user(username="clerk", is_staff=True)
    client = Client()
    client.force_login(clerk)

    response = client.get("/console/")

    assert response.status_code == 403
    assert b"console-config" not in response.content


def test_console_renders_for_an_agent_with_its_configuration():
    anna = make_agent("anna")
    client = Client()
    client.force_login(anna)

    response = client.get("/console/")

    assert response.status_code == 200
    config = response.context["console_config"]
    assert {k: v for k, v in config.items() if k != "csrf_token"} == {
        "ws_path": "/ws/console/",
        "api_base": "/api/chat/",
        "agent": {"id": anna.pk, "name": "Anna"},
        "max_body": 4000,
    }
    assert config["csrf_token"]
    assert b'<script id="console-config" type="application/json">' in response.content


def articles(*rows: tuple[str, str, bool]) -> None:
    """Exactly these articles (title, slug, published): the seeded ones are removed."""
    KnowledgeArticle.objects.all().delete()
    for title, slug, published in rows:
        KnowledgeArticle.objects.create(
            title=title, slug=slug, body=f"About {title}.", published=published
        )


def test_help_index_lists_published_articles_only():
    articles(
        ("Shipping and delivery", "shipping", True),
        ("Gift wrapping", "gift-wrap", False),
        ("Returns and refunds", "returns", True),
    )

    response = Client().get("/help/")

    html = response.content.decode()
    assert response.status_code == 200
    assert re.findall(r'<a href="/help/([^/]+)/">([^<]+)</a>', html) == [
        ("returns", "Returns and refunds"),
        ("shipping", "Shipping and delivery"),
    ]
    assert "Gift wrapping" not in html


def test_an_article_page_carries_faq_structured_data():
    KnowledgeArticle.objects.create(
        title="Payments",
        slug="payments",
        question="Which cards do you take? </script><b>",
        body="Visa & Mastercard.\n\nAlso PayPal.",
    )

    response = Client().get("/help/payments/")

    html = response.content.decode()
    [raw] = JSONLD_RE.findall(html)
    assert json.loads(raw) == {
        "@context": "https://schema.org",
        "@type": "FAQPage",
        "mainEntity": [
            {
                "@type": "Question",
                "name": "Which cards do you take? </script><b>",
                "acceptedAnswer": {"@type": "Answer", "text": "Visa & Mastercard.\n\nAlso PayPal."},
            }
        ],
    }
    # The question cannot close the script element, and the page escapes it as text.
    assert "</script><b>" not in raw
    assert "<p>Visa &amp; Mastercard.</p><p>Also PayPal.</p>" in html


def test_an_article_without_a_question_uses_its_title_and_unknown_or_unpublished_is_404():
    articles(("Returns and refunds", "returns", True), ("Draft", "draft", False))

    page = Client().get("/help/returns/")
    [raw] = JSONLD_RE.findall(page.content.decode())

    assert json.loads(raw)["mainEntity"] == [
        {
            "@type": "Question",
            "name": "Returns and refunds",
            "acceptedAnswer": {"@type": "Answer", "text": "About Returns and refunds."},
        }
    ]
    assert Client().get("/help/draft/").status_code == 404
    assert Client().get("/help/nope/").status_code == 404


@pytest.mark.parametrize("path", ["/help/", "/help/returns/"])
def test_help_pages_wear_the_shop_and_carry_the_chat_bubble(path):
    articles(("Returns and refunds", "returns", True))
    key = WriteKey.objects.create(name="demo shop")

    html = Client().get(path).content.decode()

    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<link rel="stylesheet" href="/static/storefront/shop.css">' in html
    assert '<header class="shop-header">' in html
    assert '<main id="main" class="shop-main">' in html
    # The same one tag as the shop's pages: the chat bubble, with the shop's key.
    assert (
        f'<script src="http://testserver/static/patron/widget.js" data-write-key="{key.key}"'
        " async></script>"
    ) in html
