"""The Segment-compatible tracking endpoints: transport only, the work is in ``commerce.tracking``.

Segment's client libraries send the write key as the HTTP Basic username (analytics.js may
send it as ``writeKey`` in the body instead), may gzip the body, and expect ``{"success":
true}``. Errors use Patron's ``{"error": {code, message, detail}}`` body, with ``code`` and
``message`` repeated at the top level where Segment's libraries look for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce import selectors, tracking
from commerce.authentication import WriteKeyAuthentication
from commerce.models import WriteKey
from core import cors
from core.api import ErrorSerializer, error_response, error_responses
from core.exceptions import PayloadTooLarge, PermissionDenied
from core.ratelimit import rate_limit_hit, request_client_address

_F = TypeVar("_F", bound=Callable[..., Any])


# --- Body and write key ------------------------------------------------------------------


def _limit(request: Request) -> tuple[int, str]:
    """The most bytes this endpoint takes, and the error code for more."""
    view = request.parser_context["view"]
    if getattr(view, "call_type", None) is None:
        return int(settings.PATRON_TRACK_MAX_BATCH_BYTES), "body_too_large"
    return int(settings.PATRON_TRACK_MAX_EVENT_BYTES), "event_too_large"


def request_payload(request: Request) -> tuple[Any, int]:
    """The decoded JSON body and its size, read once, within the endpoint's size limit."""
    cached = getattr(request, "_tracking_payload", None)
    if cached is not None:
        return cast("tuple[Any, int]", cached)
    max_bytes, code = _limit(request)
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "")
    # A compressed body is never much larger than what it inflates to.
    read_limit = max_bytes + max_bytes // 100 + 1024 if encoding else max_bytes
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > read_limit:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes", code=code)
    body = request._request.read(read_limit + 1)
    if len(body) > read_limit:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes", code=code)
    decoded = tracking.payload_decode(
        body=body, content_encoding=encoding, max_bytes=max_bytes, too_large_code=code
    )
    request._tracking_payload = decoded  # type: ignore[attr-defined]  # a per-request cache on DRF's Request
    return decoded


class TrackingWriteKeyAuthentication(WriteKeyAuthentication):
    """The write key as the HTTP Basic username, or analytics.js's ``writeKey`` in the body."""

    def key_from_body(self, request: Request) -> str | None:
        payload, _ = request_payload(request)
        body_key = payload.get("writeKey") if isinstance(payload, dict) else None
        return body_key if isinstance(body_key, str) else None


class TrackingWriteKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]  # drf-spectacular's __init_subclass__ is unannotated
    """The tracking paths' scheme: a component of its own, since drf-spectacular names one
    component per authentication class (the base's ``writeKey`` would clash)."""

    target_class = "commerce.tracking_api.TrackingWriteKeyAuthentication"
    name = "trackingWriteKey"
    priority = 1  # over the base class's scheme, which matches subclasses

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": (
                "The source's write key as the username, an empty password; or analytics.js's "
                "writeKey field in the body."
            ),
        }


# --- Documented shapes -------------------------------------------------------------------


class _CallInput(serializers.Serializer[Any]):
    userId = serializers.CharField(
        required=False,
        max_length=255,
        help_text=(
            "With a browser (not server-side) write key, counts only with its proof "
            "context.userHash = hex(HMAC-SHA256(identity secret, userId)); see docs/identity.md"
        ),
    )
    anonymousId = serializers.CharField(required=False, max_length=255)
    messageId = serializers.CharField(
        required=False, max_length=255, help_text="Calls are stored once per messageId"
    )
    timestamp = serializers.DateTimeField(required=False)
    originalTimestamp = serializers.DateTimeField(required=False)
    sentAt = serializers.DateTimeField(required=False)
    # DRF's metaclass moves declared fields off the class, so this does not shadow
    # Serializer.context at run time; the stubs cannot know that.
    context = serializers.DictField(required=False)  # type: ignore[assignment]  # declared field, not Serializer.context: see above
    integrations = serializers.DictField(required=False, help_text="Ignored")


class TrackInput(_CallInput):
    event = serializers.CharField(max_length=255)
    properties = serializers.DictField(required=False)


class IdentifyInput(_CallInput):
    traits = serializers.DictField(required=False)


class PageInput(_CallInput):
    name = serializers.CharField(required=False, max_length=255)
    properties = serializers.DictField(required=False)


class GroupInput(_CallInput):
    groupId = serializers.CharField(max_length=255)
    traits = serializers.DictField(required=False)


class AliasInput(_CallInput):
    previousId = serializers.CharField(max_length=255)
    userId = serializers.CharField(max_length=255)


class BatchCallInput(_CallInput):
    type = serializers.ChoiceField(choices=sorted(tracking.CALL_TYPES))
    event = serializers.CharField(required=False, max_length=255)
    name = serializers.CharField(required=False, max_length=255)
    properties = serializers.DictField(required=False)
    traits = serializers.DictField(required=False)
    groupId = serializers.CharField(required=False, max_length=255)
    previousId = serializers.CharField(required=False, max_length=255)


class BatchInput(serializers.Serializer[Any]):
    batch = BatchCallInput(many=True)
    # As in _CallInput, the field does not shadow Serializer.context at run time.
    context = serializers.DictField(  # type: ignore[assignment]  # declared field, not Serializer.context: see above
        required=False, help_text="Merged into every call's context"
    )
    sentAt = serializers.DateTimeField(required=False)
    writeKey = serializers.CharField(required=False)


class _CallErrorOutput(serializers.Serializer[Any]):
    index = serializers.IntegerField(help_text="Position of the call in batch")
    code = serializers.CharField()
    message = serializers.CharField()


class SuccessOutput(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    # As with context above: the declared field does not shadow Serializer.errors at run time.
    errors = _CallErrorOutput(  # type: ignore[assignment]
        many=True,
        required=False,
        help_text="Batch calls not stored, by index (the others were stored)",
    )


class ErrorOutput(ErrorSerializer):
    """Patron's error body, with ``code`` and ``message`` also at the top level, where
    Segment's libraries look for them."""

    success = serializers.BooleanField()
    code = serializers.CharField()
    message = serializers.CharField()

    class Meta:
        ref_name = "TrackingError"


_ERRORS = {
    400: error_response(
        "Malformed JSON, an invalid call, or a batch none of whose calls is valid",
        serializer=ErrorOutput,
    ),
    401: error_response("Missing, unknown or inactive write key", serializer=ErrorOutput),
    403: error_response(
        "origin_not_allowed: a browser call from an origin the write key does not list; "
        "identity_unverified: a browser write key sent a userId without its proof "
        "(context.userHash) and without an anonymousId (docs/identity.md)",
        serializer=ErrorOutput,
    ),
    413: error_response("A call over 32 KB or a batch over 500 KB", serializer=ErrorOutput),
    429: error_response(
        "Too many requests for this write key and address; see Retry-After",
        serializer=ErrorOutput,
    ),
    **error_responses(503, serializer=ErrorOutput),
}


# --- Views -------------------------------------------------------------------------------


class _SegmentView(APIView):
    """Segment's answer shapes and the CORS headers of every tracking path."""

    rate_limit_scopes = ("tracking",)

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Response:
        return Response(status=204)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """A call refused for its write key (missing, unknown, malformed) counts against its
        client address alone under ``PATRON_RATE_LIMITS["tracking"]``: guessing keys is limited
        like sending events."""
        try:
            super().initial(request, *args, **kwargs)
        except AuthenticationFailed:
            address = request_client_address(request.META)
            rate_limit_hit(scope="tracking", key=("no-write-key", address))
            raise

    def check_throttles(self, request: Request) -> None:
        """One request (a batch counts once) per write key and client address: 429 with
        ``Retry-After`` over ``PATRON_RATE_LIMITS["tracking"]``; calls that carry no key (the
        library's metrics, CORS preflights) per client address."""
        address = request_client_address(request.META)
        if isinstance(request.auth, WriteKey):
            rate_limit_hit(scope="tracking", key=(request.auth.key, address))
        else:  # the library's metrics, and CORS preflights (they carry no key)
            rate_limit_hit(scope="tracking", key=("no-write-key", address))

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        error = response.data.get("error") if isinstance(response.data, dict) else None
        if isinstance(error, dict):
            response.data = {
                "success": False,
                "code": error.get("code"),
                "message": error.get("message"),
                "error": error,
            }
        return response

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        # Browsers send tracking calls from the shop's own origin (core.cors says how).
        cors.cors_headers_apply(request, response)
        return response


class _TrackingView(_SegmentView):
    authentication_classes = [TrackingWriteKeyAuthentication]
    permission_classes = [AllowAny]  # the write key is checked by the authentication
    renderer_classes = [JSONRenderer]
    throttle_classes = []
    call_type: str | None = None

    def post(self, request: Request) -> Response:
        source = request.auth
        assert isinstance(source, WriteKey)
        # Every call, not only the preflight: a preflight carries no key to decide with.
        origin = request.headers.get("Origin")
        if not selectors.write_key_origin_allowed(
            write_key=source, origin=origin, host=request.get_host()
        ):
            raise PermissionDenied(
                f"this write key may not be used from {origin}", code="origin_not_allowed"
            )
        payload, size = request_payload(request)
        received_at = timezone.now()
        calls, errors = tracking.calls_validate(
            payload=payload, call_type=self.call_type, received_at=received_at, body_bytes=size
        )
        tracking.events_ingest(source=source, calls=calls, received_at=received_at)
        if errors:
            return Response({"success": True, "errors": [e.as_dict() for e in errors]})
        return Response({"success": True})


def _schema(summary: str, request: type[serializers.Serializer[Any]]) -> Callable[[_F], _F]:
    return extend_schema(
        tags=["tracking"],
        summary=summary,
        request={"application/json": request, "text/plain": request},
        responses={200: SuccessOutput, **_ERRORS},
    )


class IdentifyView(_TrackingView):
    call_type = "identify"

    @_schema("Identify a shopper and record their traits", IdentifyInput)
    def post(self, request: Request) -> Response:
        return super().post(request)


class TrackView(_TrackingView):
    call_type = "track"

    @_schema("Record an action the shopper took", TrackInput)
    def post(self, request: Request) -> Response:
        return super().post(request)


class PageView(_TrackingView):
    call_type = "page"

    @_schema("Record a page view", PageInput)
    def post(self, request: Request) -> Response:
        return super().post(request)


class ScreenView(_TrackingView):
    call_type = "screen"

    @_schema("Record a mobile screen view", PageInput)
    def post(self, request: Request) -> Response:
        return super().post(request)


class GroupView(_TrackingView):
    call_type = "group"

    @_schema("Associate a shopper with a group (an account, a company)", GroupInput)
    def post(self, request: Request) -> Response:
        return super().post(request)


class AliasView(_TrackingView):
    call_type = "alias"

    @_schema("Declare that previousId and userId are one shopper", AliasInput)
    def post(self, request: Request) -> Response:
        return super().post(request)


class BatchView(_TrackingView):
    call_type = None

    @_schema("Send up to 500 KB of calls of any type in one request", BatchInput)
    def post(self, request: Request) -> Response:
        return super().post(request)


class MetricsView(_SegmentView):
    """``POST /m``: the usage metrics Segment's browser library reports about itself.

    Accepted (200 ``{"success": true}``) and not stored: the library posts them without a write
    key, and answering 404 would only fill the shop's console with failed requests.
    """

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    throttle_classes = []

    @extend_schema(
        tags=["tracking"],
        summary="Accept the browser library's own usage metrics (not stored)",
        request=None,
        responses={200: SuccessOutput, 413: _ERRORS[413], 429: _ERRORS[429]},
    )
    def post(self, request: Request) -> Response:
        body = request._request.read(int(settings.PATRON_TRACK_MAX_EVENT_BYTES) + 1)
        if len(body) > int(settings.PATRON_TRACK_MAX_EVENT_BYTES):
            raise PayloadTooLarge("metrics over 32 KB are not accepted", code="body_too_large")
        return Response({"success": True})


def unlisted(view: type[_TrackingView]) -> type[_TrackingView]:
    """``view`` under another path, left out of the OpenAPI schema (an alias, not a new API)."""

    class Unlisted(view):  # type: ignore[valid-type,misc]  # a class made from a parameter
        @extend_schema(exclude=True)
        def post(self, request: Request) -> Response:
            response: Response = super().post(request)
            return response

    Unlisted.__name__ = Unlisted.__qualname__ = f"{view.__name__}Alias"
    return Unlisted
