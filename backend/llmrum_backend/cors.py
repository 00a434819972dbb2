"""CORS for the chat endpoints, so the browser may send ``traceparent``, ``tracestate``
and ``baggage`` cross-origin and read ``Server-Timing`` back (STANDARDS.md §6.2, §6.3,
§6.6), as header lists each framework adapter puts on its own response.

Adding any of those headers to a cross-origin ``fetch`` makes the browser send an
OPTIONS preflight first; if the preflight is not allowed, the chat request itself
fails. Only origins in the allow-list get CORS headers; anything else gets none and the
browser blocks the request, as it would without the helper. Every answer varies by
``Origin``, which the adapters add to ``Vary``.
"""

from __future__ import annotations

from llmrum_backend.options import HelperOptions

Headers = list[tuple[str, str]]


class CorsRules:
    def __init__(self, options: HelperOptions) -> None:
        self.options = options

    def applies(self, path: str) -> bool:
        return bool(self.options.cors_allowed_origins) and bool(self.options.cors_urls.match(path))

    def allowed_origin(self, origin: str | None) -> str | None:
        return origin if origin in self.options.cors_allowed_origins else None

    @staticmethod
    def is_preflight(method: str, asks_for_method: bool) -> bool:
        """``asks_for_method``: the request carries ``Access-Control-Request-Method``."""
        return method == "OPTIONS" and asks_for_method

    def preflight_headers(self, origin: str | None) -> Headers:
        """The preflight's answer (204, no body). The allowed lists do not depend on
        what was requested, so the answer varies by Origin only."""
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return []
        options = self.options
        return [
            *self._allow(allowed),
            ("Access-Control-Allow-Methods", ", ".join(options.cors_allow_methods)),
            ("Access-Control-Allow-Headers", ", ".join(options.cors_allow_headers)),
            ("Access-Control-Max-Age", str(options.cors_max_age)),
        ]

    def response_headers(self, origin: str | None, expose_headers: str | None) -> Headers:
        """Headers for the actual (non-preflight) response; ``expose_headers`` is the
        app's own ``Access-Control-Expose-Headers``, kept and added to."""
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return []
        return [
            *self._allow(allowed),
            (
                "Access-Control-Expose-Headers",
                merge_list_header(expose_headers, self.options.cors_expose_headers),
            ),
            # Without it, Resource Timing hides serverTiming and the network phases
            # from the page for this cross-origin response (STANDARDS.md §6.2).
            ("Timing-Allow-Origin", allowed),
        ]

    def _allow(self, origin: str) -> Headers:
        # The exact origin, never "*": the chat app may send credentials.
        headers = [("Access-Control-Allow-Origin", origin)]
        if self.options.cors_allow_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers


def merge_list_header(existing: str | None, names: tuple[str, ...]) -> str:
    """A comma-separated header's value with ``names`` added, case-insensitively once."""
    present = [n.strip() for n in (existing or "").split(",") if n.strip()]
    lowered = {n.lower() for n in present}
    return ", ".join([*present, *(n for n in names if n.lower() not in lowered)])
