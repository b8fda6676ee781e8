"""The Segment-compatible tracking endpoints, mounted at /v1/ and /api/v1/ (config/urls.py)."""

from django.urls import URLPattern, URLResolver, path

from commerce import coupon_api, tracking_api

# No trailing slashes: Segment's libraries post to ``<host>/v1/batch``.
urlpatterns: list[URLPattern | URLResolver] = [
    path("identify", tracking_api.IdentifyView.as_view()),
    path("track", tracking_api.TrackView.as_view()),
    path("page", tracking_api.PageView.as_view()),
    path("screen", tracking_api.ScreenView.as_view()),
    path("group", tracking_api.GroupView.as_view()),
    path("alias", tracking_api.AliasView.as_view()),
    path("batch", tracking_api.BatchView.as_view()),
    path("import", tracking_api.BatchView.as_view()),
    # Segment's browser library (analytics-next) posts to the first letter of the call type,
    # batches to ``b`` and its own usage metrics to ``m``.
    # The same operations as above, so they are left out of the published schema.
    path("t", tracking_api.unlisted(tracking_api.TrackView).as_view()),
    path("i", tracking_api.unlisted(tracking_api.IdentifyView).as_view()),
    path("p", tracking_api.unlisted(tracking_api.PageView).as_view()),
    path("s", tracking_api.unlisted(tracking_api.ScreenView).as_view()),
    path("g", tracking_api.unlisted(tracking_api.GroupView).as_view()),
    path("a", tracking_api.unlisted(tracking_api.AliasView).as_view()),
    path("b", tracking_api.unlisted(tracking_api.BatchView).as_view()),
    path("m", tracking_api.MetricsView.as_view()),
    # A store's own checkout: check and redeem Patron's coupons (server-side write key).
    path("coupons/validate", coupon_api.CouponValidateView.as_view()),
    path("coupons/redeem", coupon_api.CouponRedeemView.as_view()),
]
