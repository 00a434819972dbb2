#!/usr/bin/env bash
# The whole test suite, lint included. Without DATABASE_URL / CELERY_BROKER_URL the
# tests that need PostgreSQL or a real broker skip and say why (.ci/run sets both).
source "$(dirname "$0")/bootstrap.sh"
llmrum_install requirements-dev.txt
echo "llmrum: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Strict, over the scope pyproject.toml's [tool.mypy] names (rumserver, correlator and the
# backend helpers llmrum_django, llmrum_backend, llmrum_asgi; migrations excluded).
echo "llmrum: mypy"
.venv/bin/mypy
echo "llmrum: migrations are committed"
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null || {
  echo "llmrum: models changed without a migration: run manage.py makemigrations" >&2
  exit 1
}
echo "llmrum: frontend_sdk (build is committed, unit tests, size budget)"
if command -v npm >/dev/null; then
  (
    set -euo pipefail
    cd frontend_sdk
    # npm ci only when node_modules is missing or stale: it takes seconds, the check none.
    if ! cmp -s package-lock.json node_modules/.llmrum-lock 2>/dev/null; then
      npm ci --no-audit --no-fund --loglevel=error
      cp package-lock.json node_modules/.llmrum-lock
    fi
    committed="$(mktemp -d)"
    trap 'rm -rf "$committed"' EXIT
    cp static/llmrum/*.js "$committed/"
    npm run --silent build
    for f in $(cd static/llmrum && ls *.js) $(cd "$committed" && ls *.js); do
      cmp -s "$committed/$f" "static/llmrum/$f" || {
        echo "llmrum: frontend_sdk/static/llmrum/$f differs from what src/ builds: run npm run build in frontend_sdk and commit it" >&2
        exit 1
      }
    done
    npm run --silent typecheck
    npx vitest run --reporter=dot
    npm run --silent size
  )  # no `|| exit 1`: on the left of || the subshell would run without set -e (bootstrap.sh sets it)
else
  echo "llmrum: SKIP frontend_sdk build, unit tests and size check: npm not found (the committed bundle is used as is)"
fi
echo "llmrum: pytest (DATABASE_URL=${DATABASE_URL:-<unset: SQLite>}, CELERY_BROKER_URL=${CELERY_BROKER_URL:-<unset: filesystem>})"
exec .venv/bin/python -m pytest "$@"
