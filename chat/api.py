"""The chat HTTP API for the agent console (docs/chat-protocol.md §4).

One thin view per operation. Each has nested input serializers (query or body) and an output
serializer that both renders the response and describes it in ``/api/schema/``; every status
code a view can answer is listed in its ``extend_schema``. Errors have the one shape of
``core.api.exception_handler``.

Permissions (``core.permissions.StaffModelPermissions``): every view needs an active staff user
with ``chat.answer_conversations`` and, per view, ``chat.view_conversation`` (inbox, context
panel), ``chat.view_message`` (messages, transcript), ``chat.view_cannedresponse``,
``chat.view_agentstatus`` (agents) or ``chat.view_chat_metrics`` (metrics). The "Agents" group
holds all but the last. Shoppers' names, emails and phones show in the conversations assigned
to the agent, elsewhere only with ``commerce.view_shopper_personal_data``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import metrics, selectors, services
from chat.models import AgentStatus, CannedResponse, Conversation, Message
from commerce import selectors as commerce_selectors
from core.api import StaffApiView, error_response
from core.exceptions import NotFound, PermissionDenied
from core.pagination import Pagination, page_of, page_parameters
from core.permissions import StaffModelPermissions
from core.ratelimit import rate_limit_hit, request_client_address

TAGS = ["chat"]
# PostgreSQL's integer: seqs, offsets and ids beyond it cannot exist.
MAX_INT = 2**31 - 1
# The most conversations one inbox page holds.
INBOX_PAGE_MAX = 200


class AgentView(StaffApiView):
    """An agent-console endpoint: the agent permission plus the view's model permission."""

    permission_classes = [StaffModelPermissions]
    required_permissions: tuple[str, ...] = (selectors.AGENT_PERMISSION,)
    permission_model: type[Any] | None = None
    method_permissions: dict[str, tuple[str, ...]] = {}


# --- Shapes shared by several responses ---------------------------------------------------


FORBIDDEN = error_response(
    "Not signed in, or not an agent (staff with chat.answer_conversations) holding the view's "
    "permission"
)
INVALID = error_response("Invalid parameters")
NO_CONVERSATION = error_response("No such conversation")


class ChatAgentRefSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ChatAuthorSerializer(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=Message.Author.choices)
    name = serializers.CharField(allow_blank=True)
    id = serializers.IntegerField(allow_null=True, help_text="The agent's user id, else null")


class ChatMessageSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    seq = serializers.IntegerField()
    author = ChatAuthorSerializer()
    body = serializers.CharField()
    internal = serializers.BooleanField(help_text="A private note (agents only)")
    client_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()


class ChatShopperBriefSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField(allow_blank=True)
    email = serializers.CharField(allow_blank=True)
    customer_id = serializers.CharField(allow_null=True)


class ChatLastMessageSerializer(serializers.Serializer[Any]):
    seq = serializers.IntegerField()
    author_kind = serializers.ChoiceField(choices=Message.Author.choices)
    body = serializers.CharField()
    created_at = serializers.DateTimeField()


class ChatConversationSummarySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Conversation.State.choices)
    channel = serializers.ChoiceField(choices=Conversation.Channel.choices)
    shopper = ChatShopperBriefSerializer()
    assigned_agent = ChatAgentRefSerializer(allow_null=True)
    last_seq = serializers.IntegerField()
    last_message = ChatLastMessageSerializer(allow_null=True)
    queued_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    page_url = serializers.CharField(allow_blank=True)
    language = serializers.CharField(allow_blank=True)
    labels = serializers.ListField(child=serializers.CharField())
    snoozed = serializers.BooleanField()
    snoozed_until = serializers.DateTimeField(
        allow_null=True, help_text="Null while snoozed: until the shopper writes"
    )


# --- Views ------------------------------------------------------------------------------


class ConversationListApi(AgentView):
    permission_model = Conversation

    class FilterSerializer(serializers.Serializer[Any]):
        view = serializers.ChoiceField(choices=list(selectors.INBOX_VIEWS), default="all")
        # DRF's metaclass moves declared fields off the class: this does not shadow Field.label.
        label = serializers.CharField(  # type: ignore[assignment]  # see the line above
            required=False, max_length=40, help_text="Only conversations with this label"
        )
        state = serializers.ChoiceField(choices=Conversation.State.choices, required=False)
        q = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=200,
            help_text="Search in the shopper's name, email and customer id",
        )

    OutputSerializer = page_of(ChatConversationSummarySerializer, "ChatConversationPage")

    @extend_schema(
        tags=TAGS,
        summary="The agent's inbox: conversation summaries, paginated",
        parameters=[FilterSerializer, *page_parameters(max_limit=INBOX_PAGE_MAX)],
        responses={200: OutputSerializer, 400: INVALID, 403: FORBIDDEN},
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        sees_all = selectors.sees_all_personal_data(request.user)
        qs = selectors.inbox_queryset(
            view=data["view"],
            agent_id=request.user.pk,
            state=data.get("state"),
            q=data.get("q"),
            personal=sees_all,
            label=services.label_clean(data["label"]) if data.get("label") else None,
        )
        paginator = Pagination(max_limit=INBOX_PAGE_MAX)
        rows = [
            selectors.summary_for_viewer(row, viewer_id=request.user.pk, sees_all=sees_all)
            for row in selectors.summaries(paginator.page(qs, request, view=self))
        ]
        return paginator.get_paginated_response(
            ChatConversationSummarySerializer(rows, many=True).data
        )


def _conversation(conversation_id: int) -> Conversation:
    if conversation_id > MAX_INT:
        raise NotFound("No such conversation.")
    conversation = Conversation.objects.select_related("shopper").filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


CONVERSATION_ID = OpenApiParameter(
    "conversation_id", int, location=OpenApiParameter.PATH, description="The conversation"
)


class MessageListApi(AgentView):
    permission_model = Message

    class FilterSerializer(serializers.Serializer[Any]):
        after_seq = serializers.IntegerField(
            required=False,
            min_value=0,
            max_value=MAX_INT,
            default=0,
            help_text="Only messages with a greater seq",
        )
        limit = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=selectors.HISTORY_LIMIT,
            default=selectors.HISTORY_LIMIT,
            help_text="At most this many messages per page",
        )

    class OutputSerializer(serializers.Serializer[Any]):
        next = serializers.URLField(
            allow_null=True, help_text="The next page (after this page's last seq), or null"
        )
        results = ChatMessageSerializer(many=True)

        class Meta:
            ref_name = "ChatMessagePage"

    @extend_schema(
        tags=TAGS,
        summary="A conversation's messages (private notes included), ascending by seq, a page "
        "at a time from after_seq",
        parameters=[CONVERSATION_ID, FilterSerializer],
        responses={
            200: OutputSerializer,
            400: INVALID,
            403: FORBIDDEN,
            404: NO_CONVERSATION,
        },
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        """``{"next": url | null, "results": [message, …]}``: the first ``limit`` (≤ 200)
        messages with ``seq > after_seq``; ``next`` asks for the page after the last one, null
        when nothing follows. 400 for a bad ``after_seq``/``limit``, 404 for an unknown
        conversation."""
        _conversation(conversation_id)
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        limit = params.validated_data["limit"]
        messages, more = selectors.messages_page(
            conversation_id=conversation_id,
            after_seq=params.validated_data["after_seq"],
            include_internal=True,
            limit=limit,
        )
        next_url = None
        if more:
            query = urlencode({"after_seq": messages[-1]["seq"], "limit": limit})
            next_url = f"{request.build_absolute_uri(request.path)}?{query}"
        return Response(self.OutputSerializer({"next": next_url, "results": messages}).data)


class ContextApi(AgentView):
    permission_model = Conversation

    class OutputSerializer(serializers.Serializer[Any]):
        key = serializers.CharField()
        title = serializers.CharField()
        # "data" is the protocol's key. DRF's metaclass moves declared fields out of the class,
        # so this does not shadow Serializer.data at runtime; the stubs cannot know that.
        data = serializers.DictField(  # type: ignore[assignment]  # declared field, not Serializer.data: see above
            child=serializers.JSONField(), help_text="Flat; its shape belongs to the section"
        )
        error = serializers.ChoiceField(
            choices=["unavailable"],
            required=False,
            help_text="Present when the section's provider failed (data is then empty)",
        )

        class Meta:
            ref_name = "ChatContextSection"

    @extend_schema(
        tags=TAGS,
        summary="The context panel: the shopper's current page, profile, orders and sections "
        "registered by other apps, in display order",
        parameters=[CONVERSATION_ID],
        responses={200: OutputSerializer(many=True), 403: FORBIDDEN, 404: NO_CONVERSATION},
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = _conversation(conversation_id)
        personal = selectors.personal_data_visible(
            viewer_id=request.user.pk,
            sees_all=selectors.sees_all_personal_data(request.user),
            assigned_agent_id=conversation.assigned_agent_id,
        )
        sections = selectors.context_for_viewer(
            selectors.conversation_context(conversation), personal=personal
        )
        return Response(self.OutputSerializer(sections, many=True).data)


class TranscriptApi(AgentView):
    method_permissions = {"POST": ("chat.view_message",)}

    class InputSerializer(serializers.Serializer[Any]):
        email = serializers.EmailField(
            required=False,
            allow_blank=True,
            help_text="Default: the shopper's email or the follow-up address",
        )

        class Meta:
            ref_name = "ChatTranscriptRequest"

    class OutputSerializer(serializers.Serializer[Any]):
        conversation_id = serializers.IntegerField()
        email = serializers.EmailField()

        class Meta:
            ref_name = "ChatTranscriptQueued"

    @extend_schema(
        tags=TAGS,
        summary="Email the conversation's transcript (without private notes)",
        parameters=[CONVERSATION_ID],
        request=InputSerializer,
        responses={
            202: OutputSerializer,
            400: error_response("Invalid email, or no address known for the shopper"),
            403: FORBIDDEN,
            404: NO_CONVERSATION,
            415: error_response("Unsupported media type"),
            429: error_response(
                "Too many transcripts from this agent, or to this address; see Retry-After"
            ),
        },
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        _conversation(conversation_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent_id = request.user.pk
        assert isinstance(agent_id, int)  # StaffModelPermissions let only a signed-in agent in
        services.transcript_agent_rate_limit(
            agent_id=agent_id, email=data.validated_data.get("email")
        )
        address = services.transcript_send(
            conversation_id=conversation_id, email=data.validated_data.get("email")
        )
        output = {"conversation_id": conversation_id, "email": address}
        return Response(self.OutputSerializer(output).data, status=202)


class CannedResponseListApi(AgentView):
    permission_model = CannedResponse

    class OutputSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        shortcut = serializers.CharField()
        title = serializers.CharField()
        body = serializers.CharField()

        class Meta:
            ref_name = "ChatCannedResponse"

    @extend_schema(
        tags=TAGS,
        summary="Canned responses, by shortcut",
        responses={200: OutputSerializer(many=True), 403: FORBIDDEN},
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(selectors.canned_responses(), many=True).data)


class AgentListApi(AgentView):
    permission_model = AgentStatus

    class OutputSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        name = serializers.CharField()
        status = serializers.ChoiceField(choices=AgentStatus.Status.choices)
        load = serializers.IntegerField(help_text="Conversations assigned now")
        capacity = serializers.IntegerField()

        class Meta:
            ref_name = "ChatAgent"

    @extend_schema(
        tags=TAGS,
        summary="Agents with their presence and load (for transfers)",
        responses={200: OutputSerializer(many=True), 403: FORBIDDEN},
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(selectors.agents_list(), many=True).data)


# What _Bound accepts, for the schema: a date or a date-time.
BOUND_SCHEMA = {
    "oneOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]
}


class _Bound(serializers.CharField):
    """A date (midnight UTC) or an ISO 8601 date-time (naive: UTC)."""

    # Parses the text to an aware datetime: the value is not text any more.
    def to_internal_value(self, data: Any) -> dt.datetime:  # type: ignore[override]  # returns the parsed datetime, see above
        text = super().to_internal_value(data)
        try:
            parsed = parse_datetime(text)
            if parsed is None:
                day = parse_date(text)
                if day is None:
                    raise serializers.ValidationError(f"{text!r} is not a date or a date-time")
                parsed = dt.datetime.combine(day, dt.time.min)
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed, dt.UTC)
            # In UTC: PostgreSQL refuses offsets Python accepts (beyond ±15:59).
            parsed = parsed.astimezone(dt.UTC)
            # Far-off years would overflow the default 30-day window (and mean nothing here).
        except (ValueError, OverflowError):
            raise serializers.ValidationError(f"{text!r} is not a valid date") from None
        return parsed


class _FiguresSerializer(serializers.Serializer[Any]):
    conversations = serializers.IntegerField(help_text="Created in the period")
    resolved = serializers.IntegerField()
    handed_off = serializers.IntegerField()
    first_response_s = serializers.FloatField(
        allow_null=True, help_text="Mean seconds from hand-off to the first agent reply"
    )
    resolution_s = serializers.FloatField(
        allow_null=True, help_text="Mean seconds from start to resolve"
    )
    csat_count = serializers.IntegerField()
    csat_average = serializers.FloatField(allow_null=True)
    csat_satisfied_share = serializers.FloatField(
        allow_null=True, help_text="Share of ratings of 4 or 5"
    )


class ChatOverallFiguresSerializer(_FiguresSerializer):
    bot_resolution_rate = serializers.FloatField(
        allow_null=True, help_text="Share of resolved conversations no agent took part in"
    )


class ChatAgentFiguresSerializer(_FiguresSerializer):
    agent = ChatAgentRefSerializer()


class MetricsApi(AgentView):
    method_permissions = {
        "GET": (selectors.METRICS_PERMISSION,),
        "HEAD": (selectors.METRICS_PERMISSION,),
    }

    class FilterSerializer(serializers.Serializer[Any]):
        since = _Bound(required=False, help_text="Default: 30 days before until")
        until = _Bound(required=False, help_text="Default: now")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            until = attrs.get("until") or timezone.now()
            try:
                since = attrs.get("since") or until - dt.timedelta(days=30)
            except OverflowError:  # until in the first days of year 1
                raise serializers.ValidationError("until is too early") from None
            if since >= until:
                raise serializers.ValidationError("since must be before until")
            return {"since": since, "until": until}

    class OutputSerializer(serializers.Serializer[Any]):
        since = serializers.DateTimeField()
        until = serializers.DateTimeField()
        overall = ChatOverallFiguresSerializer()
        agents = ChatAgentFiguresSerializer(many=True)
        labels = serializers.DictField(
            child=serializers.IntegerField(),
            help_text="Conversations per label (each counts once under each of its labels), "
            "most frequent first",
        )

        class Meta:
            ref_name = "ChatMetrics"

    @extend_schema(
        tags=TAGS,
        summary="Bot resolution rate, first response and resolution times, CSAT; overall and "
        "per agent, over conversations created in [since, until)",
        parameters=[
            OpenApiParameter(
                name,
                BOUND_SCHEMA,
                description=f"A date (midnight UTC) or an ISO 8601 date-time; default: {default}",
            )
            for name, default in (("since", "30 days before until"), ("until", "now"))
        ],
        responses={200: OutputSerializer, 400: INVALID, 403: FORBIDDEN},
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        figures = metrics.chat_metrics(**params.validated_data)
        return Response(self.OutputSerializer(figures).data)


class WidgetConfigApi(APIView):
    """Public: the widget may call it from any shop page whose origin its write key allows.

    Calls per client address over ``PATRON_RATE_LIMITS["widget_public"]`` get 429 with
    ``Retry-After``, counted before the write key is looked up (a guessed key counts too).
    """

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    rate_limit_scopes = ("widget_public",)

    def check_throttles(self, request: Request) -> None:
        rate_limit_hit(scope="widget_public", key=(request_client_address(request.META),))

    class FilterSerializer(serializers.Serializer[Any]):
        write_key = serializers.CharField(max_length=64)
        locale = serializers.CharField(
            max_length=64,
            required=False,
            default="",
            allow_blank=True,
            help_text="The page's language (BCP 47, e.g. tr-TR); the widget sends its hello's",
        )

    class OutputSerializer(serializers.Serializer[Any]):
        greeting = serializers.CharField(help_text="In ``language``")
        business_hours_open = serializers.BooleanField()
        languages = serializers.ListField(child=serializers.CharField())
        ws_path = serializers.CharField()
        language = serializers.CharField(
            help_text="The shipped language chosen for ``locale`` (else the merchant's fallback)"
        )
        strings = serializers.DictField(
            child=serializers.CharField(),
            help_text="The widget's labels in ``language``: English msgid → translation",
        )

        class Meta:
            ref_name = "ChatWidgetConfig"

    @extend_schema(
        tags=TAGS,
        summary="The widget's start-up settings (public; CORS for the key's allowed origins)",
        parameters=[FilterSerializer],
        responses={
            200: OutputSerializer,
            400: INVALID,
            403: error_response(
                "A page on an origin the write key does not allow (origin_not_allowed)"
            ),
            404: error_response("Unknown or inactive write key"),
            429: error_response("Too many calls from this address; see Retry-After"),
        },
        auth=[],
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        self.write_key = commerce_selectors.write_key_active(key=params.validated_data["write_key"])
        if self.write_key is None:
            raise NotFound("Unknown write key.")
        if not commerce_selectors.write_key_origin_allowed(
            write_key=self.write_key, origin=request.headers.get("Origin"), host=request.get_host()
        ):
            raise PermissionDenied(
                "Pages at this origin may not use this write key.", code="origin_not_allowed"
            )
        settings_row = services.chat_settings_get()
        language = (
            services.language_normalise(params.validated_data["locale"])
            or services.language_fallback()
        )
        config = {
            "greeting": services.translate(settings_row.greeting, language=language),
            "business_hours_open": services.business_hours_open(),
            "languages": settings_row.languages,
            "ws_path": "/ws/chat/",
            "language": language,
            "strings": selectors.widget_strings(language=language),
        }
        return Response(self.OutputSerializer(config).data)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        patch_vary_headers(response, ["Origin"])
        origin = request.headers.get("Origin")
        key = getattr(self, "write_key", None)
        # Only the origins the merchant listed on this write key may read the answer from a
        # browser; Patron's own pages are same-origin and need no CORS header.
        if origin and key is not None and key.allows_origin(origin):
            response["Access-Control-Allow-Origin"] = origin
        return response
