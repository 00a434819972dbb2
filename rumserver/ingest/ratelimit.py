"""Rate limits shared by every web process and node (DESIGN.md §10.1).

A limit is a token bucket: ``rate`` requests a second with bursts of ``burst``. It is
kept as GCRA's "theoretical arrival time", one number per key, so a check is one
atomic step:

- ``LLMRUM_CACHE_URL=redis://…``: one Lua script in Redis checks every key of a
  request and takes from all of them or none, on Redis's own clock (web nodes' clocks
  may differ). One round trip per request. If Redis does not answer, requests are
  let through (logged, and Redis is left alone for a few seconds): a rate limit must
  never take ingest down with it.
- otherwise (the embedded default, local memory): buckets in this process, the same
  arithmetic under a lock. With N processes the effective limit is N times the rate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.cache import caches

if TYPE_CHECKING:
    from redis.commands.core import Script

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    key: str
    rate: float  # requests per second
    burst: float  # requests allowed at once


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


class TokenBuckets:
    """In-process buckets (local memory)."""

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tat: dict[str, float] = {}  # key -> theoretical arrival time
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._clock = clock

    def take(self, limits: Sequence[Limit]) -> float:
        """Take one token from every limit, or none; 0.0 when allowed, else the
        seconds until all of them have one."""
        now = self._clock()
        with self._lock:
            new = [_next_tat(self._tat.get(limit.key, now), now, limit) for limit in limits]
            wait = max((allowed_at - now for _, allowed_at in new), default=0.0)
            if wait > 0:
                return wait
            if len(self._tat) + len(limits) > self._max_keys:
                # A flood of distinct keys (spoofed addresses) must not grow memory without end.
                self._tat = {k: t for k, t in self._tat.items() if t > now}
                if len(self._tat) + len(limits) > self._max_keys:
                    self._tat.clear()
            for limit, (tat, _) in zip(limits, new, strict=True):
                self._tat[limit.key] = tat
            return 0.0

    def clear(self) -> None:
        with self._lock:
            self._tat.clear()


def _next_tat(tat: float, now: float, limit: Limit) -> tuple[float, float]:
    """(the key's next arrival time if this request is taken, when it may be taken)."""
    interval = 1.0 / limit.rate
    new_tat = max(tat, now) + interval
    return new_tat, new_tat - limit.burst * interval


# KEYS: bucket keys; ARGV: rate1, burst1, rate2, burst2, ... Time from Redis (µs), so
# every node agrees. Returns 0 when taken, else the wait in microseconds.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local interval = 1000000 / tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  new[i] = tat + interval
  local w = new[i] - burst * interval - now
  if w > wait then wait = w end
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', new[i]), 'PX', math.ceil((new[i] - now) / 1000) + 1)
end
return 0
"""


class RedisBuckets:
    """Buckets in the Redis behind Django's cache ``alias`` (shared by every node)."""

    PAUSE_AFTER_ERROR = 5.0

    def __init__(self, alias: str = "default") -> None:
        self._alias = alias
        self._script: Script | None = None
        self._paused_until = 0.0
        # One redis client per cache object (Django keeps one a thread): get_client()
        # builds a new one on every call, which took more CPU than the script's round
        # trip (57 of 117 µs a request); the connection pool under it is the same.
        self._clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def _client(self) -> tuple[Any, Any]:
        cache = caches[self._alias]
        client = self._clients.get(cache)
        if client is None:
            # Django's RedisCache keeps its client behind a private attribute; the Lua
            # script needs the client itself (the cache API has no atomic
            # read-modify-write).
            client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
            self._clients[cache] = client
        return cache, client

    def take(self, limits: Sequence[Limit]) -> float:
        if time.monotonic() < self._paused_until:
            return 0.0
        try:
            cache, client = self._client()
            if self._script is None:
                self._script = client.register_script(_GCRA)
            keys = [cache.make_key(f"ratelimit:{limit.key}") for limit in limits]
            args = [v for limit in limits for v in (limit.rate, limit.burst)]
            wait_us = self._script(keys=keys, args=args, client=client)
        except Exception as error:  # any Redis failure: let the request through
            self._paused_until = time.monotonic() + self.PAUSE_AFTER_ERROR
            logger.warning("rate limits not checked for %ss: %s", self.PAUSE_AFTER_ERROR, error)
            return 0.0
        return int(wait_us) / 1e6

    def clear(self) -> None:
        """Forget every bucket (tests)."""
        try:
            cache, client = self._client()
            for key in client.scan_iter(match=cache.make_key("ratelimit:*")):
                client.delete(key)
        except Exception as error:
            logger.warning("rate limits not cleared: %s", error)
        self._paused_until = 0.0


def buckets_for(cache_url: str) -> TokenBuckets | RedisBuckets:
    """Shared buckets when the cache is Redis, else this process's own."""
    return RedisBuckets() if cache_url else TokenBuckets()
