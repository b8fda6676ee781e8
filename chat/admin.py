from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from chat import services
from chat.models import (
    AgentStatus,
    BotIntent,
    BusinessHours,
    CannedResponse,
    ChatSettings,
    Conversation,
    CsatRating,
    KnowledgeArticle,
    Message,
)


@admin.register(ChatSettings)
class ChatSettingsAdmin(admin.ModelAdmin[ChatSettings]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return not ChatSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.chat_settings_invalidate()


@admin.register(BusinessHours)
class BusinessHoursAdmin(admin.ModelAdmin[BusinessHours]):
    list_display = ["weekday", "opens", "closes"]


class MessageInline(admin.TabularInline[Message, Conversation]):
    model = Message
    extra = 0
    can_delete = False
    fields = ["seq", "author_kind", "author_agent", "internal", "body", "created_at"]
    readonly_fields = ["seq", "author_kind", "author_agent", "internal", "body", "created_at"]
    ordering = ["seq"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ["id", "shopper", "state", "channel", "assigned_agent", "updated_at"]
    list_filter = ["state", "channel"]
    list_select_related = ["shopper", "assigned_agent"]
    raw_id_fields = ["shopper", "assigned_agent", "resolved_by"]
    readonly_fields = [
        "last_seq",
        "created_at",
        "updated_at",
        "queued_at",
        "handed_off_at",
        "assigned_at",
        "first_agent_response_at",
        "resolved_at",
        "state",
    ]
    search_fields = ["shopper__email", "shopper__customer_id"]
    inlines = [MessageInline]
    actions = ["resolve"]

    @admin.action(description="Resolve the selected conversations")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        for conversation in queryset:
            services.conversation_resolve(conversation_id=conversation.pk, by=request.user)
        self.message_user(request, f"Resolved {queryset.count()} conversations.", messages.SUCCESS)


@admin.register(AgentStatus)
class AgentStatusAdmin(admin.ModelAdmin[AgentStatus]):
    list_display = ["user", "status", "capacity", "connections", "last_seen_at"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    list_editable = ["capacity"]


@admin.register(KnowledgeArticle)
class KnowledgeArticleAdmin(admin.ModelAdmin[KnowledgeArticle]):
    list_display = ["title", "slug", "language", "published", "updated_at"]
    list_filter = ["language", "published"]
    prepopulated_fields = {"slug": ["title"]}
    search_fields = ["title", "body"]


@admin.register(BotIntent)
class BotIntentAdmin(admin.ModelAdmin[BotIntent]):
    list_display = ["key", "language", "kind", "active"]
    list_filter = ["kind", "language", "active"]
    raw_id_fields = ["article"]


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin[CannedResponse]):
    list_display = ["shortcut", "title"]


@admin.register(CsatRating)
class CsatRatingAdmin(admin.ModelAdmin[CsatRating]):
    list_display = ["conversation", "agent", "rating", "created_at"]
    list_select_related = ["conversation", "agent"]
    raw_id_fields = ["conversation", "agent"]
