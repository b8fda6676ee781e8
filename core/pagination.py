"""The one pagination of every list endpoint: ``limit`` and ``offset``, a counted envelope.

A list answers ``{"count": int, "next": url | null, "previous": url | null, "results": [...]}``
(DRF's limit/offset shape). ``limit`` is 1 to the view's ``max_limit`` (default 50 items),
``offset`` 0 or more; anything else is 400 ``invalid`` naming the parameter, never a silent
fallback. An offset beyond ``MAX_OFFSET`` is an empty page (PostgreSQL's OFFSET stops there).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

from core.exceptions import ValidationError

MAX_OFFSET = 10**9


class Pagination(LimitOffsetPagination):
    """Limit/offset pages of at most ``max_limit`` items; bad parameters are a 400."""

    default_limit = 50
    max_limit = 500

    def __init__(self, *, max_limit: int | None = None) -> None:
        if max_limit is not None:
            self.max_limit = max_limit

    def get_limit(self, request: Request) -> int:
        limit = self._parameter(request, self.limit_query_param, self.default_limit)
        if not 1 <= limit <= self.max_limit:
            raise ValidationError(
                f"limit: Must be between 1 and {self.max_limit}.",
                code="invalid",
                extra={"limit": [f"Must be between 1 and {self.max_limit}."]},
            )
        return limit

    def get_offset(self, request: Request) -> int:
        offset = self._parameter(request, self.offset_query_param, 0)
        if offset < 0:
            raise ValidationError(
                "offset: Must be 0 or more.",
                code="invalid",
                extra={"offset": ["Must be 0 or more."]},
            )
        return min(offset, MAX_OFFSET)

    @staticmethod
    def _parameter(request: Request, name: str, default: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValidationError(
                f"{name}: A valid integer is required.",
                code="invalid",
                extra={name: ["A valid integer is required."]},
            ) from None

    def page(self, items: Any, request: Request, *, view: Any = None) -> list[Any]:
        """The requested page of ``items`` (a queryset or a list), counting them first."""
        page: list[Any] | None = self.paginate_queryset(items, request, view=view)
        assert page is not None  # the limit always has a value here
        return page


def page_parameters(*, max_limit: int = Pagination.max_limit) -> list[OpenApiParameter]:
    """The ``limit`` and ``offset`` query parameters, for ``extend_schema(parameters=...)``."""
    return [
        OpenApiParameter(
            "limit",
            int,
            description=f"Page size, 1 to {max_limit} (default {Pagination.default_limit}).",
        ),
        OpenApiParameter("offset", int, description="Items to skip (default 0)."),
    ]


def page_of(
    child: type[serializers.Serializer[Any]], name: str
) -> type[serializers.Serializer[Any]]:
    """The schema of a page of ``child`` items, a serializer class called ``name``."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": child(many=True),
        },
    )
