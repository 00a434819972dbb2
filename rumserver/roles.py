"""A span's role in its trace (DESIGN.md §5): the one rule, decided once, at the stitch.

Roles belong to services: every span of a service in a trace has the role of the
first rule that matches it:

1. the service's resource pins one (``llmrum.role``: gateway, model or service);
2. ``gateway``: a SERVER span of the service is a child of the browser span;
3. ``model``: a SERVER span of the service carries a model server's GenAI attributes;
4. otherwise ``service``.

Rule 2 needs the browser span, which the correlator makes from the turn's beacon
(often the last to arrive), so only the stitch decides, with every span of the trace
in hand; it keeps the decision on the trace (``Trace.roles``), and ingest stores none.
The browser span itself is ``browser``. Spans a browser exporter sent (``llmrum.source``,
stamped by ingest) are always ``service``: a page holds only a public key, so what it
claims decides nothing, neither its own role nor that of a server's service that
shares its ``service.name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

SPAN_KIND_SERVER = 2  # OTLP SpanKind
SOURCE = "llmrum.source"  # where a span came from, when not from a server
BROWSER_OTLP = "browser-otlp"
BROWSER, GATEWAY, MODEL, SERVICE = "browser", "gateway", "model", "service"
PINNED = "llmrum.role"


# Read-only properties, so that a span whose fields are narrower (a dict for the
# Mapping) fits: the rule never writes them.
class Sourced(Protocol):
    """A span's resource attributes (the correlator loads only the two read here)."""

    @property
    def resource(self) -> Mapping[str, Any]: ...
    @property
    def service(self) -> str: ...


class RoleFacts(Sourced, Protocol):
    """What the rule reads of a span: the typed columns ingest fills, and the resource."""

    @property
    def kind(self) -> int: ...
    @property
    def parent_span_id(self) -> str: ...
    @property
    def gen_ai_operation(self) -> str: ...
    @property
    def request_model(self) -> str: ...
    @property
    def ttft_source(self) -> str: ...
    @property
    def queue_s(self) -> float | None: ...


class StoredRoleFacts(Sourced, Protocol):
    """What ``role_in_trace`` reads of a stored span."""

    @property
    def role(self) -> str: ...  # the stored column: "browser" for the correlator's span


def from_browser(span: Sourced) -> bool:
    return span.resource.get(SOURCE) == BROWSER_OTLP


def _is_model_server(span: RoleFacts) -> bool:
    return span.kind == SPAN_KIND_SERVER and bool(
        span.gen_ai_operation
        or span.request_model
        or span.ttft_source.startswith("gen_ai.latency.")
        or span.queue_s is not None
    )


def trace_roles(spans: Iterable[RoleFacts], browser_span_id: str) -> dict[str, str]:
    """service.name -> role for the services that sent ``spans`` (one trace's, the
    browser span's own excluded; ``browser_span_id`` is "" without one)."""
    servers = [s for s in spans if not from_browser(s)]
    roles: dict[str, str] = {}
    for span in servers:
        pinned = span.resource.get(PINNED)
        if pinned in (GATEWAY, MODEL, SERVICE):
            roles.setdefault(span.service, pinned)
    for span in servers:
        if browser_span_id and span.parent_span_id == browser_span_id:
            if span.kind == SPAN_KIND_SERVER:
                roles.setdefault(span.service, GATEWAY)
    for span in servers:
        if _is_model_server(span):
            roles.setdefault(span.service, MODEL)
    for span in servers:
        roles.setdefault(span.service, SERVICE)
    return dict(sorted(roles.items()))


def role_in_trace(span: StoredRoleFacts, roles: Mapping[str, str]) -> str:
    """The span's role, given its trace's ``trace_roles``."""
    if span.role == BROWSER:  # the browser span the correlator made
        return BROWSER
    if from_browser(span):
        return SERVICE
    # A trace stitched before traces kept their roles: the role that stitch wrote on
    # its spans. Received spans otherwise hold the column's default, service.
    return roles.get(span.service, span.role)
