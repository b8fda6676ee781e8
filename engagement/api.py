"""The widget's engagement API: "notify me" requests, on-site messages, push subscriptions.

Callers identify the store with its write key as the HTTP Basic username (as the tracking API
does) and the shopper with ``anonymous_id``, and a logged-in customer with ``user_id`` and its
proof ``user_hash`` (docs/identity.md): a ``user_id`` without valid proof acts on the anonymous
shopper only. One thin view per operation.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.cache import patch_vary_headers
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce import selectors as commerce_selectors
from commerce.authentication import WriteKeyAuthentication
from commerce.models import WriteKey
from commerce.visitor_api import VisitorIdentitySerializer, visitor_shopper
from core.api import error_responses
from core.exceptions import NotFound, PermissionDenied
from core.ratelimit import rate_limit_hit, request_client_address
from engagement import selectors, services
from engagement.models import ProductWatch


class HasWriteKey(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        # A CORS preflight carries no credentials: the key is checked at the call itself.
        return request.method == "OPTIONS" or isinstance(request.auth, WriteKey)


_CORS_METHODS = "GET, POST, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type"


class WidgetCorsApi(APIView):
    """CORS for the widget's calls from shop pages (docs: Fetch standard, CORS protocol).

    A preflight (OPTIONS) carries no key, so it is answered for any Origin with the methods and
    headers the widget uses; the call itself is then decided by its key
    (``commerce.selectors.write_key_origin_allowed``: pages on origins other than Patron's own
    and the key's ``allowed_origins`` get 403 ``origin_not_allowed``) and is answered with
    ``Access-Control-Allow-Origin`` only for an origin the key lists.
    """

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Response:
        return Response(status=status.HTTP_204_NO_CONTENT)

    def cors_headers(self, request: Request, response: Response) -> None:
        patch_vary_headers(response, ["Origin"])
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            allowed = origin
            response["Access-Control-Allow-Methods"] = _CORS_METHODS
            response["Access-Control-Allow-Headers"] = _CORS_HEADERS
            response["Access-Control-Max-Age"] = "86400"
        else:
            key = request.auth if isinstance(request.auth, WriteKey) else None
            allowed = commerce_selectors.write_key_cors_origin(write_key=key, origin=origin)
        if allowed:
            response["Access-Control-Allow-Origin"] = allowed


class WidgetApi(WidgetCorsApi):
    authentication_classes = [WriteKeyAuthentication]
    permission_classes = [HasWriteKey]
    rate_limit_scopes = ("widget",)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        try:
            super().initial(request, *args, **kwargs)
        except (AuthenticationFailed, NotAuthenticated):
            # No key, or a wrong one: counted per client address alone, so guessing is limited.
            rate_limit_hit(
                scope="widget", key=("no-write-key", request_client_address(request.META))
            )
            raise
        if request.method == "OPTIONS":
            return
        key = request.auth
        assert isinstance(key, WriteKey)
        if not commerce_selectors.write_key_origin_allowed(
            write_key=key, origin=request.headers.get("Origin"), host=request.get_host()
        ):
            raise PermissionDenied(
                "Pages at this origin may not use this write key.", code="origin_not_allowed"
            )

    def check_throttles(self, request: Request) -> None:
        """Calls per write key and client address over ``PATRON_RATE_LIMITS["widget"]``: 429;
        CORS preflights (they carry no key) per client address."""
        address = request_client_address(request.META)
        if isinstance(request.auth, WriteKey):
            rate_limit_hit(scope="widget", key=(request.auth.key, address))
        else:
            rate_limit_hit(scope="widget", key=("no-write-key", address))

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        self.cors_headers(request, response)
        return response


_ERRORS = error_responses(400, 401, 403, 404, 429)


class EngagementIdentitySerializer(VisitorIdentitySerializer):
    """The shopper: ``anonymous_id``, and ``user_id`` only with its ``user_hash`` (see
    ``commerce.visitor_api``); an unproven ``user_id`` acts on the anonymous shopper only."""


class NotifyRequestApi(WidgetApi):
    class NotifyRequestInputSerializer(EngagementIdentitySerializer):
        sku = serializers.CharField(max_length=64)
        kind = serializers.ChoiceField(choices=ProductWatch.Kind.choices)
        email = serializers.EmailField(required=False)

    class NotifyRequestOutputSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        sku = serializers.CharField()
        kind = serializers.CharField()
        created = serializers.BooleanField()

    @extend_schema(
        operation_id="engagement_notify_request_create",
        summary="Ask to be told when a product is back in stock or cheaper",
        request=NotifyRequestInputSerializer,
        responses={
            201: NotifyRequestOutputSerializer,
            200: NotifyRequestOutputSerializer,
            **_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.NotifyRequestInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("email"):
            # A typed address will be mailed: limited per sender and per recipient.
            rate_limit_hit(scope="email_sender", key=(request_client_address(request.META),))
            rate_limit_hit(scope="email_recipient", key=(data["email"].strip().lower(),))
        notify = services.notify_request_create(
            sku=data["sku"],
            kind=data["kind"],
            anonymous_id=data.get("anonymous_id"),
            customer_id=data.get("user_id"),
            proof=data.get("user_hash"),
            email=data.get("email"),
        )
        created = notify.created
        body = {
            "id": notify.watch.pk,
            "sku": notify.sku,
            "kind": notify.watch.kind,
            "created": created,
        }
        return Response(
            self.NotifyRequestOutputSerializer(body).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class OnsiteMessagesApi(WidgetApi):
    class OnsiteMessageOutputSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        title = serializers.CharField(source="subject")
        body = serializers.CharField()
        sent_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="engagement_onsite_messages_list",
        summary="On-site messages waiting for the shopper",
        parameters=[
            OpenApiParameter("anonymous_id", str, required=False),
            OpenApiParameter("user_id", str, required=False),
            OpenApiParameter("user_hash", str, required=False),
        ],
        responses={
            200: inline_serializer(
                name="OnsiteMessageList",
                fields={"results": OnsiteMessageOutputSerializer(many=True)},
            ),
            **_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        identity = EngagementIdentitySerializer(data=request.query_params)
        identity.is_valid(raise_exception=True)
        shopper = visitor_shopper(identity.validated_data, create=False)
        messages = selectors.onsite_messages_pending(shopper=shopper) if shopper else []
        return Response({"results": self.OnsiteMessageOutputSerializer(messages, many=True).data})


class OnsiteMessageSeenApi(WidgetApi):
    class OnsiteMessageSeenOutputSerializer(serializers.Serializer[Any]):
        seen = serializers.BooleanField()

    @extend_schema(
        operation_id="engagement_onsite_message_seen",
        summary="Mark an on-site message as shown",
        request=EngagementIdentitySerializer,
        responses={200: OnsiteMessageSeenOutputSerializer, **_ERRORS},
    )
    def post(self, request: Request, message_id: int) -> Response:
        identity = EngagementIdentitySerializer(data=request.data)
        identity.is_valid(raise_exception=True)
        shopper = visitor_shopper(identity.validated_data, create=False)
        if shopper is None:
            raise NotFound("no such message")
        seen = services.onsite_mark_seen(shopper=shopper, message_id=message_id)
        return Response({"seen": seen})


class PushSubscriptionApi(WidgetApi):
    class PushSubscriptionInputSerializer(EngagementIdentitySerializer):
        endpoint = serializers.URLField(max_length=1000)
        keys = inline_serializer(
            name="PushSubscriptionKeys",
            fields={
                "p256dh": serializers.CharField(max_length=200),
                "auth": serializers.CharField(max_length=100),
            },
        )

    class PushSubscriptionOutputSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        active = serializers.BooleanField()

    @extend_schema(
        operation_id="engagement_push_subscription_create",
        summary="Save a browser's push subscription for the shopper",
        request=PushSubscriptionInputSerializer,
        responses={201: PushSubscriptionOutputSerializer, **_ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = self.PushSubscriptionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        subscription = services.push_subscription_save(
            endpoint=data["endpoint"],
            p256dh=data["keys"]["p256dh"],
            auth=data["keys"]["auth"],
            anonymous_id=data.get("anonymous_id"),
            customer_id=data.get("user_id"),
            proof=data.get("user_hash"),
        )
        return Response(
            self.PushSubscriptionOutputSerializer(
                {"id": subscription.pk, "active": subscription.active}
            ).data,
            status=status.HTTP_201_CREATED,
        )


class PushKeyApi(WidgetCorsApi):
    """Public: the VAPID public key; calls per client address over
    ``PATRON_RATE_LIMITS["widget_public"]`` get 429 with ``Retry-After``."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    rate_limit_scopes = ("widget_public",)

    def check_throttles(self, request: Request) -> None:
        rate_limit_hit(scope="widget_public", key=(request_client_address(request.META),))

    class PushKeyOutputSerializer(serializers.Serializer[Any]):
        public_key = serializers.CharField(allow_blank=True)

    @extend_schema(
        operation_id="engagement_push_key",
        summary="The VAPID public key browsers subscribe with",
        responses={200: PushKeyOutputSerializer, **error_responses(429)},
        auth=[],
    )
    def get(self, request: Request) -> Response:
        return Response({"public_key": settings.PATRON_VAPID_PUBLIC_KEY})

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        self.cors_headers(request, response)
        # The public key is public: any page may read it.
        if request.method != "OPTIONS":
            response["Access-Control-Allow-Origin"] = "*"
        return response
