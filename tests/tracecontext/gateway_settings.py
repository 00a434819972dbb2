"""Settings of a minimal Django gateway that uses the helper, as a user's would.
The browser tests run it under gunicorn; it imports nothing of llmrum's own apps.

The allowed chat origins come from GATEWAY_ALLOWED_ORIGINS (comma-separated).
"""

import os

SECRET_KEY = "tracecontext-gateway-test"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "llmrum_django.middleware.TraceContextMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "tests.tracecontext.urls"
USE_TZ = True

LLMRUM_CORS_ALLOWED_ORIGINS = [
    o for o in os.environ.get("GATEWAY_ALLOWED_ORIGINS", "").split(",") if o.strip()
]
LLMRUM_CORS_URLS_REGEX = r"^/api/"
