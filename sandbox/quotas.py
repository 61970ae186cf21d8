"""Per-provider quotas: rolling request and token windows and a concurrency cap.

A rolling window (not a fixed per-minute bucket) is what lets a test assert "no 60 s
interval ever carried more than the quota": the sandbox refuses exactly the request that
would break that promise. Refused requests consume nothing, so a client that backs off for
``Retry-After`` seconds is always let through.

Thread-safe: the ASGI providers run on the event loop and the AWS ones in moto's threads.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandbox.profiles import QUOTAS, KnownProvider, Quota


class QuotaSpec(BaseModel):
    """The body of ``POST /_sandbox/quotas``: an account whose quota differs from the default.

    A figure left out keeps its current value; 0 lifts that limit.
    """

    model_config = ConfigDict(extra="forbid")

    provider: KnownProvider
    requests_per_minute: int | None = Field(default=None, ge=0, le=10_000_000)
    tokens_per_minute: int | None = Field(default=None, ge=0, le=1_000_000_000)

    @model_validator(mode="after")
    def _says_something(self) -> QuotaSpec:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("give requests_per_minute, tokens_per_minute or both")
        return self


class SlidingWindow:
    """Amounts admitted during the last ``window_s`` seconds, against a limit.

    Not locked itself: its owner holds a lock around every call.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._used = 0

    def used(self, now: float) -> int:
        self._expire(now)
        return self._used

    def remaining(self, now: float) -> int:
        return max(0, self.limit - self.used(now))

    def wait_for(self, amount: int, now: float) -> float | None:
        """Seconds until ``amount`` fits; 0 if it fits now, None if it never can."""
        if amount > self.limit:
            return None
        excess = self.used(now) + amount - self.limit
        if excess <= 0:
            return 0.0
        freed = 0
        for admitted_at, admitted in self._events:
            freed += admitted
            if freed >= excess:
                return admitted_at + self.window_s - now
        return self.window_s  # unreachable while amount <= limit; kept as a safe bound

    def until_empty(self, now: float) -> float:
        """Seconds until everything in the window has expired (OpenAI's ``x-ratelimit-reset-*``)."""
        self._expire(now)
        return self._events[-1][0] + self.window_s - now if self._events else 0.0

    def add(self, amount: int, now: float) -> None:
        if amount > 0:
            self._events.append((now, amount))
            self._used += amount

    def clear(self) -> None:
        self._events.clear()
        self._used = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._events and self._events[0][0] <= horizon:
            self._used -= self._events.popleft()[1]


@dataclass(frozen=True)
class WindowState:
    """One window's figures for the ``x-ratelimit-*`` headers."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class QuotaState:
    requests: WindowState | None
    tokens: WindowState | None


@dataclass(frozen=True)
class Admitted:
    slot: int
    state: QuotaState


@dataclass(frozen=True)
class Refused:
    limit: str  # "requests", "tokens" or "concurrency": which limit refused
    retry_after_s: int | None  # None: the request can never fit (bigger than the limit)
    state: QuotaState


class ProviderQuota:
    """One provider's limits; ``admit`` checks all of them and consumes from all at once."""

    def __init__(self, quota: Quota, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._default = quota
        self._window_s = quota.window_s
        self._requests = SlidingWindow(quota.requests_per_window, quota.window_s) if quota.requests_per_window else None
        self._tokens = SlidingWindow(quota.tokens_per_window, quota.window_s) if quota.tokens_per_window else None
        self._max_concurrent = quota.max_concurrent
        # Expected end of each admitted call, so a concurrency refusal can say when a slot frees.
        self._in_flight: dict[int, float] = {}
        self._slots = itertools.count(1)

    def admit(self, tokens: int = 0, expected_s: float = 0.0) -> Admitted | Refused:
        with self._lock:
            now = self._clock()
            # Each limit that keeps this request out, with the seconds until it would not.
            blocking: list[tuple[str, float | None]] = []
            for name, window, amount in (("requests", self._requests, 1), ("tokens", self._tokens, tokens)):
                if window is not None:
                    wait = window.wait_for(amount, now)
                    if wait is None or wait > 0:
                        blocking.append((name, wait))
            if self._max_concurrent is not None and len(self._in_flight) >= self._max_concurrent:
                blocking.append(("concurrency", max(0.0, min(self._in_flight.values()) - now)))
            if blocking:
                # Report the limit that keeps the request out longest; "never" beats any wait.
                limit, wait = max(blocking, key=lambda item: math.inf if item[1] is None else item[1])
                retry_after = None if wait is None else max(1, math.ceil(wait))
                return Refused(limit, retry_after, self._state(now))
            if self._requests is not None:
                self._requests.add(1, now)
            if self._tokens is not None:
                self._tokens.add(tokens, now)
            slot = next(self._slots)
            self._in_flight[slot] = now + expected_s
            return Admitted(slot, self._state(now))

    def release(self, slot: int) -> None:
        with self._lock:
            self._in_flight.pop(slot, None)

    def state(self) -> QuotaState:
        with self._lock:
            return self._state(self._clock())

    def reset(self) -> None:
        """Forget the windows and go back to the default limits; calls in flight keep their slots."""
        with self._lock:
            for window in (self._requests, self._tokens):
                if window is not None:
                    window.clear()
            self._restore_defaults()

    def restore_defaults(self) -> None:
        with self._lock:
            self._restore_defaults()

    def _restore_defaults(self) -> None:
        self._requests = self._resized(self._requests, self._default.requests_per_window)
        self._tokens = self._resized(self._tokens, self._default.tokens_per_window)

    def configure(self, requests_per_window: int | None = None, tokens_per_window: int | None = None) -> None:
        """Play an account with other limits (0: none). What the window holds stays counted."""
        with self._lock:
            if requests_per_window is not None:
                self._requests = self._resized(self._requests, requests_per_window)
            if tokens_per_window is not None:
                self._tokens = self._resized(self._tokens, tokens_per_window)

    def limits(self) -> dict[str, int | None]:
        with self._lock:
            return {
                "requests_per_minute": self._requests.limit if self._requests else None,
                "tokens_per_minute": self._tokens.limit if self._tokens else None,
                "max_concurrent": self._max_concurrent,
            }

    # Every provider's window is a minute (profiles.QUOTAS), so a per-minute figure is a
    # per-window one.
    def _resized(self, window: SlidingWindow | None, limit: int | None) -> SlidingWindow | None:
        if not limit:
            return None
        if window is None:
            return SlidingWindow(limit, self._window_s)
        window.limit = limit
        return window

    def _state(self, now: float) -> QuotaState:
        def window_state(window: SlidingWindow | None) -> WindowState | None:
            if window is None:
                return None
            return WindowState(window.limit, window.remaining(now), window.until_empty(now))

        return QuotaState(window_state(self._requests), window_state(self._tokens))


class QuotaBook:
    """Every provider's quota, built from Unilingo v1's figures unless told otherwise."""

    def __init__(self, quotas: dict[str, Quota] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._quotas = {name: ProviderQuota(quota, clock) for name, quota in (quotas or QUOTAS).items()}

    def __getitem__(self, provider: str) -> ProviderQuota:
        return self._quotas[provider]

    def reset(self) -> None:
        for quota in self._quotas.values():
            quota.reset()

    def restore_defaults(self) -> None:
        for quota in self._quotas.values():
            quota.restore_defaults()

    def limits(self) -> dict[str, dict[str, int | None]]:
        return {name: quota.limits() for name, quota in self._quotas.items()}
