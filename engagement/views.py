"""Public pages reached from messages by signed links: tracking, unsubscribe, preferences, NPS.

No login: the signed token is the authority. Views translate HTTP and call services. Each is
limited per client address and per token (``PATRON_RATE_LIMITS["email_links"]`` and
``["email_link_token"]``): over either, a 429 page with ``Retry-After`` and nothing recorded.
"""

from __future__ import annotations

import base64

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from commerce.models import Shopper
from core.exceptions import NotFound, ValidationError
from core.i18n import language_normalise
from core.views import rate_limited
from engagement import selectors, services, tokens
from engagement.models import SUBSCRIBABLE_CHANNELS, Channel


def _user_agent(request: HttpRequest) -> str:
    return str(request.headers.get("User-Agent", ""))[:500]


_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@never_cache
@require_http_methods(["GET", "HEAD"])
@rate_limited("email_links", url_scope="email_link_token")
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    try:
        services.message_open_record(
            token=token, method=request.method or "", user_agent=_user_agent(request)
        )
    except NotFound as exc:
        raise Http404(exc.message) from None
    return HttpResponse(_PIXEL, content_type="image/gif")


@never_cache
@require_http_methods(["GET", "HEAD"])
@rate_limited("email_links", url_scope="email_link_token")
def click(request: HttpRequest, token: str) -> HttpResponse:
    try:
        url = services.message_click_record(
            token=token, method=request.method or "", user_agent=_user_agent(request)
        )
    except NotFound as exc:
        raise Http404(exc.message) from None
    return HttpResponseRedirect(url)


def _shoppers_language(shopper: Shopper) -> translation.override:
    """The page in the shopper's own language (their ``locale``, the one their messages are
    written in) when Patron ships it, else the browser's (LocaleMiddleware)."""
    return translation.override(language_normalise(shopper.locale) or translation.get_language())


@csrf_exempt  # RFC 8058: mail providers POST without cookies; the signed token is the proof
@never_cache
@require_http_methods(["GET", "POST"])
@rate_limited("email_links", url_scope="email_link_token")
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    if request.method == "GET":
        try:
            tokens.read("unsubscribe", token)
        except NotFound as exc:
            raise Http404(exc.message) from None
        return render(request, "engagement/unsubscribe.html", {"token": token, "done": False})
    one_click = request.POST.get("List-Unsubscribe") == "One-Click"
    try:
        shopper, channel = services.unsubscribe_by_token(
            token=token, source="one-click" if one_click else "link"
        )
    except NotFound as exc:
        raise Http404(exc.message) from None
    if shopper is None:  # a test send's link: it names nobody, nothing changed
        return HttpResponse(
            gettext("This was a test message: nothing was changed."), content_type="text/plain"
        )
    if one_click:
        return HttpResponse("unsubscribed", content_type="text/plain")
    with _shoppers_language(shopper):
        return render(
            request,
            "engagement/unsubscribe.html",
            {
                "done": True,
                "channel": Channel(channel).label,
                "preferences_url": tokens.preferences_url(shopper.pk),
            },
        )


@never_cache
@require_http_methods(["GET", "POST"])
@rate_limited("email_links", url_scope="email_link_token")
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    try:
        shopper = services.shopper_for_preferences(token=token)
    except NotFound as exc:
        raise Http404(exc.message) from None
    saved = False
    error = ""
    if request.method == "POST":
        pause = request.POST.get("pause_days", "")
        try:
            services.preferences_update(
                shopper=shopper,
                channels={
                    c: request.POST.get(f"channel_{c}") == "on" for c in SUBSCRIBABLE_CHANNELS
                },
                topics_opted_out=[
                    t.key
                    for t in selectors.topics_list()
                    if request.POST.get(f"topic_{t.key}") != "on"
                ],
                pause_days=int(pause) if pause.strip().isdigit() else None,
            )
            saved = True
        except ValidationError as exc:
            error = exc.message
        shopper.refresh_from_db()
    with _shoppers_language(shopper):
        return render(
            request,
            "engagement/preferences.html",
            {**selectors.preference_centre(shopper=shopper), "saved": saved, "error": error},
            status=400 if error else 200,
        )


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
@rate_limited("email_links", url_scope="email_link_token")
def nps(request: HttpRequest, token: str) -> HttpResponse:
    """The page an NPS score link opens: GET shows the score pre-selected and records nothing
    (a link scanner fetches all eleven links); the shopper's POST (with CSRF) records it."""
    try:
        message = services.nps_message(token=token)
    except NotFound as exc:
        raise Http404(exc.message) from None
    if request.method != "POST":
        raw = request.GET.get("score", "")
        selected = int(raw) if raw.isdigit() and int(raw) <= 10 else None
        return render(
            request,
            "engagement/nps.html",
            {
                "scores": range(11),
                "selected": selected,
                "answered": None,
                "token": token,
                "campaign": message.campaign,
            },
            status=200 if selected is not None or not raw else 400,
        )
    raw = request.POST.get("score", "")
    comment = request.POST.get("comment")
    try:
        if not raw.isdigit():
            raise ValidationError("choose a score from 0 to 10")
        response = services.nps_record(token=token, score=int(raw), comment=comment)
    except ValidationError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain")
    return render(
        request,
        "engagement/nps.html",
        {"answered": response, "token": token, "commented": bool(comment)},
    )
