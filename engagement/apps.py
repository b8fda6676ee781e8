from django.apps import AppConfig


class EngagementConfig(AppConfig):
    name = "engagement"
    verbose_name = "Engagement: campaigns and messages"

    def ready(self) -> None:
        from commerce.registry import (
            ALL_EVENTS,
            register_event_handler,
            register_shopper_merge_handler,
        )
        from engagement import services, triggers

        triggers.register()
        register_event_handler("$identify", triggers.on_identify)
        register_event_handler("Product Viewed", triggers.on_product_viewed)
        register_event_handler("Order Completed", triggers.on_order_completed)
        register_event_handler("Product Updated", triggers.on_product_updated)
        # Any event may end a running sequence of a trigger registered by any app.
        register_event_handler(ALL_EVENTS, services.runs_end_for_events)
        register_shopper_merge_handler(services.shopper_merge_fold)
