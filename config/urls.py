from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog, set_language
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from core.views import healthz, rate_limited

handler404 = "core.views.not_found"
handler500 = "core.views.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # The admin's login page (the agent console's too), limited per address before the admin's
    # own route to it; failed logins are also locked out per username and address (core/logins).
    path("admin/login/", rate_limited("admin_login")(admin.site.login)),
    path("admin/", admin.site.urls),
    # The agent console's strings in the agent's language (locale/*/LC_MESSAGES/djangojs.po),
    # and Django's set_language, the console's language switch (a cookie).
    path(
        "jsi18n/",
        # as_view() is typed to return HttpResponseBase; JavaScriptCatalog answers HttpResponse.
        rate_limited("pages")(JavaScriptCatalog.as_view()),  # type: ignore[arg-type]
        name="javascript-catalog",
    ),
    path("i18n/setlang/", rate_limited("pages")(set_language), name="set_language"),
    # Each request for the schema builds it anew: limited apart from the pages, per address.
    path(
        "api/schema/",
        rate_limited("api_schema", json=True)(SpectacularAPIView.as_view()),
        name="api-schema",
    ),
    # The split view serves Swagger UI's start-up script as a file: no inline script for the CSP.
    path(
        "api/docs/",
        rate_limited("pages")(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    path(
        "api/redoc/",
        # ReDoc styles itself with <style> elements it creates and renders in a blob: worker.
        csp_update({"style-src": [SELF, UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
            rate_limited("pages")(SpectacularRedocView.as_view(url_name="api-schema"))
        ),
        name="api-redoc",
    ),
    # Segment-compatible tracking API, at Segment's own paths and under /api/.
    path("v1/", include("commerce.tracking_urls")),
    path("api/v1/", include("commerce.tracking_urls")),
    path("api/", include("commerce.urls")),
    path("", include("engagement.urls")),
    path("", include("loyalty.urls")),
    path("", include("chat.urls")),
    path("", include("recommendations.urls")),
    path("", include("carts.urls")),
    path("", include("storefront.urls")),
]
