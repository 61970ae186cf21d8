"""Every metric of the platform, defined once: the API and the workers record through here.

Three kinds of figures, each kept where it is cheapest and correct:

1. **Prometheus counters and histograms** (prometheus-client), recorded by the process where
   the event happens. The API exports its own on ``/metrics``. A Celery worker runs a prefork
   pool, so its counters live in prometheus-client's *multiprocess mode*: each pool child
   writes its values to memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` and the
   worker's main process serves their sum on ``WORKER_METRICS_PORT`` (``workers.metrics``).
   The API uses the same mode when it runs several uvicorn processes (``WEB_CONCURRENCY``).

2. **Scrape-time gauges** (``SCRAPE_GAUGES``): queue depth and age, deferred and retrying
   jobs, live workers, breaker state, policy revision, provider budget in use. They describe
   shared state in Redis, not a process, so the API reads Redis when it is scraped
   (``api.metrics``) and no worker exports them. Every API replica reports the same values:
   dashboards and alerts aggregate them with ``max by (...)``.

3. **Cluster totals in Redis** (``TOTALS``): the same events, added up across every API
   replica and worker in one Redis hash (``keys.stats("counters")``), plus bounded per-user
   activity (``keys.activity(user)``) for the admin endpoints. They feed Unilingo v1's JSON
   summary (``/api/metrics``), ``/monitoring`` and the risk scores, which must not depend on
   a Prometheus server. Events are buffered in memory and written in one round trip: by the
   API's flusher every second, by a worker at the end of each job.

Naming follows Prometheus conventions: ``unilingo_`` prefix, ``_total`` counters, ``_seconds``
durations, base units. Every label has a bounded set of values (route templates, job types,
queues, providers, outcomes); no user id, job id or raw path is ever a label.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import multiprocess as _multiprocess

from unilingo import keys
from unilingo.jobs import ACTIVITY_TTL_SECONDS, WORKLOADS, JobType
from unilingo.limiter import DenyReason
from unilingo.outcomes import CallOutcome, RunOutcome
from unilingo.scripts import lua

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
JOB_TYPES: tuple[str, ...] = tuple(t.value for t in JobType)

# --- label values (bounded) -----------------------------------------------------------------

# How a job run ended (unilingo_jobs_total{outcome}) and how a provider call ended
# (unilingo_provider_calls_total{outcome}): decided once each (``unilingo.outcomes``).
JOB_OUTCOMES = tuple(o.value for o in RunOutcome)
PROVIDER_OUTCOMES = tuple(o.value for o in CallOutcome)
# Permit decisions (unilingo_permits_total{outcome}): granted, or why not (the limiter's
# DenyReason values, in the order it checks them; ``Decision.outcome``).
PERMIT_OUTCOMES = ("granted", *(r.value for r in DenyReason))
# Client quotas (api.quotas names): per address, per user on AI, per user on pronunciation.
QUOTA_SCOPES = ("ip", "ai", "pronunciation")
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

# --- buckets --------------------------------------------------------------------------------

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CALL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)

# ---------------------------------------------------------------------------------------------
# Multiprocess mode. prometheus-client picks its value store when a metric's value is
# created; every metric below that a worker records has labels, and a labelled metric
# creates its values at the first ``.labels()``, so switching the store before any is
# recorded (``enable_multiprocess``, called in the worker's main process before the pool
# forks) is enough even if this module was imported earlier.
# ---------------------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def enable_multiprocess(path: str, clean: bool = True) -> str:
    """Record into memory-mapped files under ``path`` from now on (this process and its forks)."""
    os.makedirs(path, exist_ok=True)
    if clean:  # a restarted worker must not add a previous run's files to its own
        for stale in glob.glob(os.path.join(path, "*.db")):
            try:
                os.remove(stale)
            except FileNotFoundError:
                pass
    os.environ[MULTIPROC_ENV] = path
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    return path


def exposition_registry() -> CollectorRegistry:
    """The registry to serve: every process's files in multiprocess mode, else this process's."""
    path = multiprocess_dir()
    if path and getattr(values.ValueClass, "_multiprocess", False):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, path=path)
        return registry
    return prometheus_client.REGISTRY


_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def sweep_dead_processes(path: str | None = None) -> list[int]:
    """``mark_process_dead`` for every process whose live-gauge files remain but which is gone.

    A pool child that exits normally marks itself (``worker_process_shutdown``); one that was
    SIGKILLed (out of memory, ``task_time_limit``) cannot, so the main process sweeps.
    """
    path = path or multiprocess_dir()
    if not path:
        return []
    dead: set[int] = set()
    for name in os.listdir(path) if os.path.isdir(path) else ():
        match = _LIVE_FILE.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:
            pass  # alive, someone else's
    for pid in dead:
        _multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


# ---------------------------------------------------------------------------------------------
# Prometheus metrics recorded by processes
# ---------------------------------------------------------------------------------------------

# API (api.metrics.MetricsMiddleware)
HTTP_REQUESTS = Counter(
    "unilingo_http_requests_total",
    "HTTP requests answered by the API, by route template and status",
    ["method", "route", "status"],
)
HTTP_CLIENT_DISCONNECTS = Counter(
    "unilingo_http_client_disconnects_total",
    "Requests whose client hung up before its body was read (answered 499, never a 5xx)",
    ["route"],
)
HTTP_DURATION = Histogram(
    "unilingo_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of the body; SSE streams last their lifetime)",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
JOBS_SUBMITTED = Counter("unilingo_jobs_submitted_total", "Jobs accepted and queued by the API", ["type"])
QUOTA_REJECTIONS = Counter("unilingo_quota_rejections_total", "Requests refused with 429 by a client quota", ["scope"])

# Workers (workers.runner, workers.housekeeping); cancellations are counted by the API.
JOBS_STARTED = Counter("unilingo_jobs_started_total", "Job runs started by a worker (each attempt)", ["type"])
JOBS = Counter("unilingo_jobs_total", "Job runs by how they ended (outcome)", ["type", "outcome"])
JOBS_RUNNING = Gauge("unilingo_jobs_running", "Jobs running now in this worker", ["type"], multiprocess_mode="livesum")
JOB_QUEUE_WAIT = Histogram(
    "unilingo_job_queue_wait_seconds",
    "From submission to the start of the run that ended the job (queue, deferrals, retries)",
    ["type"],
    buckets=WAIT_BUCKETS,
)
JOB_RUN = Histogram(
    "unilingo_job_run_seconds",
    "Duration of the run that ended the job (succeeded or failed)",
    ["type"],
    buckets=RUN_BUCKETS,
)
JOBS_RECOVERED = Counter(
    "unilingo_jobs_recovered_total",
    "Jobs queued again by housekeeping: their worker's lease lapsed, or their message was lost",
    ["reason"],
)
PROVIDER_CALLS = Counter("unilingo_provider_calls_total", "Provider calls by how they ended", ["provider", "outcome"])
PROVIDER_DURATION = Histogram(
    "unilingo_provider_call_duration_seconds",
    "Provider call latency",
    ["provider", "outcome"],
    buckets=CALL_BUCKETS,
)
PROVIDER_TOKENS = Counter(
    "unilingo_provider_tokens_total", "Tokens the provider reported as used (prompt and completion)", ["provider"]
)
PERMITS = Counter(
    "unilingo_permits_total", "Provider permit decisions: granted, or the reason of a refusal", ["provider", "outcome"]
)
CACHE_HITS = Counter("unilingo_cache_hits_total", "Jobs answered from the response cache", ["type"])
CACHE_MISSES = Counter("unilingo_cache_misses_total", "Jobs answered by a provider and then cached", ["type"])

# ---------------------------------------------------------------------------------------------
# Scrape-time gauges: computed by the API from Redis on each scrape (api.metrics.cluster_families)
# name -> (help, labels)
# ---------------------------------------------------------------------------------------------

SCRAPE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "unilingo_queue_depth": ("Jobs waiting in the queue's Redis list (LLEN; what KEDA scales on)", ("queue",)),
    "unilingo_queue_oldest_age_seconds": (
        "Seconds since the submission of the oldest job waiting in the queue (0 when empty)",
        ("queue",),
    ),
    "unilingo_jobs_deferred": ("Jobs waiting in Redis for a provider permit", ("provider",)),
    "unilingo_jobs_retry_scheduled": ("Jobs waiting out a retry backoff", ()),
    "unilingo_workers_alive": (
        f"Workers consuming the queue whose heartbeat is under {keys.WORKER_ALIVE_SECONDS:g} s old",
        ("queue",),
    ),
    "unilingo_breaker_state": ("Provider circuit breaker: 0 closed, 1 half-open, 2 open", ("provider",)),
    "unilingo_policy_revision": ("Revision of the provider policy in force (0: the defaults)", ("provider",)),
    "unilingo_provider_suspended": ("1 when the provider's policy suspends it", ("provider",)),
    "unilingo_provider_paused_seconds": ("Seconds left of a provider's Retry-After pause", ("provider",)),
    "unilingo_provider_in_flight": ("Provider calls in flight (leases held)", ("provider",)),
    "unilingo_provider_in_flight_limit": ("Cap on provider calls in flight", ("provider",)),
    "unilingo_provider_requests_window": ("Provider calls granted in the rolling minute", ("provider",)),
    "unilingo_provider_requests_limit": ("Provider calls allowed per rolling minute", ("provider",)),
    "unilingo_provider_tokens_window": ("Provider tokens charged in the rolling minute", ("provider",)),
    "unilingo_provider_tokens_limit": ("Provider tokens allowed per rolling minute", ("provider",)),
    "unilingo_provider_spend_usd": (
        "What the provider has cost in the current UTC day or month (period), in US dollars: reported usage "
        "at the policy's prices, plus the reservations of calls in flight",
        ("provider", "period"),
    ),
    "unilingo_provider_budget_usd": (
        "The provider's spend budget per UTC day or month (period), when set",
        ("provider", "period"),
    ),
    "unilingo_provider_requests_effective_limit": (
        "Provider calls per rolling minute the permits are held to: the policy's, or the account's own (from the "
        "provider's rate-limit headers) when lower and the policy is adaptive",
        ("provider",),
    ),
    "unilingo_provider_tokens_effective_limit": (
        "Provider tokens per rolling minute the permits are held to (see the requests gauge)",
        ("provider",),
    ),
    "unilingo_provider_requests_learned_limit": (
        "Calls per minute the provider's own x-ratelimit-limit-requests header stated on its last answer",
        ("provider",),
    ),
    "unilingo_provider_tokens_learned_limit": (
        "Tokens per minute the provider's own x-ratelimit-limit-tokens header stated on its last answer",
        ("provider",),
    ),
    "unilingo_redis_up": ("1 when the API could read the platform's state from Redis for this scrape", ()),
}


def breaker_value(state: str) -> int:
    return BREAKER_VALUES.get(str(state), 0)


# ---------------------------------------------------------------------------------------------
# Cluster totals in Redis: buffered here, flushed in one round trip.
# ---------------------------------------------------------------------------------------------

ACTIVITY_MAX_USERS = 5000  # users tracked at most (the least recently active are dropped)
ACTIVITY_MINUTES = 60  # per-minute submission counts kept (burstiness)
USERS_PER_FLUSH_CALL = 50  # users per flush script call from the API (about a millisecond of Redis each)

# unilingo/lua/metrics/: flush (the buffered counters and users' activity, one call) and
# forget (the records of users the flush dropped beyond the cap).
_FLUSH = lua("metrics/flush")
_FORGET = lua("metrics/forget")


class Totals:
    """Counters and per-user activity waiting to be added to Redis (thread-safe, fork-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        self._users: dict[str, list[int]] = {}
        os.register_at_fork(after_in_child=self.clear)  # a fork must not flush its parent's events again

    def add(self, field: str, amount: float = 1) -> None:
        with self._lock:
            self._counters[field] = self._counters.get(field, 0) + amount

    def user(self, user_id: str | None, submitted: int = 0, quota_hits: int = 0, failed: int = 0) -> None:
        if not user_id:
            return
        with self._lock:
            entry = self._users.get(user_id)
            if entry is None:
                entry = self._users[user_id] = [0, 0, 0]
            entry[0] += submitted
            entry[1] += quota_hits
            entry[2] += failed

    def pending(self) -> bool:
        return bool(self._counters or self._users)

    def clear(self) -> None:
        self._lock = threading.Lock()
        self._counters, self._users = {}, {}

    def drain(self) -> tuple[list[str], list[Any]] | None:
        """The pending events as the flush script's keys and arguments (and forget them)."""
        calls = self.drain_calls(users_per_call=None)
        return calls[0] if calls else None

    def drain_calls(self, users_per_call: int | None = USERS_PER_FLUSH_CALL) -> list[tuple[list[str], list[Any]]]:
        """The pending events as one or more flush script calls (and forget them).

        The counters go with the first call; the users are split ``users_per_call`` to a call
        (all in one if None). Redis runs one script at a time: a call for 500 users (some 3,500
        commands) held every other client for 10-15 ms. Each call trims the users' index as the
        single one would (the least recent beyond the cap leave first), so the end state is
        the same unless one flush brings more users than the cap.
        """
        with self._lock:
            counters, users = self._counters, self._users
            self._counters, self._users = {}, {}
        if not counters and not users:
            return []
        head: list[Any] = [int(time.time()), ACTIVITY_TTL_SECONDS, ACTIVITY_MAX_USERS, ACTIVITY_MINUTES]
        script_keys = [keys.stats("counters"), keys.activity_users()]
        first: list[Any] = [*head, len(counters)]
        for field, amount in counters.items():
            first.extend((field, repr(float(amount))))
        entries = [
            (user_id, submitted, quota_hits, failed) for user_id, (submitted, quota_hits, failed) in users.items()
        ]
        size = users_per_call or max(1, len(entries))
        calls = []
        for start in range(0, max(1, len(entries)), size):
            args = first if start == 0 else [*head, 0]
            batch = entries[start : start + size]
            for entry in batch:
                args.extend(entry)
            calls.append(([*script_keys, *(keys.activity(entry[0]) for entry in batch)], args))
        return calls

    def flush(self, client) -> None:
        """Write the pending events (synchronous client; a worker, after each job)."""
        call = self.drain()
        if call is not None:
            dropped = _FLUSH.bind(client)(keys=call[0], args=call[1])
            if dropped:
                _FORGET.bind(client)(keys=_forget_keys(dropped), args=dropped)

    async def aflush(self, client) -> None:
        """The same on an asyncio client (the API's flusher), in calls of ``USERS_PER_FLUSH_CALL``
        users, one after the other: other clients' commands run between them."""
        calls = self.drain_calls()
        if calls:
            flush, forget = _FLUSH.bind(client), _FORGET.bind(client)
            for call_keys, call_args in calls:
                dropped = await flush(keys=call_keys, args=call_args)
                if dropped:
                    await forget(keys=_forget_keys(dropped), args=dropped)


def _forget_keys(users: list[Any]) -> list[str]:
    return [keys.activity_users(), *(keys.activity(u.decode() if isinstance(u, bytes) else u) for u in users)]


TOTALS = Totals()

# ---------------------------------------------------------------------------------------------
# Recording: one function per event, for the Prometheus metric and the Redis totals alike.
# ---------------------------------------------------------------------------------------------


def http_request(route: str, status: int, seconds: float) -> None:
    """Cluster totals of one API answer (the middleware records the Prometheus metrics itself)."""
    klass = f"{status // 100}xx"
    TOTALS.add(f"http:{route}:{klass}")
    TOTALS.add("http_seconds", seconds)
    for index, bound in enumerate(HTTP_BUCKETS):
        if seconds <= bound:
            TOTALS.add(f"http_le:{index}")
            break
    else:
        TOTALS.add(f"http_le:{len(HTTP_BUCKETS)}")


def job_submitted(job_type: str, user_id: str | None) -> None:
    JOBS_SUBMITTED.labels(job_type).inc()
    TOTALS.add(f"submitted:{job_type}")
    TOTALS.user(user_id, submitted=1)


def job_cancelled(job_type: str) -> None:
    JOBS.labels(job_type, RunOutcome.CANCELLED.value).inc()
    TOTALS.add(f"jobs:{job_type}:{RunOutcome.CANCELLED.value}")


def quota_rejected(scope: str, user_id: str | None) -> None:
    QUOTA_REJECTIONS.labels(scope).inc()
    TOTALS.add(f"quota:{scope}")
    TOTALS.user(user_id, quota_hits=1)


def job_started(job_type: str) -> None:
    JOBS_STARTED.labels(job_type).inc()
    JOBS_RUNNING.labels(job_type).inc()
    TOTALS.add(f"started:{job_type}")


def job_ended(job_type: str, outcome: RunOutcome, run_seconds: float, wait_seconds: float | None = None) -> None:
    """A run ended; ``wait_seconds`` is given when the job itself ended."""
    outcome = RunOutcome(outcome)
    JOBS_RUNNING.labels(job_type).dec()
    JOBS.labels(job_type, outcome.value).inc()
    if not outcome.ended_job:
        # A completion counts itself, in the script that writes it (``unilingo.jobs._FINISH``),
        # with the owner's failure: never twice, never for a refused one.
        TOTALS.add(f"jobs:{job_type}:{outcome.value}")
    else:
        JOB_RUN.labels(job_type).observe(run_seconds)
        TOTALS.add(f"run_seconds:{job_type}", run_seconds)
        if wait_seconds is not None:
            wait_seconds = max(0.0, wait_seconds)
            JOB_QUEUE_WAIT.labels(job_type).observe(wait_seconds)
            TOTALS.add(f"wait_seconds:{job_type}", wait_seconds)


def jobs_recovered(reason: str, count: int) -> None:
    """Jobs queued again by housekeeping (``reason``: ``lease_expired``, their worker died;
    ``message_lost``, their message left the queue with a dying consumer before a claim)."""
    if count:
        JOBS_RECOVERED.labels(reason).inc(count)
        TOTALS.add("recovered", count)


def permit(provider: str, outcome: str) -> None:
    PERMITS.labels(provider, outcome).inc()
    TOTALS.add(f"permits:{provider}:{outcome}")


def call_ended(provider: str, outcome: CallOutcome, seconds: float, tokens: int | None = None) -> None:
    """A provider call ended (its outcome decided by ``unilingo.outcomes.classify``)."""
    outcome = CallOutcome(outcome)
    PROVIDER_CALLS.labels(provider, outcome.value).inc()
    PROVIDER_DURATION.labels(provider, outcome.value).observe(seconds)
    TOTALS.add(f"provider:{provider}:{outcome.value}")
    TOTALS.add(f"provider_seconds:{provider}", seconds)
    if tokens:
        PROVIDER_TOKENS.labels(provider).inc(tokens)
        TOTALS.add(f"tokens:{provider}", tokens)


def cache_lookup(job_type: str, hit: bool) -> None:
    (CACHE_HITS if hit else CACHE_MISSES).labels(job_type).inc()
    TOTALS.add(f"cache:{job_type}:{'hit' if hit else 'miss'}")


# ---------------------------------------------------------------------------------------------
# Series that exist from the start, at 0: a rate over a counter that was never incremented
# is no data, and an alert ratio over no data never evaluates.
# ---------------------------------------------------------------------------------------------


def providers_of(queues: Iterable[str]) -> list[str]:
    wanted = set(queues)
    found = {w.provider for w in WORKLOADS.values() if w.queue in wanted and w.provider}
    if "tts" in wanted:
        found.add("storage")  # TTS uploads its audio
    return sorted(found)


def init_api_series() -> None:
    for job_type in JOB_TYPES:
        JOBS_SUBMITTED.labels(job_type)
        JOBS.labels(job_type, RunOutcome.CANCELLED.value)
    for scope in QUOTA_SCOPES:
        QUOTA_REJECTIONS.labels(scope)


def init_worker_series(queues: Iterable[str]) -> None:
    queues = list(queues)
    types = [t.value for t, w in WORKLOADS.items() if w.queue in queues]
    for job_type in types:
        JOBS_STARTED.labels(job_type)
        JOBS_RUNNING.labels(job_type)
        for outcome in JOB_OUTCOMES:
            if outcome != RunOutcome.CANCELLED:
                JOBS.labels(job_type, outcome)
        CACHE_HITS.labels(job_type)
        CACHE_MISSES.labels(job_type)
    for reason in ("lease_expired", "message_lost"):
        JOBS_RECOVERED.labels(reason)
    for provider in providers_of(queues):
        for outcome in PROVIDER_OUTCOMES:
            PROVIDER_CALLS.labels(provider, outcome)
        for outcome in PERMIT_OUTCOMES:
            PERMITS.labels(provider, outcome)
        PROVIDER_TOKENS.labels(provider)
