"""The error shape of every API: one exception handler and one schema.

Every error a client of Patron's HTTP APIs reads is JSON ``{"error": {"code": ..., "message":
..., "detail"?: ...}}``: ``code`` a stable snake_case word to branch on, ``message`` a sentence
for people, ``detail`` (optional) what else helps (the invalid fields, ``retry_after``). Views
name their error responses in the OpenAPI schema with ``error_responses`` / ``error_response``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, set_rollback
from rest_framework.views import exception_handler as drf_exception_handler

from core.exceptions import ApplicationError
from core.ratelimit import RateLimited, rate_limit_hit, rate_limit_peek, request_client_address


class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="A stable snake_case word, e.g. invalid, not_found")
    message = serializers.CharField(help_text="What went wrong, for people")
    detail = serializers.JSONField(
        required=False, help_text="More about it: the invalid fields, retry_after, ..."
    )

    class Meta:
        ref_name = "ErrorBody"


class ErrorSerializer(serializers.Serializer[Any]):
    """The body of every API error (the schema of ``error_body``)."""

    error = ErrorBodySerializer()

    class Meta:
        ref_name = "Error"


# What each error status means when a view says no more.
ERROR_DESCRIPTIONS = {
    400: "Invalid input (error.detail names the fields)",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "The body is too large",
    415: "Unsupported media type",
    429: "Too many requests; see Retry-After",
    503: "Temporarily unavailable; retry after Retry-After seconds",
}


def error_response(
    description: str, *, serializer: type[serializers.Serializer[Any]] = ErrorSerializer
) -> OpenApiResponse:
    """An error response for ``extend_schema(responses=...)``: the error body, described."""
    return OpenApiResponse(serializer, description=description)


def error_responses(
    *statuses: int, serializer: type[serializers.Serializer[Any]] = ErrorSerializer
) -> dict[int, OpenApiResponse]:
    """``{status: error_response(...)}`` for these HTTP statuses, with the standard wording."""
    return {
        status: error_response(ERROR_DESCRIPTIONS[status], serializer=serializer)
        for status in statuses
    }


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The JSON body of an error: ``{"error": {"code", "message", "detail"?}}``."""
    body: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return {"error": body}


def _first_message(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        inner = _first_message(value)
        return inner if key == "non_field_errors" else f"{key}: {inner}"
    return str(detail)


# Seconds a client should wait before retrying after a transient failure (503).
TRANSIENT_RETRY_AFTER_S = 5


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Turn any exception a view raises into ``{"error": {code, message, detail}}``.

    Transient database failures (connection lost or refused, a lock or statement timeout,
    a deadlock: Django's ``OperationalError`` and ``InterfaceError``) are 503
    ``service_unavailable`` with ``Retry-After``, never a 4xx: clients such as Segment's
    libraries drop events for good on a 4xx and retry a 5xx. A body over
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is 413 ``payload_too_large``.
    """
    if isinstance(exc, ApplicationError):
        answer = Response(error_body(exc.code, exc.message, exc.extra or None), status=exc.status)
        if isinstance(exc, RateLimited):
            answer["Retry-After"] = str(exc.retry_after)
        return answer
    if isinstance(exc, (OperationalError, InterfaceError)):
        set_rollback()
        return Response(
            error_body("service_unavailable", "temporarily unavailable, retry later"),
            status=503,
            headers={"Retry-After": str(TRANSIENT_RETRY_AFTER_S)},
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("payload_too_large", str(exc)), status=413)
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(detail=getattr(exc, "message_dict", exc.messages))
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, drf_exceptions.APIException):
        return response
    detail = exc.detail
    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = error_body("invalid", _first_message(detail), detail)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response.data = error_body(str(code), str(detail))
    return response


class StaffApiView(APIView):
    """Base of the staff APIs: limits what anyone can do there without a staff login.

    A call that does not end signed in as active staff (no credentials, wrong HTTP Basic
    password, a shopper's session, a locked-out login) counts against its client address under
    ``PATRON_RATE_LIMITS["staff_login_free"]``; once the window is used up, further calls from
    that address get 429 with ``Retry-After`` before any credential is checked (no password hash
    is computed for them). Calls of signed-in staff are not counted.
    """

    rate_limit_scopes = ("staff_login_free",)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        address = request_client_address(request.META)
        rate_limit_peek(scope="staff_login_free", key=(address,))
        try:
            super().initial(request, *args, **kwargs)
        except drf_exceptions.APIException:
            user = request.user
            if not (user and user.is_authenticated and user.is_active and user.is_staff):
                rate_limit_hit(scope="staff_login_free", key=(address,))
            raise
