"""The demo shop: a home page with a product grid and product pages, both embedding the Patron
widget with the one script tag a third-party shop would paste. Both are limited per client
address (``PATRON_RATE_LIMITS["pages"]``: a 429 page with ``Retry-After`` over it)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static

from commerce import selectors as commerce_selectors
from core.views import rate_limited
from storefront import selectors


def _widget_context(request: HttpRequest) -> dict[str, object]:
    # An absolute URL, exactly what a merchant copies from the admin: the widget derives the
    # Patron origin (HTTP and WebSocket) from its own src.
    return {
        "widget_src": request.build_absolute_uri(static("patron/widget.js")),
        "write_key": selectors.demo_write_key(),
    }


@rate_limited("pages")
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "products": selectors.products_for_home(),
        # The store's settings are the one source of the threshold the bot quotes too.
        "free_shipping": commerce_selectors.free_shipping_threshold_text(),
        **_widget_context(request),
    }
    return render(request, "storefront/home.html", context)


@rate_limited("pages")
def product_detail(request: HttpRequest, sku: str) -> HttpResponse:
    product = selectors.product_for_page(sku=sku)
    if product is None:
        raise Http404("No such product")
    context = {"product": product, **_widget_context(request)}
    return render(request, "storefront/product.html", context)
