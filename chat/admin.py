from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

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
from commerce.admin import PersonalDataAdminMixin, ShopperPrivacyAdminMixin
from core.exceptions import ApplicationError


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


class AgentChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]  # django-stubs: generic in the model and its key
    """Agents, each labelled with their presence and load ("Anna (online, 2 of 5 ...)")."""

    rows: dict[int, dict[str, Any]] = {}

    def label_from_instance(self, obj: Any) -> str:
        row = self.rows.get(obj.pk, {"status": "offline", "load": 0, "capacity": 0})
        name = selectors.agent_name(obj)
        return f"{name} ({row['status']}, {row['load']} of {row['capacity']} conversations)"


class AssignForm(forms.Form):
    """Pick the agent who answers a conversation."""

    agent = AgentChoiceField(queryset=get_user_model().objects.none())  # set per form

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["agent"]
        assert isinstance(field, AgentChoiceField)
        field.queryset = selectors.agents_queryset().order_by("username")
        field.rows = {row["id"]: row for row in selectors.agents_list()}


@admin.register(Conversation)
class ConversationAdmin(PersonalDataAdminMixin, admin.ModelAdmin[Conversation]):
    """Conversations, read-only: state changes (assign, transfer, resolve) go through the chat
    services, which check the rules (agents, capacity, presence) and tell every client."""

    # Lists every conversation's shopper: agents work in the console, which shows them only
    # the shoppers of the conversations they handle.
    list_display = ["id", "shopper", "state", "channel", "assigned_agent", "updated_at"]
    list_filter = ["state", "channel"]
    list_select_related = ["shopper", "assigned_agent"]
    raw_id_fields = ["shopper", "assigned_agent", "resolved_by"]
    search_fields = ["shopper__email", "shopper__customer_id"]
    inlines = [MessageInline]
    actions = ["resolve"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Conversation._meta.fields] + ["assignment"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a conversation starts when a shopper writes (conversation_start)

    @admin.display(description="Assignment")
    def assignment(self, conversation: Conversation) -> str:
        if not conversation.pk or conversation.state == Conversation.State.RESOLVED:
            return "-"
        url = reverse("admin:chat_conversation_assign", args=[conversation.pk])
        verb = "Transfer" if conversation.state == Conversation.State.ASSIGNED else "Assign"
        return format_html('<a class="button" href="{}">{} to an agent…</a>', url, verb)

    def get_urls(self) -> list[URLPattern]:
        assign = path(
            "<int:conversation_id>/assign/",
            self.admin_site.admin_view(self.assign_view),
            name="chat_conversation_assign",
        )
        return [assign, *super().get_urls()]

    def assign_view(self, request: HttpRequest, conversation_id: int) -> HttpResponse:
        """GET: a form to pick the agent; POST: ``services.conversation_assign`` (a transfer
        when the conversation is assigned). A refusal (not an agent, offline, at capacity,
        resolved) shows its message and changes nothing."""
        conversation = get_object_or_404(Conversation, pk=conversation_id)
        if not self.has_change_permission(request, conversation):
            raise PermissionDenied
        form = AssignForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            agent = form.cleaned_data["agent"]
            try:
                services.conversation_assign(
                    conversation_id=conversation.pk, agent=agent, by=request.user
                )
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Conversation {conversation.pk} is now with {selectors.agent_name(agent)}.",
                    messages.SUCCESS,
                )
                return redirect("admin:chat_conversation_change", conversation.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Assign {conversation}",
            "opts": self.opts,
            "conversation": conversation,
            "form": form,
        }
        return TemplateResponse(request, "admin/chat/conversation/assign.html", context)

    @admin.action(description="Resolve the selected conversations", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        resolved = 0
        for conversation in queryset:
            try:
                services.conversation_resolve(conversation_id=conversation.pk, by=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{conversation}: {exc.message}", messages.ERROR)
            else:
                resolved += 1
        self.message_user(request, f"Resolved {resolved} conversations.", messages.SUCCESS)


@admin.register(AgentStatus)
class AgentStatusAdmin(admin.ModelAdmin[AgentStatus]):
    """Agents' presence is the console's to set; staff change capacity, through the service
    (a raised capacity hands queued conversations to the agent at once)."""

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
    readonly_fields = [
        "status",
        "presence_now",
        "live_connections",
        "last_assigned_at",
        "last_seen_at",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "user"] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.agent_capacity_set(user=obj.user, capacity=obj.capacity)

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
class CsatRatingAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[CsatRating]):
    # What the shopper wrote may name them; the conversation names no one.
    shopper_fields = ()
    personal_data_fields = ("comment",)

    list_display = ["conversation", "agent", "rating", "created_at"]
    list_select_related = ["conversation", "agent"]
    raw_id_fields = ["conversation", "agent"]
