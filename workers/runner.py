"""Runs one job: claim it, keep its lease alive, call its handler, record how it ended.

Tasks are thin: each names a handler and calls ``run``. Everything about delivery
guarantees lives here, once.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from unilingo import backoff, errors_reporting, metrics, persistence, saved, tracing
from unilingo import cache as response_cache
from unilingo.adaptive import LearnedStore, RateLimits
from unilingo.connections import redis_client as connect
from unilingo.errors import Deferred, HandBack, PermanentError, Throttled, TransientError
from unilingo.jobs import Job, JobStore
from unilingo.limiter import DenyReason, Limiter
from unilingo.outcomes import CallOutcome, RunOutcome, classify
from unilingo.policy import PolicyStore
from unilingo.settings import get_settings
from workers import drain, uploads

log = logging.getLogger(__name__)

_client: redis.Redis | None = None


def redis_client() -> redis.Redis:
    """One connection pool per worker process (created after fork)."""
    global _client
    if _client is None:
        _client = connect()
    return _client


class _Heartbeat(threading.Thread):
    """Renews the job's lease while the handler runs; a dead process stops renewing it."""

    def __init__(self, store: JobStore, job_id: str, run_token: int, lease: float, every: float):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.store, self.job_id, self.run_token, self.lease, self.every = store, job_id, run_token, lease, every
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.extra: list[Callable[[], None]] = []

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                if not self.store.heartbeat(self.job_id, self.run_token, self.lease):
                    self.lost.set()  # cancelled, or taken over: our answer will be refused
                for renew in list(self.extra):
                    renew()
            except redis.RedisError:
                log.warning("heartbeat for %s failed; retrying", self.job_id)


@dataclass
class JobContext:
    """What a handler sees: its job, its upload, progress reporting and provider permits."""

    job: Job
    store: JobStore
    run_token: int
    limiter: Limiter
    heartbeat: _Heartbeat
    usage: dict[str, int] = field(default_factory=dict)
    learned: LearnedStore | None = None  # where the provider's own rate-limit figures go

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def upload(self) -> bytes:
        data = self.store.upload(self.job.job_id)
        if data is None:
            raise PermanentError("the uploaded file has expired", code="input_expired")
        return data

    def progress(self, **progress: Any) -> None:
        self.store.update_progress(self.job.job_id, self.run_token, progress)  # fenced: a stale run writes nothing

    def step(self, name: str, compute: Callable[[], dict[str, Any]], of: int) -> dict[str, Any]:
        """One paid part of a multi-call job, done once.

        Each finished part is kept in the job's progress (clients see the parts as they land),
        so a job deferred or retried half-way resumes after its last finished part instead of
        paying for it again.
        """
        parts = dict((self.job.progress or {}).get("parts") or {})
        if name not in parts:
            parts[name] = compute()
            self.job = self.job.model_copy(
                update={"progress": {"step": name, "steps_done": len(parts), "steps": of, "parts": parts}}
            )
            self.progress(**self.job.progress)
        return parts[name]

    @contextmanager
    def provider_call(self, provider: str, tokens: int = 0) -> Iterator[PermitHandle]:
        """``with ctx.provider_call(provider, tokens) as handle:`` one provider call, under a permit.

        The one path of every call: a permit from the provider's policy, or the job deferred;
        the call; its outcome decided once (``unilingo.outcomes.classify``) and given to the
        limiter (breaker, pause, token charge), the metrics and the trace; then what it means
        for the job. The handler reports ``handle.tokens_used`` when the provider says.
        """
        with tracing.provider_span(provider, tokens) as span:
            decision = self.limiter.acquire(provider, tokens=tokens, holder=self.job.job_id)
            metrics.permit(provider, decision.outcome)
            tracing.set_attributes(span, {"unilingo.permit": decision.outcome})
            if not decision.granted:
                if decision.reason == DenyReason.BUDGET_EXHAUSTED:
                    raise budget_exhausted(provider, decision.retry_after)
                raise Deferred(provider, decision.recheck_after, decision.reason, waits_for=decision.retry_after)
            handle = PermitHandle()
            renew = lambda: self.limiter.renew(provider, decision.lease_id)  # noqa: E731
            self.heartbeat.extra.append(renew)
            started = time.perf_counter()
            try:
                yield handle
            except BaseException as exc:
                self._call_ended(span, provider, decision, handle, started, exc)
                raise
            else:
                self._call_ended(span, provider, decision, handle, started, None)
            finally:
                self.heartbeat.extra.remove(renew)

    def _call_ended(self, span, provider, decision, handle: PermitHandle, started: float, exc) -> None:
        """Decide the call's outcome and let every observer see the same one."""
        outcome = classify(exc)
        metrics.call_ended(provider, outcome, time.perf_counter() - started, tokens=handle.tokens_used)
        tracing.call_ended(span, outcome, exc, handle.tokens_used)
        # Before the release: the next permit, anyone's, is then held to what the answer said.
        self._learn(provider, handle)
        released = self.limiter.release(
            provider,
            decision.lease_id,
            outcome,
            retry_after=exc.retry_after if isinstance(exc, Throttled) else None,
            sent_after=handle.sent_after,
            **handle.usage,  # the tokens reported, and of them what is billed: the spend
        )
        if outcome is CallOutcome.SUCCESS and handle.tokens_used:
            self.usage[provider] = self.usage.get(provider, 0) + handle.tokens_used
        elif outcome is CallOutcome.ERROR and isinstance(exc, TransientError):
            if not released.counts_against_job:
                # The provider is failing for everyone (an outage): wait for it, attempt kept.
                reason = "retry" if released.breaker == "closed" else "breaker_open"
                raise Deferred(provider, released.retry_after, reason) from exc
            exc.provider = provider  # its policy says how to retry

    def _learn(self, provider: str, handle: PermitHandle) -> None:
        if handle.rate_limits is None or self.learned is None:
            return
        try:
            self.learned.record(provider, handle.rate_limits, round(time.time() * 1000))
        except redis.RedisError:
            log.warning("could not record %s's rate-limit headers; the last figures stay", provider)


@dataclass
class PermitHandle:
    """What a handler tells its permit: the tokens the provider reported, when the call left,
    and the rate-limit figures its answer stated."""

    tokens_used: int | None = None
    input_tokens: int | None = None  # of them, the prompt's and the completion's: what is billed
    output_tokens: int | None = None
    granted_at: float = field(default_factory=time.monotonic)
    sent_at: float | None = None
    rate_limits: RateLimits | None = None  # the answer's x-ratelimit-* figures (unilingo.adaptive)

    @property
    def usage(self) -> dict[str, int | None]:
        """The reported usage as ``Limiter.release`` takes it."""
        return {
            "actual_tokens": self.tokens_used,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    def sent(self, at: float | None = None) -> None:
        """The call left at ``at`` (``time.monotonic()``; now if not given): the provider's
        rolling minute counts from there (``workers.providers.sent``)."""
        self.sent_at = time.monotonic() if at is None else at

    @property
    def sent_after(self) -> float:
        return 0.0 if self.sent_at is None else self.sent_at - self.granted_at


Handler = Callable[[JobContext], dict[str, Any]]


def budget_exhausted(provider: str, resets_in: float) -> PermanentError:
    """A provider whose spend budget is spent, under a policy that fails its jobs rather than wait."""
    resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + resets_in))
    return PermanentError(f"the {provider} spend budget is spent until {resets}", code="budget_exhausted")


def retry_plan(client: redis.Redis, exc: TransientError, attempt: int) -> float | None:
    """Seconds until the next try after a transient failure, or None to give up.

    A provider's failure follows that provider's retry policy (attempts, exponential backoff,
    ceiling), live from Redis like every other limit; other failures use the job defaults.
    Jitter spreads the retries of a burst of failed jobs (equal jitter: half fixed, half random).
    """
    provider = exc.provider
    if provider:
        retry = PolicyStore(client).read(provider).policy.retry
        attempts, wait = retry.attempts, backoff.equal_jitter(retry.backoff_seconds, retry.max_backoff_seconds)
    else:
        attempts, wait = get_settings().job_max_attempts, backoff.equal_jitter(1.0, 60.0)
    if attempt >= attempts:
        return None
    return backoff.delay(wait, attempt)


def _limiter(client: redis.Redis) -> Limiter:
    settings = get_settings()
    return Limiter(
        client,
        lease_seconds=settings.job_lease_seconds,
        window_margin_seconds=settings.provider_window_margin_seconds,
    )


def run(job_id: str, handler: Handler) -> str:
    """Run the job once; answers how the run ended (``RunOutcome``), or, when there was no
    run, why not (the claim's outcome: ``terminal``, ``busy``, ``missing``)."""
    settings = get_settings()
    client = redis_client()
    store = JobStore(client, ttl=settings.job_ttl_seconds)
    claim = store.claim(job_id, settings.job_lease_seconds)
    if not claim.claimed:
        # terminal, cancelled before it started, or a duplicate delivery of a job that a
        # live worker holds: nothing to do, and the message is acknowledged.
        return claim.outcome
    job = store.get(job_id)
    started, wall_started = time.perf_counter(), time.time()
    metrics.job_started(job.type.value)
    heartbeat = _Heartbeat(store, job_id, claim.run_token, settings.job_lease_seconds, settings.job_heartbeat_seconds)
    heartbeat.start()
    ctx = JobContext(
        job=job,
        store=store,
        run_token=claim.run_token,
        limiter=_limiter(client),
        heartbeat=heartbeat,
        learned=LearnedStore(client),
    )
    outcome = RunOutcome.STALE  # until a state change says otherwise (an exception leaves the lease to lapse)

    def failed(code: str, message: str) -> RunOutcome:
        return RunOutcome.FAILED if store.fail(job_id, claim.run_token, code, message) else RunOutcome.STALE

    try:
        with drain.handing_back_allowed():
            # The user's file first: durable in storage before anything is paid for.
            archived = uploads.archive(ctx) if job.workload.upload and settings.uploads_bucket else None
            # A cache hit answers without the handler: no provider call, no permit.
            result, hit = response_cache.cached(client, job, lambda: handler(ctx))
        if settings.cache_enabled:
            metrics.cache_lookup(job.type.value, hit)
        if archived:
            result = {**result, "upload": archived}  # this job's own file, never the cached one's
        if ctx.usage:
            result = {**result, "usage": ctx.usage}
        if persistence.persist(job, result, ctx.usage, cache_hit=hit):  # no-op without DATABASE_URL
            if link := saved.link(job.type.value, job_id):
                result = {**result, "saved": link}  # where the app reads it back after the job expires
        succeeded = store.succeed(job_id, claim.run_token, result, cache_hit=hit)
        outcome = RunOutcome.SUCCEEDED if succeeded else RunOutcome.STALE
    except HandBack:
        outcome = RunOutcome.HANDED_BACK if store.hand_back(job_id, claim.run_token) else RunOutcome.STALE
        log.warning("job %s handed back unfinished: this worker is leaving", job_id)
    except Deferred as exc:
        due = time.time() + exc.retry_after + random.uniform(0, 0.1)
        until = time.time() + exc.waits_for if exc.waits_for else None
        # A provider's own 429 pauses it for everyone: the job waits for the same reason.
        reason = DenyReason.PAUSED if isinstance(exc, Throttled) else (exc.reason or DenyReason.RATE)
        deferred = store.defer(job_id, claim.run_token, exc.provider, due, str(reason), until=until)
        outcome = RunOutcome.DEFERRED if deferred else RunOutcome.STALE
    except TransientError as exc:
        delay = retry_plan(client, exc, claim.attempts)
        if delay is None:
            outcome = failed(exc.code, f"gave up after {claim.attempts} attempts: {exc.message}")
        else:
            retried = store.retry_later(job_id, claim.run_token, time.time() + delay, exc.provider)
            outcome = RunOutcome.RETRIED if retried else RunOutcome.STALE
    except PermanentError as exc:
        outcome = failed(exc.code, exc.message)
    except SoftTimeLimitExceeded:
        outcome = failed("timeout", f"the job ran longer than {settings.job_timeout_seconds}s")
    except Exception as exc:  # a bug: fail loudly with a code, never retry forever
        errors_reporting.capture(exc)  # Sentry, tagged with the job (no-op without SENTRY_DSN)
        tracing.record_error(exc)
        log.exception("job %s crashed", job_id)
        outcome = failed("internal_error", type(exc).__name__)
    finally:
        heartbeat.stopped.set()
        _run_ended(client, job, outcome, started, wall_started)
    return outcome


def _run_ended(client: redis.Redis, job: Job, outcome: RunOutcome, started: float, wall_started: float) -> None:
    """Record how the run ended and write the cluster totals (one Redis round trip).

    A run that ends by an exception (its state could not be written) counts as ``stale``: its
    lease lapses and the job runs again. A completion already counted its terminal outcome and
    queued its webhook, in the same script; a refused one reports nothing but that it was refused.
    """
    if sys.exc_info()[0] is not None:
        outcome = RunOutcome.STALE
    try:
        metrics.job_ended(
            job.type.value, outcome, time.perf_counter() - started, wait_seconds=wall_started - job.created_at
        )
        metrics.TOTALS.flush(client)
    except redis.RedisError as exc:
        log.warning("worker metrics: cluster totals not written (%s)", type(exc).__name__)
    except Exception:  # metrics must never change a job's outcome
        log.exception("worker metrics: recording the end of a run failed")
