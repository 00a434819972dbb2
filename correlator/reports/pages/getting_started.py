"""The overview's first steps for an application that has recorded nothing yet: the
snippet to paste (with ``chatUrls``, whose default is empty) and where spans go."""

from __future__ import annotations

from rumserver.applications import sdk_snippet
from rumserver.models import Application, BrowserSession


def getting_started(*, app: Application, base_url: str) -> dict[str, str] | None:
    """The snippet for ``app`` on this server, while no browser has ever reported to it
    (one probe of the (application, session id) unique index); None once one has."""
    if BrowserSession.objects.filter(app=app).exists():
        return None
    return {"snippet": sdk_snippet(base_url, app.public_key), "base_url": base_url}
