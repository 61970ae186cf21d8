"""Exponential backoff, from tenacity's wait strategies.

Most of Unilingo's retries are durable: a job's next try and a webhook's next attempt are a time
written to Redis, which any worker acts on, so no retry loop in one process runs them. Their
delays still come from tenacity (exponential, capped, with jitter): ``delay(wait, attempt)``
asks a strategy what it would wait after failed attempt ``attempt``. Loops that do run in one
process (the CLI polling a job) use tenacity's ``Retrying`` itself.
"""

from __future__ import annotations

import tenacity
from tenacity.wait import wait_base


def exponential(first: float, ceiling: float, factor: float = 2.0) -> wait_base:
    """``first * factor**(n - 1)`` after attempt ``n``, at most ``ceiling``."""
    return tenacity.wait_exponential(multiplier=first, max=ceiling, exp_base=factor)


def equal_jitter(first: float, ceiling: float, factor: float = 2.0) -> wait_base:
    """Half of the capped exponential delay fixed, the other half random (uniform in
    ``[d/2, d]``): a burst of failures spreads its retries, and none comes back sooner than half
    its delay."""
    half = exponential(first / 2, ceiling / 2, factor)
    return half + tenacity.wait_random_exponential(multiplier=first / 2, max=ceiling / 2, exp_base=factor)


# What a wait strategy is asked with: the state of a retry loop, here only its attempt number.
_LOOP = tenacity.Retrying()


def delay(wait: wait_base, attempt: int) -> float:
    """Seconds ``wait`` waits after failed attempt ``attempt`` (counted from 1)."""
    state = tenacity.RetryCallState(retry_object=_LOOP, fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(wait(state))
