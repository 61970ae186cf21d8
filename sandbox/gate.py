"""The path every provider call takes before the provider does any work.

    arrive ─► (the provider validates the request) ─► admit: injected faults, then quota
           ─► the provider works for its latency ─► leave

The gate decides; it neither sleeps nor answers. Each provider module turns a ``Refusal``
into that provider's own error shape, and its transport (ASGI or moto's WSGI) carries out a
``HangUp``. That keeps one policy for both the event loop and moto's threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sandbox.faults import FaultBook
from sandbox.quotas import Admitted, QuotaBook, QuotaState
from sandbox.stats import StatsBook


class Refusal(Exception):
    """The provider answers an error instead of working: a 429 (quota or fault) or a 500."""

    def __init__(
        self,
        provider: str,
        status: int,
        reason: str,
        retry_after_s: int | None = None,
        quota_state: QuotaState | None = None,
        tokens: int = 0,
    ) -> None:
        super().__init__(f"{provider}: {status} ({reason})")
        self.provider = provider
        self.status = status
        # "requests", "tokens", "concurrency" (quota) or "fault"
        self.reason = reason
        # None when the request can never fit, e.g. more tokens than a whole window allows.
        self.retry_after_s = retry_after_s
        self.quota_state = quota_state
        self.tokens = tokens


class HangUp(Exception):
    """A "timeout" fault: hold the request open for ``hold_s``, then close the connection."""

    def __init__(self, provider: str, hold_s: float) -> None:
        super().__init__(f"{provider}: hang up after {hold_s}s")
        self.provider = provider
        self.hold_s = hold_s


class Ticket:
    """An admitted call. Release it when the answer is out (it is a context manager)."""

    def __init__(self, gate: Gate, provider: str, admitted: Admitted, extra_delay_s: float) -> None:
        self._gate = gate
        self.provider = provider
        self.quota_state = admitted.state
        # Added by a "slow" fault on top of the provider's own latency.
        self.extra_delay_s = extra_delay_s
        self._slot = admitted.slot
        self._unreleased = threading.Lock()

    def release(self) -> None:
        # Taking the lock without ever giving it back makes release happen exactly once.
        if self._unreleased.acquire(blocking=False):
            self._gate._leave(self.provider, self._slot)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


@dataclass
class Gate:
    stats: StatsBook
    quotas: QuotaBook
    faults: FaultBook

    def arrive(self, provider: str) -> None:
        """Count a request the moment it reaches a provider, whatever becomes of it."""
        self.stats.arrived(provider)

    def admit(self, provider: str, *, tokens: int = 0, expected_s: float = 0.0) -> Ticket:
        """Let a valid request in, or raise ``Refusal`` / ``HangUp``.

        Faults come first, as an overloaded or failing provider answers before it counts
        anything against a quota. ``tokens`` is what the provider's limiter charges;
        ``expected_s`` is how long the call will take, which tells a refused caller when a
        concurrency slot frees up.
        """
        strike = self.faults.draw(provider)
        if strike.mode == "timeout":
            raise HangUp(provider, strike.extra_delay_s)
        if strike.mode == "429":
            self.stats.rejected(provider, "fault")
            raise Refusal(provider, 429, "fault", strike.retry_after_s, self.quotas[provider].state(), tokens)
        if strike.mode == "500":
            raise Refusal(provider, 500, "fault", quota_state=self.quotas[provider].state())
        verdict = self.quotas[provider].admit(tokens, expected_s + strike.extra_delay_s)
        if not isinstance(verdict, Admitted):
            self.stats.rejected(provider, verdict.limit, _used(verdict.state))
            raise Refusal(provider, 429, verdict.limit, verdict.retry_after_s, verdict.state, tokens)
        self.stats.started(provider, tokens)
        return Ticket(self, provider, verdict, strike.extra_delay_s)

    def reset(self) -> None:
        """As if freshly started: no stats, empty quota windows, no faults."""
        self.stats.reset()
        self.quotas.reset()
        self.faults.clear()

    def _leave(self, provider: str, slot: int) -> None:
        self.quotas[provider].release(slot)
        self.stats.finished(provider)


def _used(state: QuotaState) -> dict:
    """What each window had used when it refused: ``{"requests_used": 50, ...}``."""
    return {
        f"{name}_used": window.limit - window.remaining
        for name, window in (("requests", state.requests), ("tokens", state.tokens))
        if window is not None
    }
