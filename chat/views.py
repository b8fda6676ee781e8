"""HTML pages of chat: the agent console and the public help centre, each limited per client
address (``PATRON_RATE_LIMITS["pages"]``: a 429 page with ``Retry-After`` over it)."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.templatetags.static import static
from django.utils.translation import get_language, gettext

from chat import selectors, services
from commerce import selectors as commerce_selectors
from core.views import rate_limited


@rate_limited("pages")
def console(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not selectors.is_agent(request.user):
        return HttpResponse(
            gettext("Only agents can open the console."), status=403, content_type="text/plain"
        )
    agent = {"id": request.user.pk, "name": selectors.agent_name(request.user)}
    config = {
        "ws_path": "/ws/console/",
        "api_base": "/api/chat/",
        "agent": agent,
        "csrf_token": get_token(request),
        "max_body": 4000,
    }
    return render(request, "chat/console.html", {"agent": agent, "console_config": config})


def _jsonld(data: object) -> str:
    """JSON safe inside a <script> element: no character can close the element."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _shop_context(request: HttpRequest) -> dict[str, object]:
    """What the shop layout (``patron/shop.html``) needs: the chat bubble's script tag."""
    return {
        "widget_src": request.build_absolute_uri(static("patron/widget.js")),
        "write_key": commerce_selectors.shop_write_key(),
    }


def _reader_languages(request: HttpRequest) -> list[str]:
    """The reader's language (LocaleMiddleware: cookie, then Accept-Language), then the
    merchant's fallback (``ChatSettings.fallback_language``)."""
    return [get_language() or settings.LANGUAGE_CODE, services.language_fallback()]


@rate_limited("pages")
def help_index(request: HttpRequest) -> HttpResponse:
    """The help centre: the articles in the reader's language, else in the fallback one."""
    articles = selectors.help_articles(languages=_reader_languages(request))
    return render(request, "chat/help_index.html", {"articles": articles, **_shop_context(request)})


@rate_limited("pages")
def help_article(request: HttpRequest, slug: str) -> HttpResponse:
    """One article (FAQ structured data), in the reader's language when it is written in it."""
    article = selectors.help_article(slug=slug, languages=_reader_languages(request))
    if article is None:
        raise Http404(gettext("No such article"))
    body = selectors.article_text(article)
    faq = {
        "@context": "https://schema.org",
        "@type": "FAQPage",
        "mainEntity": [
            {
                "@type": "Question",
                "name": article.question or article.title,
                "acceptedAnswer": {"@type": "Answer", "text": body},
            }
        ],
    }
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    return render(
        request,
        "chat/help_article.html",
        {
            "article": article,
            "paragraphs": paragraphs,
            "faq": faq,
            "faq_json": _jsonld(faq),
            **_shop_context(request),
        },
    )
