"""A clock for tests that walk through minutes in microseconds."""

from __future__ import annotations


class FakeClock:
    """Seconds that only move when told; starts far from 0 like a real epoch."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now = round(self.now + seconds, 3)  # whole milliseconds, as the Redis scripts count
