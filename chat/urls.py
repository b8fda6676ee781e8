from django.urls import URLPattern, URLResolver, path

from chat import api, views

app_name = "chat"

urlpatterns: list[URLPattern | URLResolver] = [
    path("console/", views.console, name="console"),
    path("help/", views.help_index, name="help-index"),
    path("help/<slug:slug>/", views.help_article, name="help-article"),
    path("api/chat/conversations/", api.ConversationListApi.as_view(), name="api-conversations"),
    path(
        "api/chat/conversations/<int:conversation_id>/messages/",
        api.MessageListApi.as_view(),
        name="api-messages",
    ),
    path(
        "api/chat/conversations/<int:conversation_id>/context/",
        api.ContextApi.as_view(),
        name="api-context",
    ),
    path(
        "api/chat/conversations/<int:conversation_id>/transcript/",
        api.TranscriptApi.as_view(),
        name="api-transcript",
    ),
    path("api/chat/canned-responses/", api.CannedResponseListApi.as_view(), name="api-canned"),
    path("api/chat/agents/", api.AgentListApi.as_view(), name="api-agents"),
    path("api/chat/metrics/", api.MetricsApi.as_view(), name="api-metrics"),
    path("api/chat/widget-config/", api.WidgetConfigApi.as_view(), name="api-widget-config"),
]
