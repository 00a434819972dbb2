#!/usr/bin/env bash
# The whole test suite, lint included. Without DATABASE_URL / CELERY_BROKER_URL the
# tests that need PostgreSQL or a real broker skip and say why (.ci/run sets both).
source "$(dirname "$0")/bootstrap.sh"
llmrum_install requirements-dev.txt
echo "llmrum: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "llmrum: migrations are committed"
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null || {
  echo "llmrum: models changed without a migration: run manage.py makemigrations" >&2
  exit 1
}
echo "llmrum: pytest (DATABASE_URL=${DATABASE_URL:-<unset: SQLite>}, CELERY_BROKER_URL=${CELERY_BROKER_URL:-<unset: filesystem>})"
exec .venv/bin/python -m pytest "$@"
