"""Engagement's business operations: enrolment, the outbox, consent, tracking, the triggers' work.

Reading guide:

- ``trigger_fire`` (the service other apps call) and ``broadcast_send`` enrol shoppers in
  campaigns and write every step's message into the outbox in the same transaction; the unique
  key (campaign, step, shopper, occurrence) makes a second firing a no-op.
- ``runs_end_for_events`` stops running sequences when a trigger's end event arrives.
- ``outbox_deliver`` claims due messages in batches (``FOR UPDATE SKIP LOCKED``), re-checks
  suppression, consent, pause, topics, quiet hours, frequency caps and smart sending under a
  per-shopper channel lock, then hands each message to its channel over one reused connection, committing
  ``handed_at`` immediately before the point of no return and ``sent`` right after.
  Transactional campaigns (receipts, replies) skip the shopper's marketing choices (consent,
  unsubscribe, pause, topics, caps, smart sending) but never a suppressed address; a run's ``email_to``
  replaces the shopper's address for its email steps.
- ``outbox_sweep`` resolves what a dead worker left in ``sending``: never handed over -> sent
  again; possibly handed over -> sent again only on channels whose provider deduplicates
  (webhooks by delivery id, web push by Topic), otherwise marked sent without confirmation
  (at most once: a shopper never gets the same email twice).

The package, by sub-domain (this module re-exports every public name, so callers keep
``from engagement import services; services.trigger_fire(...)``):

- ``enrolment``: firing triggers, broadcasts, ending runs, campaign status;
- ``claim``: the outbox's claim and its send-time checks, one rule per function;
- ``delivery``: rendering, handing over to channels, leases, the sweep, requeue and cancel;
- ``offers``: broadcast offer coupons, issued at send time;
- ``flows``: flow filters, the conditional split and A/B tests of a step (their hooks in
  enrolment, the claim and delivery), in the condition language of ``conditions``;
- ``consent``: unsubscribes, preferences, suppressions, push subscriptions;
- ``tracking``: opens, clicks, NPS answers, on-site messages seen;
- ``products``: product views, "notify me" watches, restocks and price drops;
- ``periodic``: win-back, birthday and post-purchase scans;
- ``previews``: step previews and test sends for the admin;
- ``attribution``: a campaign's results per step (last touch) and its uplift against the
  control group, with 95% intervals;
- ``merges``: folding a merged shopper's engagement rows;
- ``_common``: helpers shared by the above (quiet hours, control groups, the outbox kick).
"""

from engagement.services._common import (
    email_address_clean,
    in_control_group,
    outbox_kick,
    quiet_hours_release,
    shopper_zone,
    worker_name,
)
from engagement.services.attribution import CampaignAttribution, campaign_attribution
from engagement.services.claim import outbox_claim
from engagement.services.conditions import (
    ConditionContext,
    condition_describe,
    conditions_hold,
    conditions_validate,
)
from engagement.services.consent import (
    preferences_update,
    push_subscription_save,
    shopper_for_preferences,
    shopper_unsubscribe,
    suppression_add,
    unsubscribe_by_token,
)
from engagement.services.delivery import (
    LeaseKeeper,
    message_cancel,
    message_requeue,
    outbox_deliver,
    outbox_deliver_batch,
    outbox_due_count,
    outbox_sweep,
)
from engagement.services.enrolment import (
    broadcast_check,
    broadcast_schedule,
    broadcast_send,
    broadcasts_due_send,
    campaign_status_check,
    campaign_status_set,
    run_stop,
    runs_end,
    runs_end_for_events,
    runs_stop,
    trigger_fire,
    trigger_has_active_campaigns,
)
from engagement.services.flows import (
    ab_test_decide,
    ab_test_figures,
    ab_tests_decide_due,
    flow_branches_validate,
    flow_validate,
    variant_pick,
)
from engagement.services.merges import shopper_merge_fold
from engagement.services.offers import offer_coupon_display
from engagement.services.periodic import (
    birthday_scan,
    order_since,
    post_purchase_fire,
    post_purchase_fire_for,
    post_purchase_scan,
    product_bought_since,
    win_back_scan,
)
from engagement.services.previews import (
    preview_sample_shopper,
    step_preview,
    step_test_send,
)
from engagement.services.products import (
    NotifyRequest,
    notify_request_create,
    product_changes_detect,
    product_events_q,
    product_for_properties,
    product_views_record,
    product_views_record_many,
    product_watch_create,
    products_for_properties,
)
from engagement.services.tracking import (
    link_fetch_is_human,
    message_click_record,
    message_open_record,
    nps_message,
    nps_record,
    onsite_mark_seen,
)

__all__ = [
    "CampaignAttribution",
    "ConditionContext",
    "LeaseKeeper",
    "NotifyRequest",
    "ab_test_decide",
    "ab_test_figures",
    "ab_tests_decide_due",
    "birthday_scan",
    "broadcast_check",
    "broadcast_schedule",
    "broadcast_send",
    "broadcasts_due_send",
    "campaign_attribution",
    "campaign_status_check",
    "campaign_status_set",
    "condition_describe",
    "conditions_hold",
    "conditions_validate",
    "email_address_clean",
    "flow_branches_validate",
    "flow_validate",
    "in_control_group",
    "link_fetch_is_human",
    "message_cancel",
    "message_click_record",
    "message_open_record",
    "message_requeue",
    "notify_request_create",
    "nps_message",
    "nps_record",
    "offer_coupon_display",
    "onsite_mark_seen",
    "order_since",
    "outbox_claim",
    "outbox_deliver",
    "outbox_deliver_batch",
    "outbox_due_count",
    "outbox_kick",
    "outbox_sweep",
    "post_purchase_fire",
    "post_purchase_fire_for",
    "post_purchase_scan",
    "preferences_update",
    "preview_sample_shopper",
    "product_bought_since",
    "product_changes_detect",
    "product_events_q",
    "product_for_properties",
    "product_views_record",
    "product_views_record_many",
    "product_watch_create",
    "products_for_properties",
    "push_subscription_save",
    "quiet_hours_release",
    "run_stop",
    "runs_end",
    "runs_end_for_events",
    "runs_stop",
    "shopper_for_preferences",
    "shopper_merge_fold",
    "shopper_unsubscribe",
    "shopper_zone",
    "step_preview",
    "step_test_send",
    "suppression_add",
    "trigger_fire",
    "trigger_has_active_campaigns",
    "unsubscribe_by_token",
    "variant_pick",
    "win_back_scan",
    "worker_name",
]
