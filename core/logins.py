"""Login attempt limits: django-axes on the admin login (which the agent console uses too) and
on the APIs' HTTP Basic authentication.

Axes counts failed logins per username and client address in the cache (Redis) and, after
``AXES_FAILURE_LIMIT`` failures, refuses that pair, even with the right password, until
``AXES_COOLOFF_TIME`` has passed since the last failure. Its middleware turns a refused login
into the response ``login_locked_out`` builds: 429 with ``Retry-After``, JSON in the project's
error format for API callers, a short page for the admin's login form.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from django.utils.translation import gettext
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication
from rest_framework import exceptions as drf_exceptions
from rest_framework.request import Request

from core.ratelimit import request_client_address


def axes_client_ip(request: HttpRequest | Request) -> str:
    """The address axes counts failures under: the same trusted-proxy rule as every limit."""
    return request_client_address(request.META)


def _cool_off_seconds() -> int:
    cool_off = settings.AXES_COOLOFF_TIME
    return int(cool_off.total_seconds()) if isinstance(cool_off, dt.timedelta) else 3600


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """Axes' lockout response (``AXES_LOCKOUT_CALLABLE``): 429 with ``Retry-After``."""
    retry_after = _cool_off_seconds()
    message = gettext("Too many failed logins. Try again in %(minutes)d minutes.") % {
        "minutes": max(1, retry_after // 60)
    }
    wants_html = request.path.startswith("/admin/") and request.method in {"GET", "POST"}
    response: HttpResponse
    if wants_html and "json" not in request.headers.get("Accept", ""):
        response = HttpResponse(
            f"<!doctype html><title>429</title><h1>{escape(message)}</h1>",
            status=429,
            content_type="text/html; charset=utf-8",
        )
    else:
        # Imported here: core.api imports DRF's views, which load this module's authentication.
        from core.api import error_body

        response = JsonResponse(
            error_body("rate_limited", message, {"retry_after": retry_after}), status=429
        )
    response["Retry-After"] = str(retry_after)
    return response


class LoginLockedOut(drf_exceptions.APIException):
    status_code = 429
    default_code = "rate_limited"
    default_detail = "Too many failed logins."

    def __init__(self, detail: str, *, wait: int) -> None:
        super().__init__(detail)
        self.wait = wait  # DRF's handler sends it as Retry-After


class BasicAuthentication(authentication.BasicAuthentication):
    """DRF's HTTP Basic, with its attempts counted and locked out by axes.

    DRF hands ``authenticate`` its own ``Request`` wrapper; axes marks the lockout on the
    request it is given, so the Django ``HttpRequest`` underneath is passed instead, where
    axes' middleware finds the mark. A refused login answers 429 (never 401, which would
    invite the client to try another password).
    """

    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> tuple[Any, None]:
        django_request = request._request if request is not None else None
        user = authenticate(
            request=django_request,
            **{"username": userid, "password": password},
        )
        if django_request is not None and getattr(django_request, "axes_locked_out", False):
            raise LoginLockedOut(
                gettext("Too many failed logins. Try again in %(minutes)d minutes.")
                % {"minutes": max(1, _cool_off_seconds() // 60)},
                wait=_cool_off_seconds(),
            )
        if user is None:
            raise drf_exceptions.AuthenticationFailed(gettext("Invalid username/password."))
        if not user.is_active:
            raise drf_exceptions.AuthenticationFailed(gettext("User inactive or deleted."))
        return (user, None)


class BasicAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]  # drf-spectacular's __init_subclass__ is unannotated
    """The API schema's name for ``BasicAuthentication`` (DRF's, with lockout)."""

    target_class = "core.logins.BasicAuthentication"
    name = "basicAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "basic"}
