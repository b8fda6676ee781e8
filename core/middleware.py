"""Request guards that apply to every URL, before any view sees the request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.decorators import sync_and_async_middleware

from core.api import error_body


def _refusal(request: HttpRequest) -> JsonResponse | None:
    """404 for a NUL in the path (no resource has such a name), 400 for one in the query."""
    if "\x00" in request.path:
        return JsonResponse(error_body("not_found", "not found"), status=404)
    query = request.META.get("QUERY_STRING", "")
    if "%00" in query or "\x00" in query or b"\x00" in unquote_to_bytes(query):
        return JsonResponse(
            error_body("invalid_character", "NUL characters (%00) are not accepted in URLs"),
            status=400,
        )
    return None


@sync_and_async_middleware
def nul_guard_middleware(get_response: Callable[[HttpRequest], Any]) -> Any:
    """Refuse a URL whose path (404) or query (400 ``invalid_character``) holds a NUL.

    PostgreSQL stores no NUL in text, so a ``%00`` reaching a query (``/products/%00/``) was a
    500 wherever a URL value is looked up; refusing it here covers every view at once.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            refusal = _refusal(request)
            if refusal is not None:
                return refusal
            response: Awaitable[HttpResponseBase] = get_response(request)
            return await response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        refusal = _refusal(request)
        if refusal is not None:
            return refusal
        result: HttpResponseBase = get_response(request)
        return result

    return middleware
