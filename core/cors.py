"""CORS for Patron's public browser entries (tracking API, widget APIs): one place, one policy.

The Fetch standard's CORS protocol (https://fetch.spec.whatwg.org/#http-cors-protocol):

- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) carries no credentials, so
  it cannot say which write key will be used; it is answered for any origin, and the decision
  is taken at the call itself, where the key is known
  (``commerce.selectors.write_key_origin_allowed``).
- A call sent with ``credentials: "include"`` (Segment's browser library can be configured so)
  is readable only if ``Access-Control-Allow-Origin`` echoes the page's origin (``*`` is
  refused for credentialed requests) and ``Access-Control-Allow-Credentials: true`` is set;
  echoing the origin requires ``Vary: Origin`` so caches keep answers per origin.
- ``Access-Control-Allow-Headers`` lists every request header a client library sets, or the
  browser refuses the call before sending it (Segment's retries add ``X-Retry-Count``).
- ``Retry-After`` is exposed so a page can honour a 429 or 503.

Why not django-cors-headers: its middleware decides from settings alone, before the view runs;
here a refused origin must also stop the call from being processed, with the write key's own
list of origins, which only the view knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

# Request headers browser clients of Patron's public APIs send: Segment's analytics-next
# (``Authorization``, ``Content-Type``, ``X-Retry-Count``), gzip-compressing clients
# (``Content-Encoding``), and a shop's own fetch() calls (``X-Requested-With``).
DEFAULT_ALLOW_HEADERS: tuple[str, ...] = (
    "Authorization",
    "Content-Type",
    "Content-Encoding",
    "X-Retry-Count",
    "X-Requested-With",
)
DEFAULT_EXPOSE_HEADERS: tuple[str, ...] = ("Retry-After",)
PREFLIGHT_MAX_AGE_S = 86400


def request_origin(request: HttpRequest) -> str:
    """The ``Origin`` header of the request ('' when absent or ``null``)."""
    origin = request.headers.get("Origin", "").strip()
    return "" if origin == "null" else origin


def origin_normalise(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str, allowed_origins: Iterable[str]) -> bool:
    """Whether ``origin`` (scheme://host[:port]) is one of ``allowed_origins`` (exact match)."""
    wanted = origin_normalise(origin)
    return any(wanted == origin_normalise(str(allowed)) for allowed in allowed_origins)


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a serialized origin, or None when it is not one (``null``,
    garbage, a path or credentials in it)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:  # a malformed port or IPv6 literal
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def origin_is_own(origin: str | None, *, host: str | None) -> bool:
    """Is ``origin`` (a browser's ``Origin`` header) one of Patron's own pages?

    Own means, in every mode (``ALLOWED_HOSTS = ["*"]`` included, where Django accepts any
    Host and so names no host of its own):

    - same-origin: the page's host and port are the ``host`` this request was sent to (its
      ``Host`` header), provided Django would serve that host (``ALLOWED_HOSTS``);
    - the origin of ``PATRON_BASE_URL`` (the address Patron's links and emails use);
    - a host named explicitly in ``ALLOWED_HOSTS`` (``"patron.example"`` or
      ``".patron.example"``; the ``"*"`` wildcard names none).

    A missing origin, ``null`` (sandboxed frames, ``file:`` pages) and anything that is not a
    serialized origin are not own. The one decision of the key-authenticated entries is
    ``commerce.selectors.write_key_origin_allowed``, which starts here.
    """
    if not origin:
        return False
    parts = _origin_parts(origin)
    if parts is None:
        return False
    scheme, hostname, port = parts
    if host:
        host_name, host_port = split_domain_port(host.strip().lower())
        allowed_hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed_hosts:
            allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
        if host_name and validate_host(host_name, allowed_hosts):
            expected_port = int(host_port) if host_port.isdigit() else _DEFAULT_PORTS[scheme]
            if host_name.strip("[]") == hostname and expected_port == port:
                return True
    base = _origin_parts(getattr(settings, "PATRON_BASE_URL", "") or "")
    if base is not None and base == parts:
        return True
    return any(
        pattern != "*" and is_same_domain(hostname, pattern.lower())
        for pattern in settings.ALLOWED_HOSTS
    )


def is_preflight(request: HttpRequest) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def cors_headers_apply(
    request: HttpRequest,
    response: HttpResponseBase,
    *,
    methods: Sequence[str] = ("POST", "OPTIONS"),
    allow_headers: Sequence[str] = DEFAULT_ALLOW_HEADERS,
    expose_headers: Sequence[str] = DEFAULT_EXPOSE_HEADERS,
) -> HttpResponseBase:
    """Add the CORS headers of a public browser entry to ``response`` (returned for chaining).

    With an ``Origin`` the origin is echoed, with credentials allowed; without one the answer
    is ``*`` (no credentials). Per-key origin refusal is decided at the call, by
    ``commerce.selectors.write_key_origin_allowed``.
    """
    origin = request_origin(request)
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Credentials"] = "true"
        vary = response.get("Vary", "")
        if "origin" not in vary.lower():
            response["Vary"] = f"{vary}, Origin" if vary else "Origin"
    else:
        response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Methods"] = ", ".join(methods)
    response["Access-Control-Allow-Headers"] = ", ".join(allow_headers)
    if expose_headers:
        response["Access-Control-Expose-Headers"] = ", ".join(expose_headers)
    response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    return response
