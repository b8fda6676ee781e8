from __future__ import annotations

import time

import redis
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error

from core.api import error_body


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
