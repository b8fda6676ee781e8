"""Merchant staff configure campaigns here and watch the outbox; actions call services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from commerce.models import Shopper
from core.exceptions import ApplicationError
from engagement import registry, selectors, services
from engagement.models import (
    Broadcast,
    Campaign,
    CampaignStep,
    Message,
    NpsResponse,
    ProductWatch,
    PushSubscription,
    Run,
    Segment,
    Suppression,
    Topic,
    Unsubscribe,
    WebhookEndpoint,
)


class CampaignForm(forms.ModelForm[Campaign]):
    trigger = forms.ChoiceField(choices=())

    class Meta:
        model = Campaign
        fields = [
            "name",
            "trigger",
            "trigger_options",
            "status",
            "audience",
            "segment",
            "audience_rules",
            "topic",
            "requires_consent",
            "transactional",
            "starts_at",
            "ends_at",
            "frequency_cap",
            "frequency_cap_hours",
            "quiet_hours_start",
            "quiet_hours_end",
            "control_percent",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["trigger"].choices = registry.trigger_choices()  # type: ignore[attr-defined]  # a ChoiceField: the model field has choices
        descriptions = "; ".join(
            f"{t.label}: {t.description}" for t in registry.triggers() if t.description
        )
        self.fields["trigger_options"].help_text = descriptions

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if data.get("audience") == Campaign.Audience.FILTER:
                selectors.rules_q(data.get("audience_rules") or [])
        except ApplicationError as exc:
            self.add_error("audience_rules", exc.message)
        if data.get("audience") == Campaign.Audience.SEGMENT and not data.get("segment"):
            self.add_error("segment", "choose the segment")
        return data


class StepInline(admin.StackedInline[CampaignStep, Campaign]):
    model = CampaignStep
    extra = 0
    fields = (
        "position",
        "delay",
        "channel",
        "subject",
        "body",
        "body_text",
        "link_url",
        "webhook_endpoint",
        "preview_link",
    )
    readonly_fields = ("preview_link",)

    @admin.display(description="Preview")
    def preview_link(self, step: CampaignStep) -> str:
        if not step.pk:
            return "save first"
        url = reverse("admin:engagement_campaign_step_preview", args=[step.campaign_id, step.pk])
        return format_html('<a href="{}">Preview with a shopper, send a test</a>', url)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin[Campaign]):
    form = CampaignForm
    inlines = [StepInline]
    list_display = ("name", "trigger", "status", "audience", "control_percent", "created_at")
    list_filter = ("status", "trigger")
    search_fields = ("name",)
    readonly_fields = ("results", "nps")
    actions = ["activate", "pause", "archive", "broadcast_now"]

    @admin.display(description="Results (orders within 7 days)")
    def results(self, campaign: Campaign) -> str:
        if not campaign.pk:
            return "-"
        r = selectors.campaign_results(campaign=campaign)
        return format_html(
            "treated: {} runs, {} converted ({}) · control: {} runs, {} converted ({}) · uplift {}",
            r["treatment"]["runs"],
            r["treatment"]["conversions"],
            r["treatment"]["rate"],
            r["control"]["runs"],
            r["control"]["conversions"],
            r["control"]["rate"],
            r["uplift"]["rate"],
        )

    @admin.display(description="NPS")
    def nps(self, campaign: Campaign) -> str:
        """The campaign's Net Promoter Score (promoters minus detractors), for NPS surveys."""
        if not campaign.pk or campaign.trigger != "nps_survey":
            return "-"
        r = selectors.nps_score(campaign=campaign)
        if r["score"] is None:
            return "no answers yet"
        return format_html(
            "NPS {} · {} answers: {} promoters, {} passives, {} detractors",
            r["score"],
            r["responses"],
            r["promoters"],
            r["passives"],
            r["detractors"],
        )

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Campaign], status: str) -> None:
        for campaign in queryset:
            try:
                services.campaign_status_set(campaign=campaign, status=status)
            except ApplicationError as exc:
                self.message_user(request, f"{campaign}: {exc.message}", messages.ERROR)

    @admin.action(description="Activate")
    def activate(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.ACTIVE)

    @admin.action(description="Pause (scheduled messages wait)")
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.PAUSED)

    @admin.action(description="Archive (cancel scheduled messages)")
    def archive(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.ARCHIVED)

    @admin.action(description="Broadcast to the audience now")
    def broadcast_now(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            try:
                services.broadcast_schedule(campaign=campaign)
                self.message_user(request, f"{campaign}: broadcast started")
            except ApplicationError as exc:
                self.message_user(request, f"{campaign}: {exc.message}", messages.ERROR)

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<int:campaign_id>/steps/<int:step_id>/preview/",
                self.admin_site.admin_view(self.step_preview_view),
                name="engagement_campaign_step_preview",
            )
        ]
        return custom + super().get_urls()

    def step_preview_view(
        self, request: HttpRequest, campaign_id: int, step_id: int
    ) -> HttpResponse:
        step = get_object_or_404(
            CampaignStep.objects.select_related("campaign"), pk=step_id, campaign_id=campaign_id
        )
        if not self.has_view_permission(request, step.campaign):
            return HttpResponse(status=403)
        source = request.POST if request.method == "POST" else request.GET
        shopper_id = source.get("shopper", "")
        shopper = (
            Shopper.objects.filter(pk=int(shopper_id)).first() if shopper_id.isdigit() else None
        )
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "step": step,
            "shopper": shopper,
            "title": "Preview",
        }
        if shopper_id and shopper is None:
            context["error"] = f"no shopper {shopper_id}"
        if shopper is not None:
            try:
                context["rendered"] = services.step_preview(step=step, shopper=shopper)
                if request.method == "POST" and self.has_change_permission(request, step.campaign):
                    services.step_test_send(
                        step=step, shopper=shopper, address=request.POST.get("address", "")
                    )
                    self.message_user(request, "Test sent")
            except ApplicationError as exc:
                context["error"] = exc.message
            except Exception as exc:  # a template error is the merchant's to see, not a 500
                context["error"] = f"{exc.__class__.__name__}: {exc}"
        return render(request, "admin/engagement/step_preview.html", context)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = (
        "id",
        "campaign",
        "step_position",
        "shopper",
        "channel",
        "state",
        "reason",
        "due_at",
        "sent_at",
        "opened_at",
        "clicked_at",
    )
    list_filter = ("state", "channel", "confirmed", "campaign")
    list_select_related = ("campaign", "step", "shopper")
    search_fields = ("=id", "recipient", "provider_message_id", "occurrence_key")
    raw_id_fields = ("campaign", "step", "run", "shopper")
    date_hierarchy = "due_at"
    actions = ["cancel", "requeue"]

    def get_readonly_fields(self, request: HttpRequest, obj: Message | None = None) -> list[str]:
        return [f.name for f in Message._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="step")
    def step_position(self, message: Message) -> int:
        return message.step.position

    @admin.action(description="Cancel (scheduled only)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        done = sum(services.message_cancel(message=m) for m in queryset)
        self.message_user(request, f"cancelled {done}")

    @admin.action(description="Send again (failed, skipped, cancelled)")
    def requeue(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        done = sum(services.message_requeue(message=m) for m in queryset)
        self.message_user(request, f"requeued {done}")


@admin.register(Run)
class RunAdmin(admin.ModelAdmin[Run]):
    list_display = (
        "id",
        "campaign",
        "shopper",
        "occurrence_key",
        "state",
        "stop_reason",
        "started_at",
    )
    list_filter = ("state", "campaign")
    list_select_related = ("campaign", "shopper")
    raw_id_fields = ("campaign", "shopper")
    readonly_fields = (
        "campaign",
        "shopper",
        "occurrence_key",
        "data",
        "email_to",
        "email_reply_to",
        "started_at",
        "occurred_at",
        "stopped_at",
    )


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin[Segment]):
    list_display = ("name", "kind", "computed_by", "created_at")


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin[Broadcast]):
    list_display = ("id", "campaign", "send_at", "started_at", "finished_at", "enrolled")
    readonly_fields = ("started_at", "finished_at", "enrolled")
    raw_id_fields = ("campaign",)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin[WebhookEndpoint]):
    # Links typed without a scheme are https (Django 6 default; says so before it changes).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "url", "active")


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin[Suppression]):
    list_display = ("address", "channel", "reason", "created_at")
    search_fields = ("address",)


@admin.register(Unsubscribe)
class UnsubscribeAdmin(admin.ModelAdmin[Unsubscribe]):
    list_display = ("shopper", "channel", "source", "created_at")
    raw_id_fields = ("shopper", "message")
    list_select_related = ("shopper",)


@admin.register(NpsResponse)
class NpsResponseAdmin(admin.ModelAdmin[NpsResponse]):
    list_display = ("shopper", "campaign", "score", "answered_at")
    raw_id_fields = ("message", "shopper", "campaign")
    list_select_related = ("shopper", "campaign")


@admin.register(ProductWatch)
class ProductWatchAdmin(admin.ModelAdmin[ProductWatch]):
    list_display = ("shopper", "product", "kind", "created_at", "notified_at")
    raw_id_fields = ("shopper", "product")
    list_select_related = ("shopper", "product")


admin.site.register(Topic)
admin.site.register(
    PushSubscription, raw_id_fields=("shopper",), list_display=("endpoint", "shopper", "active")
)
