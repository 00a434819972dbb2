"""Django settings for llmrum, read from the environment only (DESIGN.md §9).

With nothing set, llmrum runs on its embedded default: an SQLite file and a
filesystem Celery broker under ``LLMRUM_DATA_DIR`` (no server to install).
Production and CI set ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL``
(Redis or RabbitMQ).
"""

from __future__ import annotations

import os
from pathlib import Path
from wsgiref.headers import Headers

import dj_database_url
import django_stubs_ext

from rumserver.env import EnvError, env_bool, env_float, env_int, env_list, env_str
from rumserver.ingest.client_address import parse_networks
from rumserver.ingest.scrape_targets import parse_scrape_targets

# Lets classes such as ModelAdmin and QuerySet be subscripted at run time (ModelAdmin[Span]),
# as their type annotations for mypy are.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("LLMRUM_DATA_DIR", str(BASE_DIR / ".data")))

DEBUG = env_bool("LLMRUM_DEBUG", False)
# The default key is only good for the embedded try-it-out mode; production sets SECRET_KEY.
SECRET_KEY = env_str("SECRET_KEY", "llmrum-insecure-development-key-set-SECRET_KEY-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("LLMRUM_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "rumserver",
    "correlator",
    "correlator.alerts",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # A NUL in the path or query string is a 400, before any view queries with it.
    "rumserver.nul_guard.NulGuardMiddleware",
    # Content-Security-Policy on HTML pages that set none of their own (rumserver.csp).
    "rumserver.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # CORS answers preflights for the beacon endpoint before anything else runs;
    # which origins are allowed is decided per application (rumserver.ingest.cors).
    "rumserver.ingest.cors.BrowserIngestCorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rumserver.urls"
WSGI_APPLICATION = "rumserver.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'llmrum.sqlite3'}"),
        # Persistent connections: opening one per request costs 2-4x on the ingest path.
        conn_max_age=env_int("LLMRUM_CONN_MAX_AGE", 600, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file in the embedded mode: WAL lets
    # readers run beside the writer, IMMEDIATE transactions avoid upgrade deadlocks.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATA_DIR.mkdir(parents=True, exist_ok=True)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "LLMRUM_PG_PREPARE", True
):
    # Django leaves psycopg's prepare_threshold at None, which disables prepared
    # statements even when asked for. Django's own cursors bind client-side and never
    # prepare, so a huge threshold means: only statements that ask (the beacon write)
    # are prepared. Off behind a transaction-mode pooler without prepared statements.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 1_000_000
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: shared rate limits (DESIGN.md §10.1) ------------------------------
# LLMRUM_CACHE_URL=redis://host:6379/1 shares rate limits across every web process and
# node; unset (the embedded default), each process keeps its own in local memory.
LLMRUM_CACHE_URL = env_str("LLMRUM_CACHE_URL", "")
if LLMRUM_CACHE_URL and not LLMRUM_CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    raise EnvError(f"LLMRUM_CACHE_URL must be a redis:// URL, got {LLMRUM_CACHE_URL!r}")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": LLMRUM_CACHE_URL,
        "KEY_PREFIX": "llmrum",
        # A cache that does not answer must cost a request little (rumserver.ingest.ratelimit
        # then lets requests through for a few seconds).
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.5},
    }
    if LLMRUM_CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
# Client addresses behind these proxies come from X-Forwarded-For (rumserver.ingest.client_address).
LLMRUM_TRUSTED_PROXIES = parse_networks(
    env_list("LLMRUM_TRUSTED_PROXIES", []), setting="LLMRUM_TRUSTED_PROXIES"
)
# Alert webhooks go to public addresses only, and to internal ones in these networks
# (correlator.alerts.webhook_guard: no request forgery into the deployment's network).
LLMRUM_WEBHOOK_ALLOWED_NETWORKS = parse_networks(
    env_list("LLMRUM_WEBHOOK_ALLOWED_NETWORKS", []), setting="LLMRUM_WEBHOOK_ALLOWED_NETWORKS"
)

# --- Auth, i18n, static ---------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/reports/"

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "frontend_sdk" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the finders when collectstatic has not run (embedded mode, tests).
WHITENOISE_USE_FINDERS = True


def _sdk_cors(headers: Headers, path: str, url: str) -> None:
    """The browser SDK is loaded from chat apps on other origins, with
    `integrity=` + `crossorigin="anonymous"`: SRI on a cross-origin script needs CORS."""
    if url.startswith(STATIC_URL + "llmrum/"):
        headers["Access-Control-Allow-Origin"] = "*"


WHITENOISE_ADD_HEADERS_FUNCTION = _sdk_cors

# --- Security -------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("LLMRUM_SSL_REDIRECT", False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("LLMRUM_BEHIND_TLS_PROXY", False) else None
)
SESSION_COOKIE_SECURE = SECURE_SSL_REDIRECT
CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- CORS: the browser-facing ingest endpoints (beacons, browser OTLP exporters);
# origins per application (rumserver.ingest.cors) ---
CORS_URLS_REGEX = r"^/(rum/v1/|v1/traces$)"
CORS_ALLOWED_ORIGINS: list[str] = []
CORS_ALLOW_METHODS = ("POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("content-type", "content-encoding", "x-llmrum-key")
# The SDK honours Retry-After on 429/503; cross-origin it can read only exposed headers.
CORS_EXPOSE_HEADERS = ("Retry-After",)
CORS_PREFLIGHT_MAX_AGE = 86400

# --- Django REST framework (read API; not used on the ingest hot path) -------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes a bad or missing token a 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "llmrum API",
    "DESCRIPTION": "Stitched traces, turns and metrics of LLM chat applications.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Two choice sets share the field name "state" (a trace's, an alert rule's).
    "ENUM_NAME_OVERRIDES": {"AlertRuleStateEnum": "correlator.alerts.models.AlertRule.State"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "rumserver.openapi.add_ingest_endpoints",  # POST /api/v1/scores is a plain view
    ],
}

# --- Celery -----------------------------------------------------------------
# The embedded broker is kombu's filesystem transport: web, worker and beat on one
# machine exchange messages through files, no server needed.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
_broker_dir = DATA_DIR / "broker"
_broker_control_dir = DATA_DIR / "broker-control"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, str | bool] = (
    {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_control_dir),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
if CELERY_BROKER_TRANSPORT_OPTIONS:
    for _folder in (_broker_dir, _broker_control_dir):
        _folder.mkdir(parents=True, exist_ok=True)
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "llmrum"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "correlator-sweep": {
        "task": "correlator.sweep",
        "schedule": env_float("LLMRUM_SWEEP_SECONDS", 5.0, minimum=0.5),
    },
    "correlator-retention": {"task": "correlator.retention", "schedule": 3600.0},
    "correlator-partitions": {"task": "correlator.partitions", "schedule": 3600.0},
    "alerts-evaluate": {"task": "alerts.evaluate", "schedule": 60.0},
    "rumserver-metric-rollups": {"task": "rumserver.metric_rollups", "schedule": 60.0},
}
# The built-in scraper (DESIGN §10.6): SLUG=URL pairs of Prometheus text endpoints.
LLMRUM_SCRAPE_TARGETS = parse_scrape_targets(
    env_list("LLMRUM_SCRAPE_TARGETS", []), setting="LLMRUM_SCRAPE_TARGETS"
)
LLMRUM_SCRAPE_INTERVAL_SECONDS = env_float("LLMRUM_SCRAPE_INTERVAL_SECONDS", 15.0, minimum=1.0)
if LLMRUM_SCRAPE_TARGETS:
    CELERY_BEAT_SCHEDULE["rumserver-scrape"] = {
        "task": "rumserver.scrape",
        "schedule": LLMRUM_SCRAPE_INTERVAL_SECONDS,
    }

# --- llmrum -----------------------------------------------------------------
# Beacon limits (DESIGN.md §4).
LLMRUM_BEACON_MAX_WIRE_BYTES = 64 * 1024
LLMRUM_BEACON_MAX_BODY_BYTES = 1024 * 1024
LLMRUM_BEACON_MAX_EVENTS = 200
# OTLP/HTTP limits. The OTLP spec recommends capping the inflated body; exporters
# send batches of 512 spans by default, far below these.
LLMRUM_OTLP_MAX_WIRE_BYTES = env_int("LLMRUM_OTLP_MAX_WIRE_BYTES", 16 * 1024 * 1024, minimum=1024)
LLMRUM_OTLP_MAX_BODY_BYTES = env_int("LLMRUM_OTLP_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024)
LLMRUM_OTLP_MAX_SPANS = env_int("LLMRUM_OTLP_MAX_SPANS", 10_000, minimum=512)
LLMRUM_OTLP_RATE_LIMIT = env_float("LLMRUM_OTLP_RATE_LIMIT", 500.0, minimum=100.0)
# Rate limits, per application and per client address within it: shared through the
# cache (LLMRUM_CACHE_URL), per process without one; far above normal traffic.
LLMRUM_BEACON_RATE_LIMIT = env_float("LLMRUM_BEACON_RATE_LIMIT", 1000.0, minimum=100.0)
LLMRUM_BEACON_IP_RATE_LIMIT = env_float("LLMRUM_BEACON_IP_RATE_LIMIT", 100.0, minimum=1.0)
# The client IP is used for rate limiting only, unless the operator opts in.
LLMRUM_STORE_CLIENT_IP = env_bool("LLMRUM_STORE_CLIENT_IP", False)
# How long a public-key lookup is cached in each web process.
LLMRUM_APP_CACHE_SECONDS = env_float("LLMRUM_APP_CACHE_SECONDS", 10.0, minimum=0.0)
# At most one correlator hint per web process per this many seconds; the hint is only a
# nudge, the correlator finds its work in the dirty-trace table.
LLMRUM_HINT_INTERVAL_SECONDS = env_float("LLMRUM_HINT_INTERVAL_SECONDS", 1.0, minimum=0.0)
# Prepare the beacon statement once per PostgreSQL connection (see DATABASES above).
LLMRUM_PG_PREPARE = env_bool("LLMRUM_PG_PREPARE", True)
LLMRUM_TRACE_QUIET_SECONDS = env_int("LLMRUM_TRACE_QUIET_SECONDS", 30, minimum=1)
# Threads a sweep stitches with, each on its own database connection (PostgreSQL): one
# computes while another waits on the database. 1 sweeps on the caller's connection.
LLMRUM_SWEEP_THREADS = env_int("LLMRUM_SWEEP_THREADS", 2, minimum=1)
# A rollup minute is rebuilt once no sweep has marked it for this long (readers answer
# it from raw turns until then): about once a minute, not once a sweep.
LLMRUM_ROLLUP_SETTLE_SECONDS = env_int("LLMRUM_ROLLUP_SETTLE_SECONDS", 30, minimum=0)
# Metrics over windows with more turns than this come from rollups (percentiles
# within 1 %, distinct counts within about 2 %); smaller windows are exact.
LLMRUM_METRICS_EXACT_TURNS = env_int("LLMRUM_METRICS_EXACT_TURNS", 2_000, minimum=0)
LLMRUM_DEFAULT_RETENTION_DAYS = env_int("LLMRUM_DEFAULT_RETENTION_DAYS", 30, minimum=1)
# The most days any raw data is kept, whatever an application's retention_days says;
# 0: the longest application retention decides. Day partitions older than the
# retention in force are dropped whole (PostgreSQL; rumserver.partitions).
LLMRUM_RETENTION_DAYS = env_int("LLMRUM_RETENTION_DAYS", 0, minimum=0)
# Day partitions made ahead of today by beat and at migrate (PostgreSQL).
LLMRUM_PARTITION_DAYS_AHEAD = env_int("LLMRUM_PARTITION_DAYS_AHEAD", 7, minimum=1)
# The demo chat at /demo/ (README: "Demo"): on by default only in the embedded default
# (no DATABASE_URL); `manage.py serve` turns it on unless LLMRUM_DEMO=0.
LLMRUM_DEMO = env_bool("LLMRUM_DEMO", not os.environ.get("DATABASE_URL"))
# Where the demo's simulated services export their spans; empty: this server's own
# /v1/traces as the request reached it, on a loopback host only (serve sets it).
LLMRUM_DEMO_OTLP_ENDPOINT = env_str("LLMRUM_DEMO_OTLP_ENDPOINT", "")
# Mounts POST /_w3c/tracecontext, the W3C trace-context harness endpoint (test-only).
LLMRUM_TRACECONTEXT_TEST_ENDPOINT = env_bool("LLMRUM_TRACECONTEXT_TEST_ENDPOINT", False)

# /metrics: counters of every web process on this host are summed through files in
# this folder (prometheus-client's multiprocess mode, which reads the variable when it
# is first imported, hence here). `serve` and the Docker entrypoint empty it at start.
LLMRUM_PROMETHEUS_DIR = Path(env_str("LLMRUM_PROMETHEUS_DIR", str(DATA_DIR / "prometheus")))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(LLMRUM_PROMETHEUS_DIR))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
# Optional bearer token for /metrics; unset, /metrics is open (keep it off the internet).
LLMRUM_METRICS_TOKEN = env_str("LLMRUM_METRICS_TOKEN", "")

# Alerts (DESIGN.md §10.6): links in webhooks and e-mails start with this public address
# of llmrum (e.g. https://rum.example.com); unset, they are paths from the site root.
LLMRUM_PUBLIC_URL = env_str("LLMRUM_PUBLIC_URL", "")
# Alert e-mail goes through Django's SMTP backend, configured by Django's own names.
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "llmrum@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LLMRUM_LOG_LEVEL", "INFO")},
}
