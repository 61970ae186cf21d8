"""What each provider received: totals, 429s, peak concurrency and a per-second timeline.

The timeline is keyed by wall-clock unix second so that a test or benchmark can line it up
with its own clock and check, say, that no 60 s span carried more than the quota.
``requests`` counts every request that reached a provider, refused ones included;
``tokens`` counts what the provider's limiter charged for the requests it admitted.

Thread-safe: updated from the event loop and from moto's threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from sandbox.profiles import PROVIDERS

# A day of seconds per provider is plenty for a soak test and bounds memory for a sandbox
# that is left running.
TIMELINE_RETENTION_S = 86_400
REFUSALS_KEPT = 20


class ProviderStats:
    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._wall_clock = wall_clock
        self.requests = 0
        self.rejected_429 = 0
        self.in_flight = 0
        self.peak_concurrency = 0
        self._per_second: OrderedDict[int, dict[str, int]] = OrderedDict()
        # The latest refusals, each with the limit that refused and what it had used: what a
        # client that met a 429 wants to know first.
        self._refusals: deque[dict] = deque(maxlen=REFUSALS_KEPT)

    def arrived(self) -> None:
        self.requests += 1
        self._second()["requests"] += 1

    def rejected(self, reason: str = "", detail: dict | None = None) -> None:
        self.rejected_429 += 1
        self._second()["rejected_429"] += 1
        self._refusals.append({"at": round(self._wall_clock(), 3), "reason": reason, **(detail or {})})

    def started(self, tokens: int) -> None:
        self.in_flight += 1
        self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
        if tokens:
            self._second()["tokens"] += tokens

    def finished(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero the counters; calls still in flight stay counted as in flight."""
        self.requests = 0
        self.rejected_429 = 0
        self.peak_concurrency = self.in_flight
        self._per_second.clear()
        self._refusals.clear()

    def snapshot(self) -> dict:
        return {
            "requests": self.requests,
            "rejected_429": self.rejected_429,
            "peak_concurrency": self.peak_concurrency,
            "in_flight": self.in_flight,
            "per_second": {str(second): dict(counts) for second, counts in sorted(self._per_second.items())},
            "refusals": list(self._refusals),
        }

    def _second(self) -> dict[str, int]:
        second = int(self._wall_clock())
        counts = self._per_second.get(second)
        if counts is None:
            counts = self._per_second[second] = {"requests": 0, "rejected_429": 0, "tokens": 0}
            while next(iter(self._per_second)) < second - TIMELINE_RETENTION_S:
                self._per_second.popitem(last=False)
        return counts


class StatsBook:
    """All providers' stats behind one lock (updates are a few additions: no contention)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._providers = {name: ProviderStats(wall_clock) for name in PROVIDERS}

    def arrived(self, provider: str) -> None:
        with self._lock:
            self._providers[provider].arrived()

    def rejected(self, provider: str, reason: str = "", detail: dict | None = None) -> None:
        with self._lock:
            self._providers[provider].rejected(reason, detail)

    def started(self, provider: str, tokens: int = 0) -> None:
        with self._lock:
            self._providers[provider].started(tokens)

    def finished(self, provider: str) -> None:
        with self._lock:
            self._providers[provider].finished()

    def reset(self) -> None:
        with self._lock:
            for stats in self._providers.values():
                stats.reset()

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {name: stats.snapshot() for name, stats in self._providers.items()}
