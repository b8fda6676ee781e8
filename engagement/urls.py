from django.urls import URLPattern, URLResolver, path

from engagement import api, views

app_name = "engagement"

urlpatterns: list[URLPattern | URLResolver] = [
    path("e/o/<str:token>.gif", views.open_pixel, name="open"),
    path("e/c/<str:token>", views.click, name="click"),
    path("e/unsubscribe/<str:token>", views.unsubscribe, name="unsubscribe"),
    path("e/preferences/<str:token>", views.preferences, name="preferences"),
    path("e/nps/<str:token>", views.nps, name="nps"),
    path("api/engagement/notify-requests", api.NotifyRequestApi.as_view(), name="notify-requests"),
    path("api/engagement/onsite-messages", api.OnsiteMessagesApi.as_view(), name="onsite-messages"),
    path(
        "api/engagement/onsite-messages/<int:message_id>/seen",
        api.OnsiteMessageSeenApi.as_view(),
        name="onsite-message-seen",
    ),
    path(
        "api/engagement/push-subscriptions",
        api.PushSubscriptionApi.as_view(),
        name="push-subscriptions",
    ),
    path("api/engagement/push-key", api.PushKeyApi.as_view(), name="push-key"),
]
