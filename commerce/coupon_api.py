"""The coupon API for a store's own checkout: check a code, and redeem it for an order.

``POST /v1/coupons/validate`` and ``POST /v1/coupons/redeem`` (also under ``/api/v1/``), with a
*server-side* write key as the HTTP Basic username, like the tracking API. A browser key is
refused (403 ``server_key_required``): anyone can read it, and with it could probe which codes
exist or use up another shopper's coupon. Limited per write key, and calls refused for their key
per client address (``PATRON_RATE_LIMITS["coupons"]``, 429 with ``Retry-After``). Errors use the project's body
``{"error": {"code", "message", "detail"}}``. The rules are ``commerce.services``'
(``coupon_check``, ``coupon_use``); these views only translate HTTP.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce import selectors, services
from commerce.api import MoneyInputField
from commerce.authentication import WriteKeyAuthentication
from commerce.models import Shopper, WriteKey
from commerce.tracking_api import request_payload
from core.api import error_response
from core.exceptions import Conflict, NotFound, PermissionDenied, ValidationError
from core.ratelimit import rate_limit_hit, request_client_address

_ERRORS = {
    400: error_response("Invalid input (nothing changed)"),
    401: error_response("Missing, unknown or inactive write key"),
    403: error_response("server_key_required: a browser write key"),
    429: error_response("Too many calls for this write key; see Retry-After"),
}


class _CouponView(APIView):
    """Server-side write key, per-key rate limit, JSON in and out."""

    authentication_classes = [WriteKeyAuthentication]
    permission_classes = [AllowAny]  # the write key is checked by the authentication
    renderer_classes = [JSONRenderer]
    throttle_classes = []
    # Read by the write-key authentication's body reader: a call's size limit (32 KB).
    call_type = "coupon"

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)
        if not isinstance(request.auth, WriteKey) or not request.auth.server_side:
            raise PermissionDenied(
                "coupons are checked and redeemed with a server-side write key",
                code="server_key_required",
            )

    rate_limit_scopes = ("coupons",)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """A call refused for its key (missing, unknown, a browser key) counts against its client
        address under ``PATRON_RATE_LIMITS["coupons"]``: probing keys is limited too."""
        try:
            super().initial(request, *args, **kwargs)
        except (AuthenticationFailed, PermissionDenied):
            address = request_client_address(request.META)
            rate_limit_hit(scope="coupons", key=("refused-key", address))
            raise

    def check_throttles(self, request: Request) -> None:
        if isinstance(request.auth, WriteKey):
            rate_limit_hit(scope="coupons", key=(request.auth.key,))

    def input(self, request: Request, serializer_class: type[serializers.Serializer[Any]]) -> Any:
        payload, _ = request_payload(request)
        serializer = serializer_class(data=payload if isinstance(payload, dict) else {})
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @staticmethod
    def shopper(data: Any) -> Shopper | None:
        return selectors.shopper_for_customer_id(customer_id=data.get("userId", ""))


class CouponValidateView(_CouponView):
    class CouponValidateInputSerializer(serializers.Serializer[Any]):
        code = serializers.CharField(max_length=64)
        userId = serializers.CharField(
            max_length=255, required=False, default="", help_text="The shopper's customer id"
        )
        subtotal = MoneyInputField(min_value=Decimal(0), help_text="The basket before discounts")

    class CouponValidateOutputSerializer(serializers.Serializer[Any]):
        valid = serializers.BooleanField()
        code = serializers.CharField()
        kind = serializers.CharField(allow_blank=True)
        value = serializers.CharField(allow_blank=True)
        discount = serializers.CharField(allow_blank=True, help_text="What it takes off")
        reason = serializers.CharField(
            allow_blank=True, help_text="Why not (coupon_not_found, coupon_used_up, ...)"
        )
        message = serializers.CharField(allow_blank=True)

    @extend_schema(
        tags=["coupons"],
        summary="Check whether a coupon code applies to a shopper's basket (nothing changes)",
        request=CouponValidateInputSerializer,
        responses={200: CouponValidateOutputSerializer, **_ERRORS},
    )
    def post(self, request: Request) -> Response:
        """200 always for a well-formed call: ``valid`` says whether the code applies, and
        ``reason`` (a ``coupon_*`` code) and ``message`` say why not."""
        data = self.input(request, self.CouponValidateInputSerializer)
        body = {"valid": False, "code": data["code"].strip().upper(), "kind": "", "value": ""}
        body |= {"discount": "", "reason": "", "message": ""}
        try:
            coupon = services.coupon_check(
                code=data["code"], subtotal=data["subtotal"], shopper=self.shopper(data)
            )
        except (NotFound, ValidationError) as exc:
            body |= {"reason": exc.code, "message": exc.message}
        else:
            discount = services.coupon_discount(coupon=coupon, subtotal=data["subtotal"])
            body |= {"valid": True, "kind": coupon.kind, "value": str(coupon.value)}
            body["discount"] = str(discount)
        return Response(self.CouponValidateOutputSerializer(body).data)


class CouponRedeemView(_CouponView):
    class CouponRedeemInputSerializer(serializers.Serializer[Any]):
        code = serializers.CharField(max_length=64)
        orderId = serializers.CharField(max_length=64, help_text="The store's order number")
        userId = serializers.CharField(
            max_length=255, required=False, default="", help_text="The shopper's customer id"
        )
        subtotal = MoneyInputField(min_value=Decimal(0), help_text="The basket before discounts")

    class CouponRedeemOutputSerializer(serializers.Serializer[Any]):
        code = serializers.CharField()
        orderId = serializers.CharField()
        amount = serializers.CharField(help_text="The discount counted")
        times_used = serializers.IntegerField()
        usage_limit = serializers.IntegerField(allow_null=True)

    @extend_schema(
        tags=["coupons"],
        summary="Use a coupon for an order (once per order number; a retry changes nothing)",
        request=CouponRedeemInputSerializer,
        responses={
            201: CouponRedeemOutputSerializer,
            200: OpenApiResponse(
                CouponRedeemOutputSerializer, description="Already redeemed for this order"
            ),
            404: error_response("coupon_not_found"),
            409: error_response(
                "Refused, nothing counted: coupon_used_up, coupon_not_yours, "
                "coupon_expired, coupon_not_started, coupon_inactive, coupon_min_spend, "
                "coupon_used_by_you"
            ),
            **_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        """Count the use; the order sent later (Order Completed naming the code) is linked to
        this redemption and counts nothing more."""
        data = self.input(request, self.CouponRedeemInputSerializer)
        number = data["orderId"]  # trimmed and non-blank (the serializer's CharField)
        try:
            redemption, created = services.coupon_use(
                code=data["code"],
                order_number=number,
                subtotal=data["subtotal"],
                shopper=self.shopper(data),
            )
        except ValidationError as exc:
            raise Conflict(exc.message, code=exc.code) from None
        coupon = redemption.coupon
        coupon.refresh_from_db(fields=["times_used"])
        body = {
            "code": coupon.code,
            "orderId": number,
            "amount": str(redemption.amount),
            "times_used": coupon.times_used,
            "usage_limit": coupon.usage_limit,
        }
        return Response(
            self.CouponRedeemOutputSerializer(body).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
