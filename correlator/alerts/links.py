"""Where an alert points: the trace list of its application and window."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse


def window_traces_url(*, app_slug: str, since: datetime, until: datetime) -> str:
    """The trace list filtered to the window; absolute when ``LLMRUM_PUBLIC_URL`` is set
    (a webhook or an e-mail is read away from llmrum), else from the site root."""
    query = urlencode({"app": app_slug, "since": since.isoformat(), "until": until.isoformat()})
    path = f"{reverse('reports:traces')}?{query}"
    return f"{settings.LLMRUM_PUBLIC_URL.rstrip('/')}{path}"
