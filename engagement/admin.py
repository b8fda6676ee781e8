"""Merchant staff configure campaigns here and watch the outbox; actions call services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from commerce.admin import ShopperPrivacyAdminMixin
from commerce.models import PERSONAL_DATA_PERMISSION, Shopper
from core.exceptions import ApplicationError
from engagement import registry, selectors, services
from engagement.models import (
    SUBSCRIBABLE_CHANNELS,
    Broadcast,
    Campaign,
    CampaignStep,
    EngagementSettings,
    Message,
    NpsResponse,
    ProductWatch,
    PushSubscription,
    Run,
    Segment,
    StepTest,
    StepVariant,
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
            "smart_sending",
            "control_percent",
            "flow_filters",
            "split_condition",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in ("flow_filters", "split_condition"):
            own = self.fields[field].help_text
            self.fields[field].help_text = f"{own}. {_CONDITIONS_HELP}"
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
        for field, name in (("flow_filters", "flow filters"), ("split_condition", "split")):
            if field in data:
                if data[field] is None:  # an emptied box: no conditions, not SQL NULL
                    data[field] = []
                try:
                    services.conditions_validate(data[field], field=name)
                except ApplicationError as exc:
                    self.add_error(field, exc.message)
        return data


_CONDITIONS_HELP = (
    "A list of conditions, all of which must hold, e.g. "
    '[{"type": "orders", "op": "eq", "value": 0, "since": "flow_start"}, '
    '{"type": "email", "metric": "opened", "op": "gte", "value": 1, "days": 90}, '
    '{"type": "event", "event": "Product Viewed", "op": "eq", "value": 0, "days": 7}, '
    '{"type": "property", "field": "country", "op": "eq", "value": "LV"}, '
    '{"type": "any", "conditions": [...]}]. Counts compare with op eq, ne, gt, gte, lt or lte '
    'over "since": "flow_start", "days": N, or all history.'
)


def _rate(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.1%})" if whole else str(part)


def _results_html(result: services.CampaignAttribution) -> str:
    """The campaign page's results: a table of steps, the uplift, and its reading."""
    days = result.window.days
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td></tr>",
        (
            (
                f"{step.position}. {step.subject}" if step.subject else step.position,
                step.channel,
                step.sent,
                _rate(step.opened, step.sent),
                _rate(step.clicked, step.sent),
                _rate(step.converted, step.sent),
                step.orders,
                f"{step.revenue:.2f}",
                _rate(step.unsubscribed, step.sent),
            )
            for step in result.steps
        ),
    )
    table = format_html(
        '<table class="campaign-results"><thead><tr><th>Step</th><th>Channel</th><th>Sent</th>'
        "<th>Opened</th><th>Clicked</th><th>Converted</th><th>Orders</th><th>Revenue</th>"
        "<th>Unsubscribed</th></tr></thead><tbody>{}</tbody></table>"
        "<p>Converted: recipients with an order within {} days of opening or clicking the "
        "step's message (each order credited to the last message touched).</p>",
        rows,
        days,
    )
    uplift = result.uplift
    figures = format_html(
        "<p>Uplift (orders within {} days of enrolment): targeted {} of {} shoppers ordered, "
        "control group {} of {}.</p>",
        days,
        uplift.treated.converted,
        uplift.treated.runs,
        uplift.control.converted,
        uplift.control.runs,
    )
    if uplift.interval is not None and uplift.absolute is not None:
        relative = f"{uplift.relative:+.1%}" if uplift.relative is not None else "n/a"
        figures += format_html(
            "<p>Conversion uplift {} points (95% interval {} to {}, Newcombe), relative {}.</p>",
            f"{uplift.absolute * 100:+.2f}",
            f"{uplift.interval[0] * 100:+.2f}",
            f"{uplift.interval[1] * 100:+.2f}",
            relative,
        )
    if uplift.revenue is not None and uplift.incremental_revenue_interval is not None:
        figures += format_html(
            "<p>Revenue per recipient {} (95% interval {} to {}, Welch); "
            "incremental revenue {} (95% interval {} to {}).</p>",
            f"{uplift.revenue.difference:+.2f}",
            f"{uplift.revenue.low:+.2f}",
            f"{uplift.revenue.high:+.2f}",
            f"{uplift.incremental_revenue:.2f}",
            f"{uplift.incremental_revenue_interval[0]:.2f}",
            f"{uplift.incremental_revenue_interval[1]:.2f}",
        )
    return format_html("{}{}<p><strong>{}</strong></p>", table, figures, result.reading)


class StepInlineFormSet(forms.BaseInlineFormSet):  # type: ignore[type-arg]  # django-stubs: generic in three models, Django's is not
    """Refuses to leave an active campaign without steps (``services.campaign_status_check``)
    and steps whose branches do not match the campaign's split."""

    def clean(self) -> None:
        super().clean()
        remaining = sum(
            1
            for form in self.forms
            if getattr(form, "cleaned_data", None)
            and not form.cleaned_data.get("DELETE")
            and (form.instance.pk or form.has_changed())
        )
        try:
            services.campaign_status_check(status=self.instance.status, step_count=remaining)
        except ApplicationError as exc:
            raise forms.ValidationError(
                f"{exc.message}: pause or archive it before removing its last step."
            ) from None
        # The steps' branches must match the campaign's split (``flow_branches_validate``).
        steps = [
            (form.cleaned_data["position"], form.cleaned_data.get("branch") or "")
            for form in self.forms
            if getattr(form, "cleaned_data", None)
            and not form.cleaned_data.get("DELETE")
            and "position" in form.cleaned_data
        ]
        try:
            services.flow_branches_validate(
                has_split=bool(self.instance.split_condition), steps=steps
            )
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None


class StepInline(admin.StackedInline[CampaignStep, Campaign]):
    model = CampaignStep
    formset = StepInlineFormSet
    extra = 0
    fields = (
        "position",
        "branch",
        "delay",
        "channel",
        "subject",
        "body",
        "body_text",
        "link_url",
        "webhook_endpoint",
        "preview_link",
        "ab_test_link",
    )
    readonly_fields = ("preview_link", "ab_test_link")

    @admin.display(description="A/B test")
    def ab_test_link(self, step: CampaignStep) -> str:
        if not step.pk:
            return "save first"
        test = StepTest.objects.filter(step=step).select_related("winner").first()
        if test is None:
            url = reverse("admin:engagement_steptest_add") + f"?step={step.pk}"
            return format_html('<a href="{}">Test variants of this step</a>', url)
        url = reverse("admin:engagement_steptest_change", args=[test.pk])
        if test.decision:
            status = test.decision
        elif test.started_at:
            status = f"running since {test.started_at:%Y-%m-%d %H:%M}"
        else:
            status = "not started"
        return format_html('<a href="{}">A/B test</a>: {}', url, status)

    @admin.display(description="Preview")
    def preview_link(self, step: CampaignStep) -> str:
        if not step.pk:
            return "save first"
        url = reverse("admin:engagement_campaign_step_preview", args=[step.campaign_id, step.pk])
        return format_html('<a href="{}">Preview with a shopper, send a test</a>', url)


# The status changes the change page offers: (status, button label, what it does).
STATUS_ACTIONS = {
    Campaign.Status.ACTIVE: ("Activate", "Matching shoppers start receiving its steps."),
    Campaign.Status.PAUSED: ("Pause", "Scheduled messages wait until it is active again."),
    Campaign.Status.ARCHIVED: (
        "Archive",
        "Every scheduled message that is not yet sent is cancelled; this cannot be undone.",
    ),
}


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin[Campaign]):
    """Campaigns. The status is read-only in the form: it changes through the buttons and
    actions, which call ``services.campaign_status_set`` (a step to run; archiving cancels
    scheduled messages) and show the merchant its refusal."""

    form = CampaignForm
    inlines = [StepInline]
    list_display = ("name", "trigger", "status", "audience", "control_percent", "created_at")
    list_filter = ("status", "trigger")
    search_fields = ("name",)
    readonly_fields = ("status", "status_actions", "results", "nps")
    actions = ["activate", "pause", "archive", "broadcast_now"]

    @admin.display(description="Results")
    def results(self, campaign: Campaign) -> str:
        """Each step's funnel and revenue, and the uplift against the control group."""
        if not campaign.pk:
            return "-"
        return _results_html(services.campaign_attribution(campaign=campaign))

    @admin.display(description="Change status")
    def status_actions(self, campaign: Campaign) -> str:
        if not campaign.pk:
            return "A new campaign starts as a draft: add its steps, save, then activate it."
        return format_html_join(
            " ",
            '<a class="button" href="{}">{}</a>',
            (
                (reverse("admin:engagement_campaign_status", args=[campaign.pk, status]), label)
                for status, (label, _) in STATUS_ACTIONS.items()
                if status != campaign.status
            ),
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
            self._status_set_one(request, campaign, status)

    def _status_set_one(self, request: HttpRequest, campaign: Campaign, status: str) -> bool:
        try:
            cancelled = services.campaign_status_set(campaign=campaign, status=status)
        except ApplicationError as exc:
            self.message_user(request, f"{campaign}: {exc.message}", messages.ERROR)
            return False
        done = f"{campaign}: {Campaign.Status(status).label.split(' (')[0].lower()}"
        if status == Campaign.Status.ARCHIVED:
            done += f", {cancelled} scheduled messages cancelled"
        self.message_user(request, done, messages.SUCCESS)
        return True

    @admin.action(description="Activate", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.ACTIVE)

    @admin.action(description="Pause (scheduled messages wait)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.PAUSED)

    @admin.action(description="Archive (cancel scheduled messages)…", permissions=["change"])
    def archive(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> HttpResponse | None:
        """Asks first (a page listing what each campaign would cancel), then archives."""
        if request.POST.get("confirm") != "yes":
            campaigns = list(queryset)
            counts = selectors.campaign_scheduled_counts(campaign_ids=[c.pk for c in campaigns])
            context = {
                **self.admin_site.each_context(request),
                "title": "Archive these campaigns?",
                "opts": self.opts,
                "rows": [(c, counts[c.pk]) for c in campaigns],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(
                request, "admin/engagement/campaign/archive_confirm.html", context
            )
        self._set_status(request, queryset, Campaign.Status.ARCHIVED)
        return None

    @admin.action(description="Broadcast to the audience now", permissions=["change"])
    def broadcast_now(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            try:
                services.broadcast_schedule(campaign=campaign)
                self.message_user(request, f"{campaign}: broadcast started")
            except ApplicationError as exc:
                self.message_user(request, f"{campaign}: {exc.message}", messages.ERROR)

    def status_view(self, request: HttpRequest, campaign_id: int, status: str) -> HttpResponse:
        """GET: what the change would do (archiving: how many messages it cancels), with a
        confirm button; POST: ``services.campaign_status_set``, then back to the campaign with
        the outcome or the refusal (nothing changed)."""
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        if status not in STATUS_ACTIONS:
            raise Http404("no such status")
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        if request.method == "POST":
            self._status_set_one(request, campaign, status)
            return redirect("admin:engagement_campaign_change", campaign.pk)
        label, effect = STATUS_ACTIONS[Campaign.Status(status)]
        context = {
            **self.admin_site.each_context(request),
            "title": f"{label} {campaign}?",
            "opts": self.opts,
            "campaign": campaign,
            "label": label,
            "effect": effect,
            "scheduled": selectors.campaign_scheduled_counts(campaign_ids=[campaign.pk])[
                campaign.pk
            ],
            "archiving": status == Campaign.Status.ARCHIVED,
        }
        return TemplateResponse(request, "admin/engagement/campaign/status_confirm.html", context)

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<int:campaign_id>/status/<str:status>/",
                self.admin_site.admin_view(self.status_view),
                name="engagement_campaign_status",
            ),
            path(
                "<int:campaign_id>/steps/<int:step_id>/preview/",
                self.admin_site.admin_view(self.step_preview_view),
                name="engagement_campaign_step_preview",
            ),
        ]
        return custom + super().get_urls()

    def step_preview_view(
        self, request: HttpRequest, campaign_id: int, step_id: int
    ) -> HttpResponse:
        """The step rendered for a shopper, and a test send of it. A message rendered for a
        real shopper (``?shopper=<id>``) is their personal data: it needs
        ``commerce.view_shopper_personal_data`` (403 without); everyone may preview with the
        made-up sample shopper (no ``shopper``, or ``shopper=sample``)."""
        step = get_object_or_404(
            CampaignStep.objects.select_related("campaign"), pk=step_id, campaign_id=campaign_id
        )
        if not self.has_view_permission(request, step.campaign):
            return HttpResponse(status=403)
        may_see_shoppers = request.user.has_perm(PERSONAL_DATA_PERMISSION)
        source = request.POST if request.method == "POST" else request.GET
        shopper_id = source.get("shopper", "").strip()
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "step": step,
            "title": "Preview",
            "may_see_shoppers": may_see_shoppers,
        }
        shopper: Shopper | None
        if shopper_id in ("", "sample"):
            shopper = services.preview_sample_shopper()
            context["sample"] = True
        elif not may_see_shoppers:
            return HttpResponse(
                "Previewing with a real shopper shows their personal data: it needs the "
                "permission to view shoppers' personal data. Preview with the sample shopper.",
                status=403,
                content_type="text/plain",
            )
        else:
            shopper = (
                Shopper.objects.filter(pk=int(shopper_id)).first() if shopper_id.isdigit() else None
            )
            if shopper is None:
                context["error"] = f"no shopper {shopper_id}"
        context["shopper"] = shopper
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


class StepVariantInline(admin.TabularInline[StepVariant, StepTest]):
    model = StepVariant
    extra = 2
    fields = ("label", "weight", "subject", "body", "body_text")


@admin.register(StepTest)
class StepTestAdmin(admin.ModelAdmin[StepTest]):
    """A/B tests of campaign steps: variants, their figures and the winner."""

    inlines = [StepVariantInline]
    list_display = ("__str__", "metric", "started_at", "winner", "decided_at")
    list_select_related = ("step__campaign", "winner")
    raw_id_fields = ("step",)
    fields = (
        "step",
        "metric",
        "decide_after",
        "started_at",
        "winner",
        "decided_at",
        "decision",
        "figures",
    )
    actions = ["decide_now"]

    def get_readonly_fields(self, request: HttpRequest, obj: StepTest | None = None) -> list[str]:
        fixed = ["started_at", "winner", "decided_at", "decision", "figures"]
        return ["step", *fixed] if obj is not None else fixed

    @admin.display(description="Figures per variant")
    def figures(self, test: StepTest) -> str:
        if not test.pk:
            return "-"

        def pct(rate: Any) -> str:
            return "-" if rate is None else f"{rate * 100:.1f}%"

        rows = format_html_join(
            "",
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td>"
            "<td>{} ({})</td></tr>",
            (
                (
                    f["label"],
                    " (winner)" if f["winner"] else "",
                    f["weight"],
                    f["sent"],
                    f["opened"],
                    pct(f["open_rate"]),
                    f["clicked"],
                    pct(f["click_rate"]),
                    f["converted"],
                    pct(f["conversion_rate"]),
                )
                for f in services.ab_test_figures(test=test)
            ),
        )
        return format_html(
            "<table><tr><th>variant</th><th>weight</th><th>sent</th><th>opened</th>"
            "<th>clicked</th><th>converted</th></tr>{}</table>",
            rows,
        )

    @admin.action(description="Choose the winner now", permissions=["change"])
    def decide_now(self, request: HttpRequest, queryset: QuerySet[StepTest]) -> None:
        for test in queryset:
            winner = services.ab_test_decide(test=test)
            self.message_user(request, f"{test}: {winner or 'no variants'}")


@admin.register(Message)
class MessageAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[Message]):
    # What was sent is written for the shopper (their name, links): personal data.
    personal_data_fields = ("recipient", "subject", "body", "clicked_url", "last_error")

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
        "variant",
    )
    list_filter = ("state", "channel", "confirmed", "campaign")
    list_select_related = ("campaign", "step", "shopper", "variant")
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

    @admin.action(description="Cancel (scheduled only)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        done = sum(services.message_cancel(message=m) for m in queryset)
        self.message_user(request, f"cancelled {done}")

    @admin.action(description="Send again (failed, skipped, cancelled)", permissions=["change"])
    def requeue(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        done = sum(services.message_requeue(message=m) for m in queryset)
        self.message_user(request, f"requeued {done}")


@admin.register(Run)
class RunAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[Run]):
    """Runs are read-only: a trigger starts them, its end condition or the "Stop" action
    (``services.runs_stop``, which cancels their scheduled messages) ends them."""

    # The trigger's data may carry what a shopper typed (a form's address, a message).
    personal_data_fields = ("data", "email_to", "email_reply_to")

    list_display = (
        "id",
        "campaign",
        "shopper",
        "occurrence_key",
        "state",
        "stop_reason",
        "branch",
        "started_at",
    )
    list_filter = ("state", "campaign")
    list_select_related = ("campaign", "shopper")
    raw_id_fields = ("campaign", "shopper")
    actions = ["stop"]

    def get_readonly_fields(self, request: HttpRequest, obj: Run | None = None) -> list[str]:
        return [f.name for f in Run._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Stop (cancel their scheduled messages)", permissions=["change"])
    def stop(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        stopped, cancelled = services.runs_stop(
            run_ids=list(queryset.values_list("pk", flat=True)), reason="stopped by staff"
        )
        self.message_user(
            request, f"stopped {stopped} runs, cancelled {cancelled} scheduled messages"
        )


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin[Segment]):
    list_display = ("name", "kind", "computed_by", "created_at")


class BroadcastForm(forms.ModelForm[Broadcast]):
    class Meta:
        model = Broadcast
        fields = ["campaign", "send_at"]

    def clean_campaign(self) -> Campaign:
        campaign: Campaign = self.cleaned_data["campaign"]
        try:
            services.broadcast_check(campaign=campaign)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None
        return campaign


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin[Broadcast]):
    """A broadcast is scheduled through ``services.broadcast_schedule`` (an active campaign;
    sent at once when due) and read-only afterwards."""

    form = BroadcastForm
    list_display = ("id", "campaign", "send_at", "started_at", "finished_at", "enrolled")
    raw_id_fields = ("campaign",)

    def get_readonly_fields(self, request: HttpRequest, obj: Broadcast | None = None) -> list[str]:
        if obj is None:
            return ["started_at", "finished_at", "enrolled"]
        return [f.name for f in Broadcast._meta.fields]

    def save_model(self, request: HttpRequest, obj: Broadcast, form: Any, change: bool) -> None:
        if change:
            return  # every field is read-only once scheduled
        scheduled = services.broadcast_schedule(campaign=obj.campaign, send_at=obj.send_at)
        obj.pk = scheduled.pk
        obj.refresh_from_db()


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin[WebhookEndpoint]):
    # Links typed without a scheme are https (Django 6 default; says so before it changes).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "url", "active")


@admin.register(Suppression)
class SuppressionAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[Suppression]):
    """Suppressions are added through ``services.suppression_add`` (the address normalised as
    the send-time check compares it); read-only once added, deleted to lift them."""

    shopper_fields = ()
    personal_data_fields = ("address",)

    list_display = ("address", "channel", "reason", "created_at")
    search_fields = ("address",)

    def get_readonly_fields(
        self, request: HttpRequest, obj: Suppression | None = None
    ) -> list[str]:
        return ["created_at"] if obj is None else [f.name for f in Suppression._meta.fields]

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        if change:
            return  # read-only once added
        services.suppression_add(channel=obj.channel, address=obj.address, reason=obj.reason)
        address = obj.address.strip()
        saved = Suppression.objects.filter(channel=obj.channel, address__iexact=address).first()
        if saved is not None:
            obj.pk = saved.pk
            obj.refresh_from_db()


class UnsubscribeForm(forms.ModelForm[Unsubscribe]):
    channel = forms.ChoiceField(
        choices=[(c.value, c.label) for c in SUBSCRIBABLE_CHANNELS],
        help_text="Drops the shopper's consent and skips what is scheduled on this channel.",
    )

    class Meta:
        model = Unsubscribe
        fields = ["shopper", "channel"]


@admin.register(Unsubscribe)
class UnsubscribeAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[Unsubscribe]):
    """Unsubscribing a shopper here goes through ``services.shopper_unsubscribe`` (consent
    dropped, scheduled marketing skipped); a recorded unsubscribe is read-only."""

    form = UnsubscribeForm
    list_display = ("shopper", "channel", "source", "created_at")
    raw_id_fields = ("shopper", "message")
    list_select_related = ("shopper",)

    def get_readonly_fields(
        self, request: HttpRequest, obj: Unsubscribe | None = None
    ) -> list[str]:
        return [] if obj is None else [f.name for f in Unsubscribe._meta.fields]

    def save_model(self, request: HttpRequest, obj: Unsubscribe, form: Any, change: bool) -> None:
        if change:
            return  # read-only once recorded
        services.shopper_unsubscribe(shopper=obj.shopper, channel=obj.channel, source="admin")
        obj.pk = Unsubscribe.objects.get(shopper=obj.shopper, channel=obj.channel).pk
        obj.refresh_from_db()


@admin.register(NpsResponse)
class NpsResponseAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[NpsResponse]):
    list_display = ("shopper", "campaign", "score", "answered_at")
    raw_id_fields = ("message", "shopper", "campaign")
    list_select_related = ("shopper", "campaign")


@admin.register(ProductWatch)
class ProductWatchAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[ProductWatch]):
    """Shoppers' "notify me" requests, read-only: the widget creates them
    (``services.notify_request_create``), restocks and price drops notify them."""

    list_display = ("shopper", "product", "kind", "created_at", "notified_at")
    raw_id_fields = ("shopper", "product")
    list_select_related = ("shopper", "product")

    def get_readonly_fields(
        self, request: HttpRequest, obj: ProductWatch | None = None
    ) -> list[str]:
        return [f.name for f in ProductWatch._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(EngagementSettings)
class EngagementSettingsAdmin(admin.ModelAdmin[EngagementSettings]):
    """The store's one row of engagement settings: smart sending and the attribution window."""

    list_display = ("__str__", "smart_sending_hours", "attribution_window_days", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not EngagementSettings.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(
        self, request: HttpRequest, obj: EngagementSettings | None = None
    ) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: EngagementSettings, form: Any, change: bool
    ) -> None:
        obj.pk = 1  # the one row every reader looks up
        super().save_model(request, obj, form, change)


admin.site.register(Topic)


@admin.register(PushSubscription)
class PushSubscriptionAdmin(ShopperPrivacyAdminMixin, admin.ModelAdmin[PushSubscription]):
    """Browsers' push subscriptions; the endpoint and keys address one shopper's device."""

    personal_data_fields = ("endpoint", "p256dh", "auth")
    # Links typed without a scheme are https (Django 6 default; says so before it changes).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("id", "endpoint", "shopper", "active")
    raw_id_fields = ("shopper",)
