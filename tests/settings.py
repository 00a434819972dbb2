"""Test-only overrides, in one place. The database and broker come from the
environment as in production: SQLite and the filesystem broker when unset,
PostgreSQL and Redis in CI (.ci/run sets DATABASE_URL and CELERY_BROKER_URL)."""

from rumserver.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
# Each test starts with fresh caches; no stale application between tests.
LLMRUM_APP_CACHE_SECONDS = 0.0
