"""The project-wide templates (top-level templates/): one layout for every shopper page, and
Patron's name in the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from engagement import tokens

pytestmark = pytest.mark.django_db


def _template_names(response: object) -> list[str]:
    return [template.name for template in response.templates]  # type: ignore[attr-defined]  # the test client adds .templates


@pytest.mark.parametrize(
    ("path", "own_template"),
    [
        ("/", "storefront/home.html"),
        ("/help/", "chat/help_index.html"),
        (None, "engagement/unsubscribe.html"),
    ],
    ids=["shop", "help", "unsubscribe"],
)
def test_shopper_pages_share_the_patron_layout(path: str | None, own_template: str) -> None:
    if path is None:
        path = "/e/unsubscribe/" + tokens.make("unsubscribe", [1, 2, "email"])

    response = Client().get(path)

    assert response.status_code == 200
    names = _template_names(response)
    assert names[0] == own_template
    assert "patron/base.html" in names
    html = response.content.decode()
    assert html.count("<!doctype html>") == 1
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert html.count('<main id="main"') == 1


def test_the_admin_says_patron() -> None:
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-123456")
    client = Client()
    client.force_login(admin)

    response = client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Site administration | Patron administration</title>" in html
    assert '<div id="site-name"><a href="/admin/">Patron</a></div>' in html
    assert "Django administration" not in html
