"""A provider's live state as a ``UnilingoProviderPolicy`` reports it in ``status.live``.

The operator refreshes it periodically from the limiter's view of Redis (one read-only script),
so ``kubectl get upp -o wide`` shows what the workers meet right now: the shared breaker, a
provider's ``Retry-After`` pause, the per-minute figures the permits are held to, which
with ``adaptive: true`` are what the provider says the account allows when that is lower than
the policy (``unilingo.adaptive``), and what the provider has cost this UTC day and month
against its budget.

Only what changes with the provider's state is reported, not with every call (the calls in the
current minute, the remaining counts of the last answer): the status is patched only when the
block differs, and a resource whose status changed at every call would churn the API server
and every watch on it.
"""

from __future__ import annotations

import datetime
from typing import Any

from unilingo.limiter import BreakerState, ProviderStatus


def iso(epoch_seconds: float) -> str:
    """RFC 3339 in whole seconds, as Kubernetes writes times."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _figures(requests_per_minute: int | None, tokens_per_minute: int | None) -> dict[str, int]:
    # 0 / None: not metered or not stated, left out (as in the policy: 0 = not metered).
    figures = {"requestsPerMinute": requests_per_minute, "tokensPerMinute": tokens_per_minute}
    return {name: value for name, value in figures.items() if value}


def live_status(status: ProviderStatus) -> dict[str, Any]:
    """``status.live`` of the policy resource governing ``status.provider`` (camelCase, as the CRD)."""
    rpm, tpm = status.effective
    live: dict[str, Any] = {
        "breaker": status.breaker.value,
        "adaptive": status.policy.adaptive,
        "effective": {"requestsPerMinute": rpm, "tokensPerMinute": tpm},
    }
    if status.breaker is BreakerState.OPEN and status.breaker_half_open_at is not None:
        live["halfOpenAt"] = iso(status.breaker_half_open_at)
    if status.paused_until is not None:
        live["pausedUntil"] = iso(status.paused_until)
    if status.learned is not None:
        learned = _figures(status.learned.requests_per_minute, status.learned.tokens_per_minute)
        if learned:
            live["learned"] = learned
    # Spend, when the policy sets a budget to hold it against (without one, /api/ai/status and the
    # metrics show it). It moves with every billed call; the status follows on the timer's beat.
    if status.spend is not None and status.policy.budget.limited:
        live["spend"] = status.spend.as_status()
    return live
