"""#8 §3 Content-Security-Policy on Patron's own pages, and the widget API's CORS."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import urlparse

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import KnowledgeArticle
from commerce.models import Product, Shopper, WriteKey
from engagement import tokens
from engagement.models import ProductWatch

pytestmark = pytest.mark.django_db

SHOP = "https://shop.example.com"


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _directives(header: str) -> dict[str, list[str]]:
    return {
        part.split()[0]: part.split()[1:] for part in (p.strip() for p in header.split(";")) if part
    }


# --- CSP ---------------------------------------------------------------------------------


def _pages() -> dict[str, tuple[Client, str]]:
    WriteKey.objects.create(name="demo")
    Product.objects.create(sku="MUG", title="Mug", price=9, active=True)
    KnowledgeArticle.objects.update_or_create(
        slug="shipping",
        language="en",
        defaults={"title": "Shipping", "body": "Two days.", "question": "How long?"},
    )
    shopper = Shopper.objects.create(email="ana@example.com")
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-unused-1")
    staff = Client()
    staff.force_login(admin)
    anonymous = Client()
    pages = {
        "shop home": (anonymous, "/"),
        "product page": (anonymous, "/products/MUG/"),
        "help index": (anonymous, "/help/"),
        "help article": (anonymous, "/help/shipping/"),
        "admin login": (anonymous, "/admin/login/"),
        "admin index": (staff, "/admin/"),
        "console": (staff, "/console/"),
        "api docs": (anonymous, "/api/docs/"),
    }
    pages["unsubscribe"] = (
        anonymous,
        urlparse(tokens.unsubscribe_url(1, shopper.pk, "email")).path,
    )
    pages["preferences"] = (anonymous, urlparse(tokens.preferences_url(shopper.pk)).path)
    return pages


def test_every_page_kind_sends_a_strict_csp():
    for name, (client, path) in _pages().items():
        response = client.get(path)
        assert response.status_code == 200, (name, response.status_code)
        header = response.get("Content-Security-Policy")
        assert header, name
        policy = _directives(header)
        assert policy["frame-ancestors"] == ["'none'"], name
        assert policy["object-src"] == ["'none'"], name
        assert "'unsafe-inline'" not in policy["script-src"], name
        assert "'unsafe-eval'" not in policy["script-src"], name
        assert policy["default-src"] == ["'self'"], name


def test_inline_styles_and_scripts_of_our_pages_carry_the_responses_nonce():
    shopper = Shopper.objects.create(email="ana@example.com")
    KnowledgeArticle.objects.update_or_create(
        slug="shipping",
        language="en",
        defaults={"title": "Shipping", "body": "Two days.", "question": "How long?"},
    )
    paths = [urlparse(tokens.preferences_url(shopper.pk)).path]
    for path in paths:
        response = Client().get(path)
        policy = _directives(response["Content-Security-Policy"])
        nonces = [v for v in policy["script-src"] if v.startswith("'nonce-")]
        assert len(nonces) == 1, path
        nonce = nonces[0][len("'nonce-") : -1]
        html = response.content.decode()
        inline = re.findall(r"<(script|style)(?![^>]*\bsrc=)([^>]*)>", html)
        # Data blocks (JSON-LD) are never executed: CSP does not apply to them.
        code = [attrs for _tag, attrs in inline if "application/ld+json" not in attrs]
        assert code, path
        for attributes in code:
            assert f'nonce="{nonce}"' in attributes, (path, attributes)


# --- Widget API CORS ---------------------------------------------------------------------


def test_widget_api_preflight_is_answered_without_a_key():
    response = Client().options(
        "/api/engagement/notify-requests",
        HTTP_ORIGIN=SHOP,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == SHOP
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "Authorization" in response["Access-Control-Allow-Headers"]


def test_widget_api_answers_cors_for_the_keys_origins_and_refuses_others():
    key = WriteKey.objects.create(name="shop", allowed_origins=[SHOP]).key
    Product.objects.create(sku="LAMP", title="Lamp", price=10, stock=0)
    body = json.dumps({"sku": "LAMP", "kind": "back_in_stock", "anonymous_id": "a-1"})

    def call(origin: str | None) -> Any:
        extra = {"Origin": origin} if origin else {}
        return Client().post(
            "/api/engagement/notify-requests",
            body,
            content_type="application/json",
            headers={**_basic(key), **extra},
        )

    foreign = call("https://evil.example.net")
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in foreign
    assert ProductWatch.objects.count() == 0  # refused at the call: nothing created

    allowed = call(SHOP)
    assert allowed.status_code == 201
    assert allowed["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in allowed["Vary"]
    assert ProductWatch.objects.count() == 1

    server_side = call(None)  # no Origin: not a browser page, the key alone decides
    assert server_side.status_code == 200
    assert "Access-Control-Allow-Origin" not in server_side


def test_a_key_without_listed_origins_refuses_other_pages_and_serves_patrons_own(settings):
    settings.ALLOWED_HOSTS = ["*"]  # the development default decides nothing here
    key = WriteKey.objects.create(name="shop").key

    def call(origin: str) -> Any:
        return Client().get(
            "/api/engagement/onsite-messages?anonymous_id=a-1",
            headers={"Origin": origin, **_basic(key)},
        )

    foreign = call(SHOP)
    own = call("http://testserver")

    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in foreign
    assert own.status_code == 200
    assert "Access-Control-Allow-Origin" not in own  # same-origin: no CORS needed
