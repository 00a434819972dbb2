"""The helper's Django settings, read and checked once when the middleware starts.

A bad value raises ``ImproperlyConfigured`` at start-up, naming the setting: a
misspelt origin must not quietly turn every cross-origin chat request into a CORS
error in the browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# The headers the llmrum snippet adds to chat requests (STANDARDS.md §6.6). A preflight
# that does not allow them fails, and with it the chat request, so they are always allowed.
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
DEFAULT_ALLOW_HEADERS = ("accept", "authorization", "content-type")
DEFAULT_ALLOW_METHODS = ("GET", "POST")
# Chromium caps the preflight cache at 2 hours; a longer value buys nothing there.
DEFAULT_MAX_AGE = 7200


@dataclass(frozen=True)
class HelperSettings:
    cors_allowed_origins: frozenset[str]
    cors_urls: re.Pattern[str]
    cors_allow_methods: tuple[str, ...]
    cors_allow_headers: tuple[str, ...]
    cors_expose_headers: tuple[str, ...]
    cors_allow_credentials: bool
    cors_max_age: int
    server_timing: bool

    @classmethod
    def load(cls) -> HelperSettings:
        return cls(
            cors_allowed_origins=frozenset(
                _origin(o) for o in _strings("LLMRUM_CORS_ALLOWED_ORIGINS", ())
            ),
            cors_urls=_regex("LLMRUM_CORS_URLS_REGEX", r"^.*$"),
            cors_allow_methods=_unique(
                m.upper() for m in _strings("LLMRUM_CORS_ALLOW_METHODS", DEFAULT_ALLOW_METHODS)
            ),
            cors_allow_headers=_unique(
                h.lower()
                for h in (
                    *_strings("LLMRUM_CORS_ALLOW_HEADERS", DEFAULT_ALLOW_HEADERS),
                    *TRACE_HEADERS,
                )
            ),
            cors_expose_headers=_unique(
                ("Server-Timing", *_strings("LLMRUM_CORS_EXPOSE_HEADERS", ()))
            ),
            cors_allow_credentials=_bool("LLMRUM_CORS_ALLOW_CREDENTIALS", False),
            cors_max_age=_int("LLMRUM_CORS_MAX_AGE", DEFAULT_MAX_AGE),
            server_timing=_bool("LLMRUM_SERVER_TIMING", True),
        )


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _strings(name: str, default: Iterable[str]) -> tuple[str, ...]:
    value = _setting(name, default)
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ImproperlyConfigured(f"{name} must be a list of strings, got {value!r}")
    return tuple(v.strip() for v in value if v.strip())


def _bool(name: str, default: bool) -> bool:
    value = _setting(name, default)
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"{name} must be True or False, got {value!r}")
    return value


def _int(name: str, default: int) -> int:
    value = _setting(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _regex(name: str, default: str) -> re.Pattern[str]:
    value = _setting(name, default)
    try:
        return re.compile(value)
    except (re.error, TypeError) as error:
        raise ImproperlyConfigured(f"{name} is not a regular expression: {error}") from None


def _origin(value: str) -> str:
    """An origin as browsers send it: ``scheme://host[:port]``, lowercase, no path."""
    parts = urlsplit(value.lower())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ImproperlyConfigured(
            f"LLMRUM_CORS_ALLOWED_ORIGINS: {value!r} is not an origin like https://chat.example.com"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
