"""The chat HTTP API for the agent console (docs/chat-protocol.md §4)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import metrics, selectors, services
from chat.models import Conversation
from commerce.models import WriteKey
from core.exceptions import NotFound, ValidationError


class IsAgent(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return selectors.is_agent(request.user)


class AgentView(APIView):
    permission_classes = [IsAgent]


class ConversationListApi(AgentView):
    class FilterSerializer(serializers.Serializer):
        view = serializers.ChoiceField(choices=["unassigned", "mine", "all"], default="all")
        state = serializers.ChoiceField(choices=Conversation.State.choices, required=False)
        q = serializers.CharField(required=False, allow_blank=True, max_length=200)
        limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)
        offset = serializers.IntegerField(required=False, min_value=0, default=0)

    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        qs = selectors.inbox_queryset(
            view=data["view"], agent_id=request.user.pk, state=data.get("state"), q=data.get("q")
        )
        count = qs.count()
        limit, offset = data["limit"], data["offset"]
        rows = selectors.summaries(qs[offset : offset + limit])
        base = request.build_absolute_uri(request.path)

        def page(at: int) -> str:
            return f"{base}?view={data['view']}&limit={limit}&offset={at}"

        return Response(
            {
                "count": count,
                "next": page(offset + limit) if offset + limit < count else None,
                "previous": page(max(offset - limit, 0)) if offset > 0 else None,
                "results": rows,
            }
        )


def _conversation(conversation_id: int) -> Conversation:
    conversation = Conversation.objects.select_related("shopper").filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


class MessageListApi(AgentView):
    def get(self, request: Request, conversation_id: int) -> Response:
        _conversation(conversation_id)
        try:
            after = int(request.query_params.get("after_seq", "0"))
        except ValueError:
            raise ValidationError("after_seq must be a whole number") from None
        return Response(
            selectors.messages_after(
                conversation_id=conversation_id, after_seq=max(after, 0), include_internal=True
            )
        )


class ContextApi(AgentView):
    def get(self, request: Request, conversation_id: int) -> Response:
        return Response(selectors.conversation_context(_conversation(conversation_id)))


class TranscriptApi(AgentView):
    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(required=False, allow_blank=True)

    def post(self, request: Request, conversation_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        address = services.transcript_send(
            conversation_id=conversation_id, email=data.validated_data.get("email")
        )
        return Response({"conversation_id": conversation_id, "email": address}, status=202)


class CannedResponseListApi(AgentView):
    def get(self, request: Request) -> Response:
        return Response(selectors.canned_responses())


class AgentListApi(AgentView):
    def get(self, request: Request) -> Response:
        return Response(selectors.agents_list())


def _bound(value: str | None, default: dt.datetime) -> dt.datetime:
    if not value:
        return default
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise ValidationError(f"{value!r} is not a date")
        parsed = dt.datetime.combine(day, dt.time.min)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt.UTC)


class MetricsApi(AgentView):
    def get(self, request: Request) -> Response:
        now = timezone.now()
        until = _bound(request.query_params.get("until"), now)
        since = _bound(request.query_params.get("since"), until - dt.timedelta(days=30))
        if since >= until:
            raise ValidationError("since must be before until")
        return Response(metrics.chat_metrics(since=since, until=until))


class WidgetConfigApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        key = request.query_params.get("write_key", "")
        if not WriteKey.objects.filter(key=key, active=True).exists():
            raise NotFound("Unknown write key.")
        settings_row = services.chat_settings_get()
        return Response(
            {
                "greeting": settings_row.greeting,
                "business_hours_open": services.business_hours_open(),
                "languages": settings_row.languages,
                "ws_path": "/ws/chat/",
            }
        )
