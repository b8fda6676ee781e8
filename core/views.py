from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error

from core.api import error_body
from core.ratelimit import RateLimited, rate_limit_hit, request_client_address


def _check_database() -> dict[str, object]:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure is the answer this endpoint exists to give
        return {"ok": False, "error": exc.__class__.__name__}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}


def _check_redis() -> dict[str, object]:
    started = time.perf_counter()
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return {"ok": False, "error": exc.__class__.__name__}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}


def healthz(request: HttpRequest) -> JsonResponse:
    """Report whether PostgreSQL and Redis answer; 503 when either does not."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/v1/")) or "application/json" in request.headers.get(
        "Accept", ""
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 as JSON for API paths, Django's page elsewhere."""
    if _wants_json(request):
        return JsonResponse(error_body("not_found", "Nothing is at this address."), status=404)
    return page_not_found(request, exception or Http404())


def server_error(request: HttpRequest) -> HttpResponse:
    """500 as JSON for API paths, Django's page elsewhere."""
    if _wants_json(request):
        return JsonResponse(
            error_body("server_error", "Something went wrong on our side."), status=500
        )
    return default_server_error(request)


# --- Rate limits of pages ------------------------------------------------------------------

View = Callable[..., HttpResponse]


def rate_limited_response(request: HttpRequest, exc: RateLimited, *, json: bool) -> HttpResponse:
    """429 with ``Retry-After`` (seconds): the API error body when ``json``, else a short page in
    the shopper's language (templates/patron/429.html)."""
    response: HttpResponse
    if json:
        response = JsonResponse(error_body(exc.code, exc.message, exc.extra), status=429)
    else:
        response = render(request, "patron/429.html", {"retry_after": exc.retry_after}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


def rate_limited(
    scope: str, *, url_scope: str | None = None, url_kwarg: str = "token", json: bool = False
) -> Callable[[View], View]:
    """Limit a function view: calls per client address under ``scope`` and, with
    ``url_scope``, calls per value of the URL's ``url_kwarg`` argument (a signed link's token).

    Counted before the view runs, so a refused call (429, ``rate_limited_response``) reads and
    changes nothing; a forged token is counted like a real one. The scopes are in
    ``settings.PATRON_RATE_LIMITS``; the wrapper lists them in ``rate_limit_scopes``.
    """

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                rate_limit_hit(scope=scope, key=(request_client_address(request.META),))
                if url_scope is not None:
                    rate_limit_hit(scope=url_scope, key=(str(kwargs[url_kwarg]),))
            except RateLimited as exc:
                return rate_limited_response(request, exc, json=json)
            return view(request, *args, **kwargs)

        limited.rate_limit_scopes = (  # type: ignore[attr-defined]  # a marker on the function
            (scope,) if url_scope is None else (scope, url_scope)
        )
        return limited

    return decorate
