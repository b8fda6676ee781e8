"""Write-key authentication: the one DRF authentication class of every API a store's key opens.

The tracking API (``/v1/*``) and the widget APIs (engagement's notify requests, on-site
messages, push subscriptions) identify the store by a write key sent as the HTTP Basic
username with an empty (ignored) password, as Segment's libraries send it. A view sets
``authentication_classes = [WriteKeyAuthentication]``; ``request.auth`` is then the active
``WriteKey`` and ``request.user`` an ``AnonymousUser``.

Refusals are DRF's ``AuthenticationFailed`` (not ``core.exceptions``): DRF then marks the request
unauthenticated, so a view's ``finalize_response`` may still read ``request.auth``, and adds the
``WWW-Authenticate`` header; ``core.api.exception_handler`` gives them the one error body.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from commerce import selectors
from commerce.models import WriteKey


def write_key_authenticate(key: str | None) -> WriteKey:
    """The active write key with this value.

    Errors: 401 ``missing_write_key`` for no or an empty key, 401 ``invalid_write_key`` for a
    key that is unknown or inactive.
    """
    if not key:
        raise AuthenticationFailed(
            "a write key is required as the HTTP Basic username", code="missing_write_key"
        )
    write_key = selectors.write_key_active(key=key)
    if write_key is None:
        raise AuthenticationFailed("unknown or inactive write key", code="invalid_write_key")
    return write_key


def basic_username(request: Request) -> str | None:
    """The username of the request's HTTP Basic credentials; None without a Basic header.

    Errors: 401 ``invalid_write_key`` for credentials that are not base64 of UTF-8 text.
    """
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed(
            "malformed HTTP Basic credentials", code="invalid_write_key"
        ) from None
    return decoded.partition(":")[0]


class WriteKeyAuthentication(BaseAuthentication):
    """The store's write key as the HTTP Basic username (the password is ignored).

    Every request but a CORS preflight (OPTIONS, which carries no credentials) must carry an
    active key: otherwise 401 ``missing_write_key`` or ``invalid_write_key`` with
    ``WWW-Authenticate: Basic``. A view whose clients may send the key in the body instead
    overrides ``key_from_body``.
    """

    def authenticate(self, request: Request) -> tuple[AnonymousUser, WriteKey] | None:
        if request.method == "OPTIONS":
            return None
        key = basic_username(request) or self.key_from_body(request)
        return AnonymousUser(), write_key_authenticate(key)

    def key_from_body(self, request: Request) -> str | None:
        """The key from the request body, for clients that cannot set a header: none here."""
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="patron"'


class WriteKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]  # drf-spectacular's __init_subclass__ is unannotated
    target_class = "commerce.authentication.WriteKeyAuthentication"
    name = "writeKey"
    match_subclasses = True

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "The store's write key as the username, an empty password.",
        }
