"""Verified identity in tests: the store's identity secret and the proofs a store computes.

``identity_secret`` (a fixture) gives the store a known secret; ``user_hash`` is what the
store's backend would send for a customer id (docs/identity.md), computed here independently
of Patron's code so that a test would notice Patron computing it differently.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from commerce import selectors
from commerce.models import StoreSettings

SECRET = "test-identity-secret"


def user_hash(customer_id: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def identity_secret(db: Any) -> str:
    StoreSettings.objects.update_or_create(pk=1, defaults={"identity_secret": SECRET})
    selectors.identity_secret_invalidate()
    return SECRET
