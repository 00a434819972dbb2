"""``Server-Timing`` on a Django response; the entries are llmrum_backend.servertiming's."""

from __future__ import annotations

from django.http import HttpResponseBase

from llmrum_backend.servertiming import appended, server_timing_value

__all__ = ["add_server_timing", "server_timing_value"]


def add_server_timing(response: HttpResponseBase, value: str) -> None:
    """Append to the app's own entries rather than replace them."""
    response["Server-Timing"] = appended(response.get("Server-Timing"), value)
