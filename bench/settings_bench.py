"""Settings for bench/ingest: the app's own settings with a URLconf that adds a
no-op view, so the baseline runs in the same gunicorn process, behind the same
middleware, as the beacon endpoint."""

from rumserver.settings import *  # noqa: F403

ROOT_URLCONF = "noop_urls"
