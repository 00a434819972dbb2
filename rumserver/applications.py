"""Applications and their keys: create, rotate, grant, and the cached lookups
that the ingest endpoints make on every request."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from rumserver.models import Application, ApplicationMember

PUBLIC_KEY_PREFIX = "pk_"
INGEST_TOKEN_PREFIX = "it_"


class ApplicationError(ValueError):
    pass


def sdk_snippet(base_url: str, public_key: str) -> str:
    """What a chat page pastes to be recorded: the SDK from this server and its
    ``init``. ``chatUrls`` is in it because its default is empty: the SDK would time no
    request, and a newcomer who pasted a snippet without it would record no turns;
    the two usual chat API paths are a start the comment says to adapt."""
    endpoint, key = json.dumps(base_url), json.dumps(public_key)
    return (
        f'<script src="{base_url}/static/llmrum/llmrum.min.js"></script>\n'
        "<script>llmrum.init({\n"
        f"  endpoint: {endpoint},\n"
        f"  key: {key},\n"
        "  // which requests are chat turns: your chat API's URLs (a string matches anywhere\n"
        "  // in the URL, a RegExp is tried on it); none by default\n"
        '  chatUrls: [/\\/v1\\/chat\\/completions/, "/api/chat"],\n'
        "});</script>"
    )


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nobody can brute
    # force the preimage, and the OTLP hot path can look the hash up directly.
    return hashlib.sha256(token.encode()).hexdigest()


def _new_public_key() -> str:
    return PUBLIC_KEY_PREFIX + secrets.token_urlsafe(18)


def _new_ingest_token() -> str:
    return INGEST_TOKEN_PREFIX + secrets.token_urlsafe(32)


def set_new_ingest_token(app: Application) -> str:
    """Give ``app`` (unsaved changes) a new ingest token; returns it, to show once."""
    token = _new_ingest_token()
    app.ingest_token_hash = token_hash(token)
    app.ingest_token_prefix = token[:10]
    return token


def set_new_keys(app: Application) -> str:
    """A new application's public key and ingest token; returns the token."""
    app.public_key = _new_public_key()
    return set_new_ingest_token(app)


def normalize_origin(origin: str) -> str:
    """``https://Chat.Example.com:443/`` -> ``https://chat.example.com``; raises on junk."""
    origin = origin.strip()
    if origin in ("*", "null"):
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError(f"not an origin (scheme://host[:port]): {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ApplicationError(f"an origin has no path, query or fragment: {origin!r}")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True)
class CreatedApplication:
    application: Application
    ingest_token: str


def application_create(
    *,
    name: str,
    origins: list[str],
    slug: str | None = None,
    sample_rate: float = 1.0,
    retention_days: int | None = None,
) -> CreatedApplication:
    if not name.strip():
        raise ApplicationError("name must not be empty")
    if not 0.0 <= sample_rate <= 1.0:
        raise ApplicationError("sample rate must be between 0 and 1")
    slug = slug or slugify(name)[:64]
    if not slug:
        raise ApplicationError(f"cannot make a slug from {name!r}; pass --slug")
    app = Application(
        name=name.strip(),
        slug=slug,
        allowed_origins=sorted({normalize_origin(o) for o in origins}),
        sample_rate=sample_rate,
        retention_days=retention_days or settings.LLMRUM_DEFAULT_RETENTION_DAYS,
    )
    token = set_new_keys(app)
    try:
        with transaction.atomic():
            app.save()
    except IntegrityError:
        raise ApplicationError(f"an application with slug {slug!r} exists already") from None
    return CreatedApplication(application=app, ingest_token=token)


def application_rotate_token(*, slug: str) -> CreatedApplication:
    """Give the application a new ingest token; the old one stops working at once."""
    with transaction.atomic():
        app = Application.objects.select_for_update().filter(slug=slug).first()
        if app is None:
            raise ApplicationError(f"no application with slug {slug!r}")
        token = set_new_ingest_token(app)
        app.save(update_fields=["ingest_token_hash", "ingest_token_prefix"])
    return CreatedApplication(application=app, ingest_token=token)


def application_grant(*, slug: str, username: str) -> ApplicationMember:
    app = Application.objects.filter(slug=slug).first()
    if app is None:
        raise ApplicationError(f"no application with slug {slug!r}")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ApplicationError(f"no user named {username!r}")
    member, _ = ApplicationMember.objects.get_or_create(application=app, user=user)
    return member


# --- Cached lookups for the ingest hot path ---------------------------------


@dataclass(frozen=True)
class IngestApp:
    """The few fields ingest needs, detached from the ORM so it can be cached."""

    id: int
    slug: str
    allowed_origins: frozenset[str]
    wildcard_suffixes: tuple[tuple[str, str], ...]  # (scheme, ".example.com")
    allow_any_origin: bool
    store_content: bool = False

    def origin_allowed(self, origin: str) -> bool:
        if self.allow_any_origin or origin in self.allowed_origins:
            return True
        scheme, _, rest = origin.partition("://")
        host = rest.rsplit(":", 1)[0] if not rest.endswith("]") else rest
        return any(scheme == s and host.endswith(suffix) for s, suffix in self.wildcard_suffixes)


def _ingest_app(app: Application) -> IngestApp:
    exact: set[str] = set()
    wildcards: list[tuple[str, str]] = []
    for origin in app.allowed_origins or []:
        scheme, sep, host = str(origin).partition("://")
        if sep and host.startswith("*."):
            wildcards.append((scheme, host[1:]))
        else:
            exact.add(str(origin))
    return IngestApp(
        id=app.pk,
        slug=app.slug,
        allowed_origins=frozenset(exact),
        wildcard_suffixes=tuple(wildcards),
        allow_any_origin="*" in exact,
        store_content=app.store_content,
    )


class _TTLCache:
    """A tiny per-process cache: the key lookup runs on every beacon."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._data: dict[str, tuple[float, IngestApp | None]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: str, ttl: float) -> tuple[bool, IngestApp | None]:
        hit = self._data.get(key)
        if hit is None or time.monotonic() - hit[0] > ttl:
            return False, None
        return True, hit[1]

    def put(self, key: str, value: IngestApp | None) -> None:
        with self._lock:
            if len(self._data) >= self._max:
                self._data.clear()  # crude but bounded: a flood of random keys cannot grow memory
            self._data[key] = (time.monotonic(), value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_by_public_key = _TTLCache()
_by_token_hash = _TTLCache()


def _cached_ingest_app(cache: _TTLCache, key: str, **lookup: str) -> IngestApp | None:
    found, cached = cache.get(key, settings.LLMRUM_APP_CACHE_SECONDS)
    if found:
        return cached
    app = Application.objects.filter(**lookup).first()
    value = _ingest_app(app) if app is not None else None
    cache.put(key, value)
    return value


def ingest_app_by_public_key(public_key: str) -> IngestApp | None:
    return _cached_ingest_app(_by_public_key, public_key, public_key=public_key)


def ingest_app_by_token(token: str) -> IngestApp | None:
    """The application an ingest token (``it_…``) belongs to; None when unknown.

    Cached by the token's hash, so a rotated token keeps working in a web process
    for at most LLMRUM_APP_CACHE_SECONDS."""
    digest = token_hash(token)
    return _cached_ingest_app(_by_token_hash, digest, ingest_token_hash=digest)


def clear_ingest_caches() -> None:
    _by_public_key.clear()
    _by_token_hash.clear()
