from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from chat import bot, presence, selectors, services
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
from commerce.admin import PersonalDataAdminMixin


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
class ConversationAdmin(PersonalDataAdminMixin, admin.ModelAdmin[Conversation]):
    # Lists every conversation's shopper: agents work in the console, which shows them only
    # the shoppers of the conversations they handle.
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
    list_display = [
        "user",
        "status",
        "presence_now",
        "live_connections",
        "capacity",
        "last_seen_at",
    ]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    list_editable = ["capacity"]

    @admin.display(description="presence")
    def presence_now(self, row: AgentStatus) -> str:
        """What consoles and routing see: offline without a live console (chat.presence)."""
        return selectors.agent_presence(row.status, live=row.user_id in presence.live_agent_ids())

    @admin.display(description="live consoles")
    def live_connections(self, row: AgentStatus) -> int:
        return presence.live_connections().get(row.user_id, 0)


@admin.register(KnowledgeArticle)
class KnowledgeArticleAdmin(admin.ModelAdmin[KnowledgeArticle]):
    list_display = ["title", "slug", "language", "published", "updated_at"]
    list_filter = ["language", "published"]
    prepopulated_fields = {"slug": ["title"]}
    search_fields = ["title", "body"]


class PhrasesField(forms.CharField):
    """A JSON list of phrases edited as a textarea, one phrase a line."""

    widget = forms.Textarea(attrs={"rows": 12, "cols": 60})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]  # a list, not str
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class BotIntentForm(forms.ModelForm[BotIntent]):
    phrases = PhrasesField(
        help_text="Example phrases in this row's language, one a line, written as shoppers "
        "write (short forms, no accents, typos are fine). The bot learns from them when saved."
    )

    class Meta:
        model = BotIntent
        fields = ["key", "language", "kind", "phrases", "answer", "article", "active"]


class PhraseTestForm(forms.Form):
    text = forms.CharField(label="Message", max_length=1000, widget=forms.TextInput({"size": 80}))


@admin.register(BotIntent)
class BotIntentAdmin(admin.ModelAdmin[BotIntent]):
    """Intents with their example phrases per language, and a page to test a phrase."""

    form = BotIntentForm
    list_display = ["key", "language", "kind", "phrase_count", "active", "updated_at"]
    list_filter = ["kind", "language", "active"]
    search_fields = ["key"]
    raw_id_fields = ["article"]
    change_list_template = "admin/chat/botintent/change_list.html"

    @admin.display(description="Phrases")
    def phrase_count(self, obj: BotIntent) -> int:
        return len(obj.phrases or [])

    def get_urls(self) -> list[URLPattern]:
        test = path(
            "test/",
            self.admin_site.admin_view(self.test_phrase_view),
            name="chat_botintent_test",
        )
        return [test, *super().get_urls()]

    def test_phrase_view(self, request: HttpRequest) -> HttpResponse:
        """Shows what the bot understands of a phrase: the decision, the best intent with its
        score, the runner-up, the language and the rule that decided."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = PhraseTestForm(request.POST or None)
        result = None
        settings_row = services.chat_settings_get(fresh=True)
        if request.method == "POST" and form.is_valid():
            result = bot.bot_understand(text=form.cleaned_data["text"], settings_row=settings_row)
        context = {
            **self.admin_site.each_context(request),
            "title": "Test a phrase",
            "opts": self.opts,
            "form": form,
            "result": result,
            "threshold": settings_row.bot_confidence_threshold,
        }
        return TemplateResponse(request, "admin/chat/botintent/test_phrase.html", context)


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin[CannedResponse]):
    list_display = ["shortcut", "title"]


@admin.register(CsatRating)
class CsatRatingAdmin(admin.ModelAdmin[CsatRating]):
    list_display = ["conversation", "agent", "rating", "created_at"]
    list_select_related = ["conversation", "agent"]
    raw_id_fields = ["conversation", "agent"]
