"""Test-only overrides, in one place. The database and broker come from the
environment as in production: SQLite and the filesystem broker when unset,
PostgreSQL and Redis in CI (.ci/run sets DATABASE_URL and CELERY_BROKER_URL)."""

import os
import tempfile

# /metrics counters live in files (prometheus-client's multiprocess mode): a test run
# keeps its own folder, so that suites run side by side (or a server left running)
# never count into each other's figures. Set before the settings read it; servers the
# tests start inherit it.
os.environ.setdefault("LLMRUM_PROMETHEUS_DIR", tempfile.mkdtemp(prefix="llmrum-test-metrics-"))

from rumserver.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
# Each test starts with fresh caches; no stale application between tests.
LLMRUM_APP_CACHE_SECONDS = 0.0

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # The embedded default's own kind of database: a file in WAL mode that waits for a
    # busy writer (settings above). Django's in-memory test database would instead share
    # one cache between threads, which locks whole tables and fails at once: a live
    # server's beacon written while the test reads would get a 503.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_llmrum.sqlite3")}  # noqa: F405
