"""#8 §3 Login attempts: django-axes locks a username + address out of the admin login (which
the agent console uses) and of the APIs' HTTP Basic auth; the right password does not open
the lock before the cool-off ends."""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff() -> object:
    return get_user_model().objects.create_user(
        username="ops", password=PASSWORD, is_staff=True, is_superuser=True
    )


def _login(client: Client, password: str) -> Any:
    return client.post(
        "/admin/login/?next=/console/", {"username": "ops", "password": password}, follow=False
    )


def _basic(password: str) -> dict[str, str]:
    token = base64.b64encode(f"ops:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_admin_login_locks_out_after_five_failures_even_with_the_right_password(staff):
    client = Client(REMOTE_ADDR="203.0.113.9")

    failures = [_login(client, "wrong").status_code for _ in range(4)]
    fifth = _login(client, "wrong")
    right = _login(client, PASSWORD)

    assert failures == [200, 200, 200, 200]  # the form again, with its error
    assert fifth.status_code == 429
    assert right.status_code == 429
    assert int(right["Retry-After"]) == 15 * 60
    assert "_auth_user_id" not in client.session
    # The console, which uses this login, stays closed.
    assert client.get("/console/").status_code == 302


def test_other_addresses_are_not_locked_out_by_someone_elses_failures(staff):
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(5):
        _login(attacker, "wrong")

    owner = Client(REMOTE_ADDR="198.51.100.20")
    response = _login(owner, PASSWORD)

    assert response.status_code == 302
    assert owner.session["_auth_user_id"] == str(staff.pk)


def test_the_lock_opens_after_the_cool_off(staff):
    client = Client(REMOTE_ADDR="203.0.113.9")
    with override_settings(AXES_COOLOFF_TIME=dt.timedelta(seconds=10)):
        for _ in range(5):
            _login(client, "wrong")
        assert _login(client, PASSWORD).status_code == 429
        time.sleep(11)
        after = _login(client, PASSWORD)

    assert after.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_api_basic_auth_is_locked_out_with_429_json_and_retry_after(staff):
    client = Client(REMOTE_ADDR="203.0.113.9")

    failures = [client.get("/api/products/", headers=_basic("wrong")).status_code for _ in range(4)]
    fifth = client.get("/api/products/", headers=_basic("wrong"))
    right = client.get("/api/products/", headers=_basic(PASSWORD))

    assert failures == [401, 401, 401, 401]
    assert fifth.status_code == 429
    assert right.status_code == 429
    assert right["Retry-After"] == str(15 * 60)
    assert right.json()["error"]["code"] == "rate_limited"
    # Another address with the right password is served.
    other = Client(REMOTE_ADDR="198.51.100.20").get("/api/products/", headers=_basic(PASSWORD))
    assert other.status_code == 200
