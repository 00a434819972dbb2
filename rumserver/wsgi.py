"""WSGI entry point for gunicorn (``gunicorn rumserver.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rumserver.settings")

application = get_wsgi_application()
