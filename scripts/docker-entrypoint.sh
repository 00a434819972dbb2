#!/bin/sh
# Picks the role of the one llmrum image: web, worker, beat, or any manage.py command.
set -eu
role="${1:-web}"
case "$role" in
  web)
    # /metrics sums the files of live gunicorn workers; a new start begins at zero.
    rm -f "${LLMRUM_PROMETHEUS_DIR:-$LLMRUM_DATA_DIR/prometheus}"/*.db
    if [ "${LLMRUM_MIGRATE:-0}" = "1" ]; then
      python manage.py migrate --noinput
    fi
    # WEB_CONCURRENCY (read by gunicorn) sets the worker count; sync workers and
    # persistent database connections are what bench/ingest measured fastest.
    exec gunicorn rumserver.wsgi \
      --bind "0.0.0.0:${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-4}" \
      --access-logfile - \
      --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}"
    ;;
  worker)
    exec celery -A rumserver worker --loglevel "${LLMRUM_LOG_LEVEL:-INFO}"
    ;;
  beat)
    exec celery -A rumserver beat --loglevel "${LLMRUM_LOG_LEVEL:-INFO}" \
      --schedule "${LLMRUM_DATA_DIR}/celerybeat-schedule"
    ;;
  *)
    exec python manage.py "$@"
    ;;
esac
