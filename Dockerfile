# llmrum production image: one image, three roles (DESIGN.md §9).
#   docker run IMAGE web      gunicorn on :8000 (migrates first when LLMRUM_MIGRATE=1)
#   docker run IMAGE worker   celery -A rumserver worker
#   docker run IMAGE beat     celery -A rumserver beat
# Configure with DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY, ALLOWED_HOSTS, LLMRUM_*.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LLMRUM_DATA_DIR=/var/lib/llmrum

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. psycopg[binary]
# ships libpq in its wheel: no compiler or system libraries are needed. requirements.txt
# installs the backend helpers from ./backend (the llmrum-backend package), so that
# folder comes along.
COPY requirements.txt .
COPY backend/ backend/
RUN pip install -r requirements.txt

COPY . .

# Static files (the SDK bundle and the admin) are collected at build time and
# served by WhiteNoise in every role. The throwaway SQLite file only satisfies
# Django's start-up checks here; it is not part of the image's runtime state.
RUN DATABASE_URL=sqlite:////tmp/build.sqlite3 SECRET_KEY=build-only \
        python manage.py collectstatic --noinput --verbosity 0 \
    && rm -f /tmp/build.sqlite3 \
    && groupadd --system --gid 10001 llmrum \
    && useradd --system --uid 10001 --gid llmrum --home-dir /app --shell /usr/sbin/nologin llmrum \
    && mkdir -p "$LLMRUM_DATA_DIR" \
    && chown -R llmrum:llmrum "$LLMRUM_DATA_DIR" \
    && chmod +x scripts/docker-entrypoint.sh

USER llmrum:llmrum
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)" || exit 1

ENTRYPOINT ["scripts/docker-entrypoint.sh"]
CMD ["web"]
