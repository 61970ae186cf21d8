"""Injected faults: a provider answers 429s or 500s, hangs up, or slows down for a while.

A fault with ``rate`` r affects exactly r of the requests it sees, spread evenly (an
error-diffusion counter rather than a coin flip), so a test that injects ``rate=0.5`` and
sends ten requests sees exactly five faulted ones.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandbox.profiles import KnownProvider

FaultMode = Literal["429", "500", "timeout", "slow"]

DEFAULT_DELAY_S = {"timeout": 30.0, "slow": 5.0}

# When a request matches several faults, the most disruptive one decides what it gets.
SEVERITY = {"timeout": 3, "500": 2, "429": 1}


class FaultSpec(BaseModel):
    """The body of ``POST /_sandbox/faults``."""

    model_config = ConfigDict(extra="forbid")

    provider: KnownProvider
    mode: FaultMode
    duration_s: float = Field(gt=0, le=86_400)
    rate: float = Field(default=1.0, gt=0, le=1)
    delay_s: float | None = Field(default=None, ge=0, le=3_600)

    @field_validator("mode", mode="before")
    @classmethod
    def _status_codes_may_be_numbers(cls, value):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _delay_only_where_it_means_something(self) -> FaultSpec:
        if self.delay_s is not None and self.mode not in DEFAULT_DELAY_S:
            raise ValueError(f"delay_s applies only to modes 'timeout' and 'slow', not {self.mode!r}")
        return self


def describe_validation_error(error: ValidationError) -> str:
    """One readable line: ``mode: Input should be '429', '500', 'timeout' or 'slow'; ...``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


@dataclass
class ActiveFault:
    id: int
    spec: FaultSpec
    expires_at: float  # on the monotonic clock
    wall_expires_at: float
    _credit: float = field(default=0.0, repr=False)

    @property
    def delay_s(self) -> float:
        return self.spec.delay_s if self.spec.delay_s is not None else DEFAULT_DELAY_S.get(self.spec.mode, 0.0)

    def strikes(self) -> bool:
        """Whether this request is one of the ``rate`` fraction the fault affects."""
        self._credit += self.spec.rate
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False

    def describe(self, now: float) -> dict:
        return {
            "id": self.id,
            **self.spec.model_dump(),
            "delay_s": self.delay_s if self.spec.mode in DEFAULT_DELAY_S else None,
            "expires_at": round(self.wall_expires_at, 3),
            "remaining_s": round(max(0.0, self.expires_at - now), 3),
        }


@dataclass(frozen=True)
class Strike:
    """What the faults active for a provider do to one request."""

    mode: Literal["429", "500", "timeout"] | None  # None: answer normally (maybe slowed)
    extra_delay_s: float = 0.0  # "slow" faults; for "timeout", how long to hold the request
    retry_after_s: int = 1  # for "429"


NO_STRIKE = Strike(None)


class FaultBook:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._faults: list[ActiveFault] = []
        self._ids = itertools.count(1)

    def inject(self, spec: FaultSpec) -> dict:
        with self._lock:
            now = self._clock()
            fault = ActiveFault(next(self._ids), spec, now + spec.duration_s, self._wall_clock() + spec.duration_s)
            self._faults.append(fault)
            return fault.describe(now)

    def active(self) -> list[dict]:
        with self._lock:
            now = self._expire()
            return [fault.describe(now) for fault in self._faults]

    def clear(self, provider: str | None = None) -> int:
        with self._lock:
            before = len(self._faults)
            self._faults = [fault for fault in self._faults if provider is not None and fault.spec.provider != provider]
            return before - len(self._faults)

    def draw(self, provider: str) -> Strike:
        with self._lock:
            now = self._expire()
            struck = [fault for fault in self._faults if fault.spec.provider == provider and fault.strikes()]
        if not struck:
            return NO_STRIKE
        slow_s = sum(fault.delay_s for fault in struck if fault.spec.mode == "slow")
        failing = [fault for fault in struck if fault.spec.mode in SEVERITY]
        if not failing:
            return Strike(None, extra_delay_s=slow_s)
        worst = max(failing, key=lambda fault: SEVERITY[fault.spec.mode])
        if worst.spec.mode == "timeout":
            return Strike("timeout", extra_delay_s=worst.delay_s)
        # A fault that hits every request lasts until it expires: say so. One that hits only
        # some is worth retrying at once.
        remaining = worst.expires_at - now
        retry_after = max(1, math.ceil(remaining)) if worst.spec.rate >= 1.0 else 1
        return Strike(worst.spec.mode, retry_after_s=retry_after)

    def _expire(self) -> float:
        now = self._clock()
        self._faults = [fault for fault in self._faults if fault.expires_at > now]
        return now
