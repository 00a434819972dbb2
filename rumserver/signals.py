"""Signals that other apps connect to, so that rumserver needs no import of them."""

from __future__ import annotations

from django.dispatch import Signal

# ``manage.py serve`` sends it once the application its banner shows exists, before the
# web processes start. Keyword arguments: ``application`` (rumserver.models.Application),
# ``ingest_token`` (that application's token when serve has just created it, else None:
# it is stored hashed only), ``demo`` (whether the demo chat is on) and ``stdout`` (where
# to tell the user). The demo hands its simulated services a token here (demo.apps).
serve_starting = Signal()
