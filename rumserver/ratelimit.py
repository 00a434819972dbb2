"""Token buckets kept in each web process.

No network round trip on the hot path: with N web processes the effective
limit is N times the configured rate, which is why the defaults sit far above
one application's normal traffic (DESIGN.md §2).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._clock = clock

    def take(self, key: str, *, rate: float, burst: float) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is free."""
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - updated) * rate)
            if tokens >= 1.0:
                if len(self._buckets) >= self._max_keys and key not in self._buckets:
                    # A flood of distinct keys (spoofed IPs) must not grow memory without end.
                    self._buckets.clear()
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))
