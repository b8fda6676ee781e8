from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.translation import gettext_noop

        from chat import emails, registry, selectors

        # Chat's emails are engagement campaigns started by these triggers.
        emails.register()

        # Chat's own context-panel sections; other apps add theirs the same way. Titles are
        # msgids, translated into the agent's language when the panel is read.
        registry.register_context_section(
            "profile", gettext_noop("Profile"), selectors.context_profile, order=10
        )
        registry.register_context_section(
            "recent_orders",
            gettext_noop("Recent orders"),
            selectors.context_recent_orders,
            order=30,
        )
        registry.register_context_section(
            "recently_viewed",
            gettext_noop("Recently viewed"),
            selectors.context_recently_viewed,
            order=40,
        )
