"""Request guards that apply to every URL, before any view sees the request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.decorators import sync_and_async_middleware

from core.api import error_body


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    query = request.META.get("QUERY_STRING", "")
    return "%00" in query or "\x00" in query or b"\x00" in unquote_to_bytes(query)


def _refusal() -> JsonResponse:
    return JsonResponse(
        error_body("invalid_character", "NUL characters (%00) are not accepted in URLs"),
        status=400,
    )


@sync_and_async_middleware
def nul_guard_middleware(get_response: Callable[[HttpRequest], Any]) -> Any:
    """Answer 400 ``invalid_character`` to a URL whose path or query holds a NUL character.

    PostgreSQL stores no NUL in text, so a ``%00`` reaching a query (``/products/%00/``) was a
    500 wherever a URL value is looked up; refusing it here covers every view at once.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            if _has_nul(request):
                return _refusal()
            response: Awaitable[HttpResponseBase] = get_response(request)
            return await response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        if _has_nul(request):
            return _refusal()
        result: HttpResponseBase = get_response(request)
        return result

    return middleware
