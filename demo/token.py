"""How the demo's simulated gateway and model server get the demo application's
ingest token, which llmrum stores only hashed.

``manage.py serve`` calls :func:`demo_token_ensure` before it starts the web
processes: it keeps the token in ``<LLMRUM_DATA_DIR>/demo-ingest-token`` (mode
0600, written atomically). When the file is missing or no longer matches the
application (its token was rotated elsewhere), the demo application's token is
rotated and the new one written (and printed once, as on create). The web
processes read the file (or ``LLMRUM_DEMO_INGEST_TOKEN``, which wins, for
deployments that hand secrets through the environment).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

from rumserver.applications import application_rotate_token, token_hash
from rumserver.models import Application

DEMO_SLUG = "demo"
TOKEN_FILE_NAME = "demo-ingest-token"


def demo_token_path() -> Path:
    configured = getattr(settings, "LLMRUM_DEMO_TOKEN_FILE", "")
    return Path(configured) if configured else Path(settings.DATA_DIR) / TOKEN_FILE_NAME


def demo_token_write(token: str, path: Path | None = None) -> Path:
    """Write the token readable by this user only, replacing the file atomically."""
    path = path or demo_token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def demo_token_read() -> str:
    """The demo's ingest token, or "" when none was handed over."""
    from_env = os.environ.get("LLMRUM_DEMO_INGEST_TOKEN", "").strip()
    if from_env:
        return from_env
    try:
        return demo_token_path().read_text().strip()
    except OSError:
        return ""


def demo_token_ensure(app: Application, created_token: str | None = None) -> tuple[str, bool]:
    """Make the token file hold a working token of ``app``. Returns (token, rotated):
    ``rotated`` is True when the old token had to be replaced (it stops working)."""
    if os.environ.get("LLMRUM_DEMO_INGEST_TOKEN", "").strip():
        return demo_token_read(), False  # the operator hands it over; never rotate theirs
    if created_token:
        demo_token_write(created_token)
        return created_token, False
    current = demo_token_read()
    if current and token_hash(current) == app.ingest_token_hash:
        if not demo_token_path().exists():
            demo_token_write(current)
        return current, False
    rotated = application_rotate_token(slug=app.slug)
    demo_token_write(rotated.ingest_token)
    return rotated.ingest_token, True


def demo_token_on_serve(
    sender: Any,
    *,
    application: Application,
    ingest_token: str | None,
    demo: bool,
    stdout: Any,
    **kwargs: Any,
) -> None:
    """``rumserver.signals.serve_starting``: the demo's simulated gateway and model
    server export spans with this application's token, which is stored hashed only;
    hand it over in a file only this user can read (README: "Demo")."""
    if not demo:
        return
    token, rotated = demo_token_ensure(application, ingest_token)
    if rotated:
        stdout.write(
            "llmrum: rotated the demo application's ingest token for the demo chat "
            f"(kept in {demo_token_path()}; the old one stops working):"
        )
        keys = {"slug": application.slug, "public_key": application.public_key}
        stdout.write(json.dumps({**keys, "ingest_token": token}))
