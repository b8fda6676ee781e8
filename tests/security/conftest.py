"""Fixtures for the security tests."""

from __future__ import annotations

from tests.support.identity import identity_secret  # noqa: F401  (a fixture, registered here)
