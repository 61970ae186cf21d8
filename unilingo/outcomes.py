"""How a provider call and a job run ended: each decided in one place, observed by the rest.

A provider call's outcome is decided once, by ``classify`` on what the call raised, in the
runner's one path per call (``workers.runner.JobContext.provider_call``). The limiter (the
shared breaker, the provider's pause, the token charge), the metrics
(``unilingo_provider_calls_total{outcome}``), the trace (``unilingo.provider.outcome``) and
the runner (what the job does next) all take that value; none of them looks at the
exception again.

A job run's outcome (``RunOutcome``) is decided by the runner (``workers.runner.run``) and
observed by the metrics (``unilingo_jobs_total{outcome}``) and the trace
(``unilingo.job.outcome``).

The values are label values that dashboards and alerts select on (``outcome="throttled"``,
``outcome=~"succeeded|failed"``): renaming one is a change to the chart's queries too.
"""

from __future__ import annotations

from enum import StrEnum

from unilingo.errors import PermanentError, Throttled, TransientError


class CallOutcome(StrEnum):
    """How one provider call ended, once it had its permit."""

    SUCCESS = "success"
    THROTTLED = "throttled"  # the provider answered 429: paused for everyone, feeds the breaker
    ERROR = "error"  # the provider failed (5xx, timeout, connection): feeds the breaker
    REJECTED = "rejected"  # the provider refused this input (a 4xx other than 429)
    ABORTED = "aborted"  # our own error, a cancellation or a hand-back during the call


def classify(exc: BaseException | None) -> CallOutcome:
    """The outcome of a provider call that raised ``exc`` (None: it returned)."""
    if exc is None:
        return CallOutcome.SUCCESS
    if isinstance(exc, Throttled):
        return CallOutcome.THROTTLED
    if isinstance(exc, TransientError):
        return CallOutcome.ERROR
    if isinstance(exc, PermanentError):
        return CallOutcome.REJECTED
    return CallOutcome.ABORTED


class RunOutcome(StrEnum):
    """How a run of a job ended (and ``cancelled``, which the API counts for a job it cancels)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEFERRED = "deferred"  # no provider permit: waits in Redis, its attempt not counted
    RETRIED = "retried"  # a transient failure: waits out a backoff, its attempt counted
    STALE = "stale"  # cancelled or taken over while this run worked: its answer was refused
    HANDED_BACK = "handed_back"  # the worker left before the job finished: queued again, attempt kept

    @property
    def ended_job(self) -> bool:
        """Whether the run ended the job (its run time and queue wait are measured)."""
        return self in (RunOutcome.SUCCEEDED, RunOutcome.FAILED)
