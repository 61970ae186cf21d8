"""The state one sandbox process shares between its providers and its control endpoints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sandbox.faults import FaultBook
from sandbox.gate import Gate
from sandbox.quotas import QuotaBook
from sandbox.stats import StatsBook


@dataclass
class Sandbox:
    latency_scale: float = 1.0
    aws_endpoint: str | None = None  # set once moto's server listens
    gate: Gate = field(default_factory=lambda: Gate(StatsBook(), QuotaBook(), FaultBook()))

    def scaled(self, real_s: float) -> float:
        """Seconds to really wait for something that takes ``real_s`` at the providers."""
        return real_s * self.latency_scale


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``: deterministic "jitter" that a test can rely on."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
