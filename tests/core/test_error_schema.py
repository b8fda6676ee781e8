"""One error shape for every API: ``{"error": {"code", "message", "detail"?}}`` (core.api).

The OpenAPI schema names one error component for every error response, and each API answers
its 400, 403, 404 and 429 in that shape at run time (the tracking API adds Segment's top-level
``success``, ``code`` and ``message`` around it).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from commerce.models import Product, WriteKey
from tests.chat.conftest import make_agent
from tests.commerce.tracking_support import post, track
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def _assert_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    error = body["error"]
    assert set(error) <= {"code", "message", "detail"}
    assert CODE.match(error["code"]), error
    assert isinstance(error["message"], str)
    assert error["message"]
    return body


def _basic(username: str, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _limits(**overrides: tuple[int, int]) -> Any:
    return override_settings(PATRON_RATE_LIMITS={**settings.PATRON_RATE_LIMITS, **overrides})


def _locked_out(client: Client, path: str) -> Any:
    """The answer once django-axes has locked this address and username out of Basic auth."""
    get_user_model().objects.create_user(username="ops", password=PASSWORD, is_staff=True)
    for _ in range(5):
        client.get(path, headers=_basic("ops", "wrong"))
    return client.get(path, headers=_basic("ops", PASSWORD))


# --- The schema --------------------------------------------------------------------------


def test_every_error_response_in_the_schema_has_the_one_error_body(admin_client):
    schema = admin_client.get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]

    def error_body_of(response: dict[str, Any]) -> str:
        ref = response["content"]["application/json"]["schema"]["$ref"]
        component = components[ref.rsplit("/", 1)[1]]
        error = component["properties"]["error"]
        return str(error["$ref"] if "$ref" in error else error["allOf"][0]["$ref"])

    seen = {
        (path, method, status): error_body_of(response)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if int(status) >= 400
    }

    assert len({path for path, _, _ in seen}) >= 15  # every API is in the schema
    assert set(seen.values()) == {"#/components/schemas/ErrorBody"}
    assert components["ErrorBody"]["required"] == ["code", "message"]


# --- At run time, per API ----------------------------------------------------------------


def _staff_catalog(status: int) -> Any:
    client = Client(REMOTE_ADDR="203.0.113.20")
    if status == 429:
        return _locked_out(client, "/api/products/")
    user = get_user_model().objects.create_user(username="cat", password=PASSWORD, is_staff=True)
    if status != 403:
        grant(user, "commerce.view_product")
    client.force_login(user)
    path = {400: "/api/products/?in_stock=maybe", 403: "/api/products/"}.get(
        status, "/api/products/NOPE/"
    )
    return client.get(path)


def _chat_agents(status: int) -> Any:
    client = Client(REMOTE_ADDR="203.0.113.21")
    if status == 429:
        return _locked_out(client, "/api/chat/conversations/")
    if status == 403:
        client.force_login(
            get_user_model().objects.create_user(username="x", password=PASSWORD, is_staff=True)
        )
    else:
        client.force_login(make_agent("anna"))
    path = {
        400: "/api/chat/conversations/?view=nope",
        403: "/api/chat/conversations/",
        404: "/api/chat/conversations/999999/messages/",
    }[status]
    return client.get(path)


def _widget(status: int) -> Any:
    Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)
    key = WriteKey.objects.create(name="shop", allowed_origins=["https://shop.example"]).key
    body: dict[str, Any] = {"anonymous_id": "a-1", "sku": "LAMP", "kind": "back_in_stock"}
    origin = "https://shop.example"
    if status == 400:
        body.pop("anonymous_id")
    elif status == 403:
        origin = "https://elsewhere.example"
    elif status == 404:
        body["sku"] = "NOPE"
    client = Client(REMOTE_ADDR="203.0.113.22")

    def send() -> Any:
        return client.post(
            "/api/engagement/notify-requests",
            data=json.dumps(body),
            content_type="application/json",
            headers={**_basic(key), "Origin": origin},
        )

    if status != 429:
        return send()
    with _limits(widget=(1, 60)):
        send()
        return send()


def _tracking(status: int) -> Any:
    key = WriteKey.objects.create(name="shop", allowed_origins=["https://shop.example"]).key
    client = Client(REMOTE_ADDR="203.0.113.23")
    if status == 400:
        return post(client, "/v1/track", None, key=key, raw=b"{not json")
    if status == 403:
        return client.post(
            "/v1/track",
            data=json.dumps(track("m-1")),
            content_type="application/json",
            headers={**_basic(key), "Origin": "https://elsewhere.example"},
        )
    if status == 404:
        return post(client, "/v1/no-such-call", track("m-1"), key=key)
    with _limits(tracking=(1, 60)):
        post(client, "/v1/track", track("m-1"), key=key)
        return post(client, "/v1/track", track("m-2"), key=key)


APIS: dict[str, Callable[[int], Any]] = {
    "catalog (staff)": _staff_catalog,
    "chat (agents)": _chat_agents,
    "engagement (widget)": _widget,
    "tracking": _tracking,
}


@pytest.mark.parametrize("status", [400, 403, 404, 429])
@pytest.mark.parametrize("api", sorted(APIS))
def test_each_api_answers_its_errors_in_the_one_shape(api, status):
    body = _assert_error(APIS[api](status), status)

    if status == 429:
        assert body["error"]["code"] == "rate_limited"
    if api == "tracking" and status != 404:  # Segment's libraries read these at the top
        assert (body["success"], body["code"], body["message"]) == (
            False,
            body["error"]["code"],
            body["error"]["message"],
        )
