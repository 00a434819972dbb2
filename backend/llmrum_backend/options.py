"""The helper's options, checked once when a middleware starts.

Both helpers take the same options: llmrum_django as settings (``LLMRUM_`` + the name in
capitals, e.g. ``LLMRUM_CORS_ALLOWED_ORIGINS``), llmrum_asgi as keyword arguments
(``cors_allowed_origins=…``). A bad value raises ``OptionError`` naming the option as
the user wrote it: a misspelt origin must not quietly turn every cross-origin chat
request into a CORS error in the browser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The headers the llmrum snippet adds to chat requests (STANDARDS.md §6.6). A preflight
# that does not allow them fails, and with it the chat request, so they are always allowed.
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
DEFAULT_ALLOW_HEADERS = ("accept", "authorization", "content-type")
DEFAULT_ALLOW_METHODS = ("GET", "POST")
# Chromium caps the preflight cache at 2 hours; a longer value buys nothing there.
DEFAULT_MAX_AGE = 7200

# Option name -> default, in the order the README lists them.
DEFAULTS: dict[str, Any] = {
    "cors_allowed_origins": (),
    "cors_urls_regex": r"^.*$",
    "cors_allow_methods": DEFAULT_ALLOW_METHODS,
    "cors_allow_headers": DEFAULT_ALLOW_HEADERS,
    "cors_expose_headers": (),
    "cors_allow_credentials": False,
    "cors_max_age": DEFAULT_MAX_AGE,
    "server_timing": True,
}


class OptionError(ValueError):
    """A bad option value; the message names the option."""


@dataclass(frozen=True)
class HelperOptions:
    cors_allowed_origins: frozenset[str]
    cors_urls: re.Pattern[str]
    cors_allow_methods: tuple[str, ...]
    cors_allow_headers: tuple[str, ...]
    cors_expose_headers: tuple[str, ...]
    cors_allow_credentials: bool
    cors_max_age: int
    server_timing: bool

    @classmethod
    def build(
        cls, values: Mapping[str, Any], spelling: Callable[[str], str] = str
    ) -> HelperOptions:
        """From ``values`` by option name (a missing one takes its default);
        ``spelling`` turns an option name into the name the user wrote, for errors."""
        unknown = sorted(set(values) - set(DEFAULTS))
        if unknown:
            raise OptionError(f"unknown option {spelling(unknown[0])}")

        def get(name: str) -> tuple[Any, str]:
            return values.get(name, DEFAULTS[name]), spelling(name)

        return cls(
            cors_allowed_origins=frozenset(
                _origin(o, spelling("cors_allowed_origins"))
                for o in _strings(*get("cors_allowed_origins"))
            ),
            cors_urls=_regex(*get("cors_urls_regex")),
            cors_allow_methods=_unique(m.upper() for m in _strings(*get("cors_allow_methods"))),
            cors_allow_headers=_unique(
                h.lower() for h in (*_strings(*get("cors_allow_headers")), *TRACE_HEADERS)
            ),
            cors_expose_headers=_unique(("Server-Timing", *_strings(*get("cors_expose_headers")))),
            cors_allow_credentials=_bool(*get("cors_allow_credentials")),
            cors_max_age=_non_negative_int(*get("cors_max_age")),
            server_timing=_bool(*get("server_timing")),
        )


def _strings(value: Any, name: str) -> tuple[str, ...]:
    # A lone string is refused, not split into characters.
    items = None if isinstance(value, str) or not isinstance(value, Iterable) else tuple(value)
    if items is None or not all(isinstance(v, str) for v in items):
        raise OptionError(f"{name} must be a list of strings, got {value!r}")
    return tuple(v.strip() for v in items if v.strip())


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be True or False, got {value!r}")
    return value


def _non_negative_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _regex(value: Any, name: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except (re.error, TypeError) as error:
        raise OptionError(f"{name} is not a regular expression: {error}") from None


def _origin(value: str, name: str) -> str:
    """An origin as browsers send it: ``scheme://host[:port]``, lowercase, no path."""
    try:
        parts = urlsplit(value.lower())
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise OptionError(f"{name}: {value!r} is not an origin like https://chat.example.com")
    return f"{parts.scheme}://{parts.netloc}"


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
