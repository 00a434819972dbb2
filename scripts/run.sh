#!/usr/bin/env bash
# Run llmrum on the embedded default: SQLite and a filesystem broker under .data/,
# web (gunicorn), worker and beat in one terminal. Ctrl-C stops all three.
source "$(dirname "$0")/bootstrap.sh"
llmrum_install requirements.txt
exec .venv/bin/python manage.py serve "$@"
