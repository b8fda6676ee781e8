"""Patron's one settings module: every value comes from the environment.

With nothing set, Patron runs in embedded mode: a real PostgreSQL and a real Redis from wheels
under ``.patron/`` (see ``config/embedded.py``), DEBUG on, mail written to files. Importing
this module starts nothing: it only names where the embedded servers listen; the commands that
serve or need a database start them (``embedded.ensure_started``).
In production set at least ``DEBUG=0``, ``SECRET_KEY``, ``ALLOWED_HOSTS``, ``DATABASE_URL``,
``REDIS_URL`` and ``EMAIL_URL``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import django_stubs_ext
import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE

from config import embedded
from config.env import (
    ConfigurationError,
    database_from_url,
    env_bool,
    env_int,
    env_list,
    env_rate,
    env_str,
    installation_secret_key,
)

# Django's generic classes (ModelAdmin[Model], ModelForm[Model]) accept type arguments at run
# time as they do for mypy.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", default=True)
TESTING = env_bool("PATRON_TESTING", default=False)

# In DEBUG (the embedded demo, development, tests) a key made once per installation and kept
# under .patron/; never a constant in the code, which every installation would share.
SECRET_KEY = env_str("SECRET_KEY") or (installation_secret_key(embedded.STATE_DIR) if DEBUG else "")
if not SECRET_KEY:
    raise ConfigurationError("SECRET_KEY must be set when DEBUG is off")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The public base URL of this Patron, used in links inside emails (unsubscribe, tracking).
PATRON_BASE_URL = (env_str("PATRON_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")

# Patron's own apps, lowest layer first (DESIGN.md "Shape"); .ci/import_all.py imports each.
PATRON_APPS = [
    "core",
    "commerce",
    "engagement",
    "loyalty",
    "chat",
    "recommendations",
    "carts",
    "storefront",
]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "csp",
    *PATRON_APPS,
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.nul_guard_middleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The shopper's or agent's language: the language cookie (the console's switch), then the
    # browser's Accept-Language, else LANGUAGE_CODE. After sessions, before CommonMiddleware.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------------------
_database_url = env_str("DATABASE_URL") or embedded.database_url()
# True when the database is the embedded PostgreSQL (the run command then shares it and Redis).
EMBEDDED = not env_str("DATABASE_URL")
DATABASES = {"default": database_from_url(_database_url)}
# Every thread that touches the database (ASGI request threads, the chat sockets' threads, the
# chat writer, Celery tasks) borrows a connection from Django's native pool (psycopg_pool,
# Django 5.1+) and returns it when Django closes its connection (end of request, or
# ``close_old_connections``). Under ASGI each request runs in a fresh thread, so Django's
# persistent connections (CONN_MAX_AGE) were never reused; the pool reuses them across threads.
# Sizes are per process (each uvicorn worker and each Celery child has its own pool); a borrower
# waits at most DATABASE_POOL_TIMEOUT seconds for a free connection, then gets an error.
# Celery's Django fix-up closes an inherited pool in each prefork child.
_pool_min = env_int("DATABASE_POOL_MIN_SIZE", 2, minimum=0)
_pool_max = env_int("DATABASE_POOL_MAX_SIZE", 24, minimum=1)
if _pool_max < _pool_min:
    raise ConfigurationError(
        f"DATABASE_POOL_MAX_SIZE ({_pool_max}) must be at least DATABASE_POOL_MIN_SIZE ({_pool_min})"
    )
DATABASES["default"]["OPTIONS"] = {
    **DATABASES["default"]["OPTIONS"],  # type: ignore[dict-item]  # database_from_url gives a dict
    "pool": {
        "min_size": _pool_min,
        "max_size": _pool_max,
        "timeout": float(env_int("DATABASE_POOL_TIMEOUT", 10, minimum=1)),
        # Idle connections above min_size close after this many seconds.
        "max_idle": float(env_int("DATABASE_POOL_MAX_IDLE", 300, minimum=1)),
        "name": "patron",
    },
}
# The pool requires CONN_MAX_AGE 0: Django "closes" (returns) its connection after each request.
if env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0) != 0:
    raise ConfigurationError(
        "DATABASE_CONN_MAX_AGE must be 0: connections are reused through the pool "
        "(DATABASE_POOL_MIN_SIZE, DATABASE_POOL_MAX_SIZE)"
    )
DATABASES["default"]["CONN_MAX_AGE"] = 0
# With the pool, this makes psycopg_pool check a connection (one empty round trip) each time it
# lends it, so a connection broken by a PostgreSQL restart is replaced, never handed out.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL") or embedded.redis_url()

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "patron",
    }
}

# The db number of REDIS_URL (a query such as ?ssl_ca_certs=/path may follow it).
_REDIS_DB = urlsplit(REDIS_URL).path.lstrip("/")

# Channels over Redis pub/sub. No blocking reads (so DESIGN.md's socket-timeout pitfall does not
# apply) and no connection pool: one subscriber and one publisher connection per process.
CHANNEL_LAYERS = {
    "default": {
        # Our own pub/sub layer (core/channel_layer.py): one pushed subscriber connection per
        # process instead of channels-redis's 0.1 s polling loop (bench/chat.py measures both).
        "BACKEND": "core.channel_layer.PushPubSubChannelLayer",
        "CONFIG": {
            "address": REDIS_URL,
            # Pub/sub channels ignore Redis's db number: the prefix carries it, so two Patrons
            # (or two test runs) on one Redis but different dbs never hear each other.
            "prefix": env_str("CHANNEL_LAYER_PREFIX")
            or "patron" + (_REDIS_DB if _REDIS_DB.isdigit() else ""),
            "capacity": 10_000,
            "socket_connect_timeout": 5,
            "socket_timeout": 5,
            "health_check_interval": 15,
        },
    }
}

# --- Celery ------------------------------------------------------------------------------
# Kombu spells a Redis unix socket (the embedded one) ``redis+socket:///path``.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or (
    "redis+socket://" + REDIS_URL.removeprefix("unix://").split("?", 1)[0]
    if REDIS_URL.startswith("unix://")
    else REDIS_URL
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task a dead worker held goes back to the queue after this many seconds (Redis transport).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
# Apps add their periodic tasks here (name -> {"task", "schedule"}); beat reads it.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Events whose processing task was lost (dead worker, Redis restart) are swept every
    # minute; the sweeper takes only events stored more than two minutes ago.
    "commerce-events-process-pending": {
        "task": "commerce.tasks.events_process_pending",
        "schedule": 60.0,
    },
    "commerce-events-retention": {
        "task": "commerce.tasks.events_purge_expired",
        "schedule": 3600.0,
    },
    # engagement: due messages (delayed steps, retries), lost workers, time-based triggers.
    "engagement-outbox-dispatch": {"task": "engagement.tasks.outbox_dispatch", "schedule": 5.0},
    "engagement-outbox-sweep": {"task": "engagement.tasks.outbox_sweep", "schedule": 15.0},
    "engagement-triggers-scan": {"task": "engagement.tasks.triggers_scan", "schedule": 300.0},
    "engagement-product-changes": {
        "task": "engagement.tasks.product_changes_detect",
        "schedule": 120.0,
    },
    # chat: snoozed conversations come back to the inbox when their time comes.
    "chat-conversations-wake": {"task": "chat.tasks.conversations_wake", "schedule": 30.0},
}

# --- Email -------------------------------------------------------------------------------
_email_url = env_str("EMAIL_URL")
if _email_url:
    vars().update(environ.Env.email_url_config(_email_url))
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(embedded.STATE_DIR / "mail")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "Patron <shop@patron.localhost>"
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Static files ------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- I18N --------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
# The languages Patron ships (locale/<code>/LC_MESSAGES/django.po and djangojs.po). The compiled
# .mo files are committed next to them, so a fresh clone (or a slim image) runs translated with
# only Python: no GNU gettext, nothing compiled at start-up into a possibly read-only tree.
# After editing a .po, `manage.py i18n_compile` (pure Python) rewrites them; the test
# tests/core/test_i18n_catalogs.py fails when a .mo is out of date or a string is untranslated.
LANGUAGES = [
    ("en", "English"),
    ("tr", "Türkçe"),
    ("lv", "Latviešu"),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Auth --------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login attempts (admin, console, API Basic auth): after this many failures for one username
# from one client address, that pair is refused, right password or not, until the cool-off
# has passed since the last failure. Counted in the cache (Redis), no database table used.
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = env_int("PATRON_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("PATRON_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.logins.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "core.logins.login_locked_out"
AXES_VERBOSE = False

# --- API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        # Integrations (imports, back-office scripts) authenticate as a staff user over HTTPS;
        # failed attempts are counted and locked out by django-axes (core/logins.py).
        "core.logins.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    # JSON with depth, number and size limits (a 4xx, never a 500, for hostile bodies).
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Patron API",
    "DESCRIPTION": "Tracking (Segment-compatible), catalog, loyalty, chat and engagement APIs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs are public, like any integration guide; the operations are not.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Choice sets whose field names ("kind", "status", "state") other apps use too.
    "ENUM_NAME_OVERRIDES": {
        "ChatAuthorKindEnum": "chat.models.Message.Author",
        "ChatConversationStateEnum": "chat.models.Conversation.State",
        "ChatConversationChannelEnum": "chat.models.Conversation.Channel",
        "ChatAgentStatusEnum": "chat.models.AgentStatus.Status",
        # The order status keeps the name it had before chat's agent status appeared.
        "StatusEnum": "commerce.models.Order.Status",
    },
}

# --- Patron ------------------------------------------------------------------------------
# Tracked events older than this are deleted by a periodic task (0 keeps them for ever).
PATRON_EVENT_RETENTION_DAYS = env_int("PATRON_EVENT_RETENTION_DAYS", 400, minimum=0)
# Segment's own limits.
PATRON_TRACK_MAX_EVENT_BYTES = 32 * 1024
PATRON_TRACK_MAX_BATCH_BYTES = 500 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
# Arrays/objects a JSON body may nest (core.parsers); deeper bodies get a 400.
PATRON_JSON_MAX_DEPTH = 64

# --- Engagement (campaigns and the outbox) ----------------------------------------------
# Messages claimed per batch, and delivery tasks started at once (match worker concurrency).
PATRON_OUTBOX_BATCH_SIZE = env_int("PATRON_OUTBOX_BATCH_SIZE", 100, minimum=1)
PATRON_OUTBOX_PARALLELISM = env_int("PATRON_OUTBOX_PARALLELISM", 2, minimum=1)
# A message in "sending" longer than this is treated as left behind by a dead worker.
# A delivering worker renews the lease on its claimed messages every third of this; the
# sweeper (every 15 s) takes back the messages of a worker that stopped renewing (killed).
PATRON_OUTBOX_LEASE_SECONDS = env_int("PATRON_OUTBOX_LEASE_SECONDS", 30, minimum=3)
# A broadcast being enrolled is taken over by another run after this long without finishing.
PATRON_BROADCAST_LEASE_SECONDS = env_int("PATRON_BROADCAST_LEASE_SECONDS", 600, minimum=60)
# A fetch of a tracked link or pixel this soon after the message was handed over is a mail
# gateway's scanner (Safe Links, Proofpoint, ...), not the shopper: it records nothing.
PATRON_LINK_SCANNER_SECONDS = env_int("PATRON_LINK_SCANNER_SECONDS", 10, minimum=0)
PATRON_OUTBOX_MAX_ATTEMPTS = env_int("PATRON_OUTBOX_MAX_ATTEMPTS", 8, minimum=1)
PATRON_OUTBOX_RETRY_BASE_SECONDS = env_int("PATRON_OUTBOX_RETRY_BASE_SECONDS", 30, minimum=0)
# SMTP connections a delivery process keeps open; messages are handed over in groups this size.
PATRON_SMTP_CONNECTIONS = env_int("PATRON_SMTP_CONNECTIONS", 8, minimum=1)
PATRON_SMS_BACKEND = env_str("PATRON_SMS_BACKEND") or "engagement.channels.sms.ConsoleSMSBackend"
PATRON_SMS_FILE = env_str("PATRON_SMS_FILE") or str(embedded.STATE_DIR / "sms.jsonl")
# Web push: generate keys with `python manage.py engagement_vapid_keys`.
PATRON_VAPID_PUBLIC_KEY = env_str("PATRON_VAPID_PUBLIC_KEY") or ""
PATRON_VAPID_PRIVATE_KEY = env_str("PATRON_VAPID_PRIVATE_KEY") or ""
PATRON_VAPID_SUBJECT = env_str("PATRON_VAPID_SUBJECT") or "mailto:shop@patron.localhost"
PATRON_PUSH_BACKEND = env_str("PATRON_PUSH_BACKEND") or (
    "engagement.channels.push.WebPushBackend"
    if PATRON_VAPID_PRIVATE_KEY
    else "engagement.channels.push.ConsolePushBackend"
)
PATRON_PUSH_TTL_SECONDS = env_int("PATRON_PUSH_TTL_SECONDS", 86_400, minimum=0)
PATRON_WEBHOOK_TIMEOUT_SECONDS = env_int("PATRON_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# Browse abandonment defaults (a campaign's trigger options may override them).
PATRON_BROWSE_ABANDONMENT_VIEWS = env_int("PATRON_BROWSE_ABANDONMENT_VIEWS", 3, minimum=1)
PATRON_BROWSE_ABANDONMENT_WINDOW_HOURS = env_int(
    "PATRON_BROWSE_ABANDONMENT_WINDOW_HOURS", 24, minimum=1
)
# Shoppers who viewed a product this recently hear about its restock or price drop.
PATRON_PRODUCT_VIEW_WATCH_DAYS = env_int("PATRON_PRODUCT_VIEW_WATCH_DAYS", 30, minimum=1)
# A shopper hears about the same product's restock or price drop at most once in this many
# days per campaign (a campaign's ``once_per_days`` option may override it).
PATRON_PRODUCT_ALERT_ONCE_PER_DAYS = env_int("PATRON_PRODUCT_ALERT_ONCE_PER_DAYS", 7, minimum=0)
# A price drop smaller than this percentage is not announced, unless a campaign's options set
# ``min_drop_percent`` or ``min_drop_amount``.
PATRON_PRICE_DROP_MIN_PERCENT = env_int("PATRON_PRICE_DROP_MIN_PERCENT", 5, minimum=0)
# A shopper is asked for an NPS score at most once in this many days, however many orders.
PATRON_NPS_THROTTLE_DAYS = env_int("PATRON_NPS_THROTTLE_DAYS", 90, minimum=0)

# --- Abuse limits ------------------------------------------------------------------------
# Every public entry is rate limited (core/ratelimit.py): COUNT/SECONDS per key, "off" to switch
# a limit off. The defaults are far above what real shops and bench/ send (see each comment).
PATRON_RATE_LIMITS: dict[str, tuple[int, int] | None] = {
    # Tracking API requests (a batch counts once) per write key and client address. Segment's
    # libraries batch up to 500 KB; bench/ingest.py sends 20,000+ events/s as about 40-80
    # requests/s from one address, far below 1,000 requests/s.
    "tracking": env_rate("PATRON_RATE_TRACKING", "60000/60"),
    # Widget API calls (notify requests, on-site messages, push subscriptions) per write key
    # and client address.
    "widget": env_rate("PATRON_RATE_WIDGET", "1200/60"),
    # Coupon checks and redemptions per (server-side) write key: a busy shop's checkouts are
    # a few per second; a client guessing codes is stopped well before it finds many.
    "coupons": env_rate("PATRON_RATE_COUPONS", "600/60"),
    # New chat conversations per client address (a shop's visitors behind one office NAT may
    # share an address: 60 in 10 minutes).
    "chat_conversation": env_rate("PATRON_RATE_CHAT_CONVERSATIONS", "60/600"),
    # Emails to a typed address (chat transcripts, offline messages' replies, notify-me
    # addresses): per sending client address, and per recipient whoever sends.
    "email_sender": env_rate("PATRON_RATE_EMAIL_PER_ADDRESS", "20/3600"),
    "email_recipient": env_rate("PATRON_RATE_EMAIL_PER_RECIPIENT", "5/3600"),
    # Transcripts an agent emails from the console (POST .../transcript/), per agent.
    "transcript": env_rate("PATRON_RATE_TRANSCRIPTS_PER_AGENT", "60/3600"),
    # The widget's public calls that need no write key or look one up (widget-config, push-key),
    # per client address: a page load makes one or two.
    "widget_public": env_rate("PATRON_RATE_WIDGET_PUBLIC", "600/60"),
    # HTML pages anyone can open (the demo shop, the help centre, the API docs), per client
    # address: a person reads far fewer; a shop's visitors behind one NAT share the count.
    "pages": env_rate("PATRON_RATE_PAGES", "600/60"),
    # The OpenAPI schema, per client address: each request builds the whole schema (costly).
    "api_schema": env_rate("PATRON_RATE_API_SCHEMA", "30/60"),
    # Links in messages (/e/: open pixel, click, unsubscribe, preferences, NPS) per client
    # address, and per link token. Mail providers fetch pixels and post one-click unsubscribes
    # for many recipients from few addresses (Gmail's image proxy), hence the high per-address
    # rate; one message's links are opened a handful of times.
    "email_links": env_rate("PATRON_RATE_EMAIL_LINKS", "1200/60"),
    "email_link_token": env_rate("PATRON_RATE_EMAIL_LINK_TOKEN", "60/600"),
    # Calls to the staff APIs (catalog, orders, shoppers, chat console) that do not end signed in
    # as staff (no or wrong credentials), per client address; over it, credentials are not even
    # checked. Signed-in staff are not counted. django-axes also locks a username + address out
    # after PATRON_LOGIN_FAILURE_LIMIT wrong passwords.
    "staff_login_free": env_rate("PATRON_RATE_STAFF_LOGIN_FREE", "60/60"),
    # The admin's login page (GET and POST), per client address: a team behind one office
    # address signs in a few dozen times a day; a password sprayer tries many usernames.
    "admin_login": env_rate("PATRON_RATE_ADMIN_LOGIN", "100/600"),
}
# Frames a shopper's chat socket may send: a sustained rate per second and a burst. A person
# types far slower; bench/chat.py's top level (9,000 msg/s over 500 sockets) is 18 per socket.
PATRON_CHAT_FRAMES_PER_SECOND = env_int("PATRON_CHAT_FRAMES_PER_SECOND", 30, minimum=1)
PATRON_CHAT_FRAMES_BURST = env_int("PATRON_CHAT_FRAMES_BURST", 60, minimum=1)
# Redis keys of the counters; the Redis db number keeps two Patrons on one Redis apart.
PATRON_RATE_LIMIT_PREFIX = "patron-rl"
# Proxies (addresses or CIDR networks) whose X-Forwarded-For is believed; empty: none is, and
# the client address is the connection's peer.
PATRON_TRUSTED_PROXIES = env_list("PATRON_TRUSTED_PROXIES", [])
for _proxy in PATRON_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ConfigurationError(
            f"PATRON_TRUSTED_PROXIES must list IP addresses or networks, got {_proxy!r}"
        ) from None
# --- Chat ---------------------------------------------------------------------------------
# How often an open agent console re-reads the agent's rights: a deactivated agent, or one
# removed from the agent group, is disconnected within this many seconds.
PATRON_AGENT_RECHECK_SECONDS = env_int("PATRON_AGENT_RECHECK_SECONDS", 5, minimum=1)
# An agent is present (routable, shown online) while one of their console sockets sent a
# heartbeat (its opening or a ping; consoles ping every 25 s) within this many seconds
# (chat/presence.py): a web process that dies takes its agents offline within this window.
PATRON_AGENT_PRESENCE_SECONDS = env_int("PATRON_AGENT_PRESENCE_SECONDS", 90, minimum=1)
# How long a shopper socket may stay open without sending hello (docs/chat-protocol.md: 10 s,
# then error hello_required and close 4001). Tests shorten it rather than wait.
PATRON_CHAT_HELLO_TIMEOUT_MS = env_int("PATRON_CHAT_HELLO_TIMEOUT_MS", 10_000, minimum=1)

# --- Test checkpoints ----------------------------------------------------------------------
# Named points where a server started by a system test pauses, when the test arms them, so the
# test can act between two steps without a sleep race (core/checkpoints.py). Refused outside
# tests: a production server never waits on a test. DEBUG off (production, check --deploy)
# refuses them too, so a test environment copied into production cannot turn them on.
PATRON_TEST_CHECKPOINTS = frozenset(env_list("PATRON_TEST_CHECKPOINTS", []))
if PATRON_TEST_CHECKPOINTS and not TESTING:
    raise ConfigurationError("PATRON_TEST_CHECKPOINTS is only accepted with PATRON_TESTING=1")
if PATRON_TEST_CHECKPOINTS and not DEBUG:
    raise ConfigurationError("PATRON_TEST_CHECKPOINTS is refused with DEBUG off (production)")

# --- Security (production) ---------------------------------------------------------------
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy on Patron's own pages (django-csp 4): scripts and styles from Patron
# itself or carrying the response's nonce (``{{ CSP_NONCE }}``); images also from the
# shop's image hosts (product images are external URLs); no page may be framed. The widget's
# script runs on shops' pages under *their* policy; this one covers admin, console, shop, help
# and the e-mail landing pages (unsubscribe, preferences, NPS).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        # style="..." attributes (Django's admin uses a few) cannot run code.
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:", "https:"] + (["http:"] if DEBUG else []),
        "connect-src": [SELF, "ws:", "wss:"] if DEBUG else [SELF, "wss:"],
        "font-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        # django-axes logs every successful login at INFO; failures and lockouts stay visible.
        "axes": {"level": "WARNING"},
    },
}
