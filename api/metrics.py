"""The API tier's metrics: its HTTP middleware, ``/metrics``, and the cluster state read from Redis.

Every metric is defined once in ``unilingo.metrics``; this module records the API's share:

* ``MetricsMiddleware`` counts each answer by route *template* (``/api/jobs/{job_id}``, never
  the raw path; unmatched paths share ``route="unmatched"``; methods outside the standard set
  are ``other``) and status, with a latency histogram, and adds it to the cluster totals.
* ``render`` answers a scrape: this process's metrics (or, with ``PROMETHEUS_MULTIPROC_DIR``
  set because uvicorn runs several processes, all of theirs) followed by the scrape-time
  gauges (``unilingo.metrics.SCRAPE_GAUGES``) computed from Redis at that moment: queue
  depth and age, deferred and retrying jobs, live workers, and each provider's breaker,
  policy revision and budget in use.
* ``read_cluster`` is that Redis read (three round trips), shared with the JSON endpoints.
* ``Flusher`` writes the buffered cluster totals to Redis once a second (one round trip).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.exceptions
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unilingo import keys
from unilingo import metrics as m
from unilingo.jobs import QUEUES
from unilingo.limiter import WINDOW_MARGIN_SECONDS, AsyncLimiter, ProviderStatus
from unilingo.policy import PROVIDERS

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


# ---------------------------------------------------------------------------------------------
# The cluster state in Redis
# ---------------------------------------------------------------------------------------------


@dataclass
class QueueState:
    depth: int = 0
    oldest_age_seconds: float = 0.0
    workers_alive: int = 0


@dataclass
class Cluster:
    read_at: float
    queues: dict[str, QueueState] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)  # provider -> jobs waiting for a permit
    retry_scheduled: int = 0
    providers: dict[str, ProviderStatus] = field(default_factory=dict)


_limiters: weakref.WeakKeyDictionary[Any, AsyncLimiter] = weakref.WeakKeyDictionary()


def limiter_for(client, margin_seconds: float = WINDOW_MARGIN_SECONDS) -> AsyncLimiter:
    limiter = _limiters.get(client)
    if limiter is None:
        limiter = _limiters[client] = AsyncLimiter(client, window_margin_seconds=margin_seconds)
    return limiter


def _job_id_of(message: bytes | None) -> str | None:
    """The task id (our job id) in a kombu Redis message, or None."""
    if not message:
        return None
    try:
        headers = orjson.loads(message).get("headers") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return None
    job_id = headers.get("id")
    return job_id if isinstance(job_id, str) and len(job_id) <= 64 else None


async def read_cluster(client, margin_seconds: float = WINDOW_MARGIN_SECONDS) -> Cluster:
    """Queues, delayed jobs, live workers and each provider's limiter state, from Redis.

    A queue's oldest job is the message at the list's tail (kombu pushes with LPUSH and
    consumes with BRPOP); its age runs from the job's ``created_at``, so a job that waited
    for a permit or a retry and came back keeps counting from its submission.
    """
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(keys.queue_list(queue))
        pipe.lindex(keys.queue_list(queue), -1)
        pipe.zcount(keys.workers_of_queue(queue), now - keys.WORKER_ALIVE_SECONDS, "+inf")
    for provider in PROVIDERS:
        pipe.zcard(keys.deferred(provider))
    pipe.zcard(keys.retries())
    limiter = limiter_for(client, margin_seconds)
    replies, statuses = await asyncio.gather(
        pipe.execute(), asyncio.gather(*(limiter.status(provider) for provider in PROVIDERS))
    )
    cluster = Cluster(read_at=now)
    tails: dict[str, str] = {}
    for index, queue in enumerate(QUEUES):
        depth, tail, alive = replies[3 * index : 3 * index + 3]
        cluster.queues[queue] = QueueState(depth=int(depth), workers_alive=int(alive))
        job_id = _job_id_of(tail) if int(depth) else None
        if job_id:
            tails[queue] = job_id
    offset = 3 * len(QUEUES)
    for index, provider in enumerate(PROVIDERS):
        cluster.deferred[provider] = int(replies[offset + index])
    cluster.retry_scheduled = int(replies[offset + len(PROVIDERS)])
    cluster.providers = dict(zip(PROVIDERS, statuses, strict=True))
    if tails:
        pipe = client.pipeline(transaction=False)
        for job_id in tails.values():
            pipe.hget(keys.job(job_id), "created_at")
        for queue, created in zip(tails, await pipe.execute(), strict=True):
            if created:
                cluster.queues[queue].oldest_age_seconds = max(0.0, now - float(created))
    return cluster


def cluster_families(cluster: Cluster | None) -> list[GaugeMetricFamily]:
    """The scrape-time gauges for ``cluster`` (only ``unilingo_redis_up 0`` when Redis failed)."""

    def family(name: str) -> GaugeMetricFamily:
        help_text, labels = m.SCRAPE_GAUGES[name]
        return GaugeMetricFamily(name, help_text, labels=list(labels))

    up = family("unilingo_redis_up")
    up.add_metric([], 1 if cluster is not None else 0)
    if cluster is None:
        return [up]
    out = {name: family(name) for name in m.SCRAPE_GAUGES if name != "unilingo_redis_up"}
    for queue, state in cluster.queues.items():
        out["unilingo_queue_depth"].add_metric([queue], state.depth)
        out["unilingo_queue_oldest_age_seconds"].add_metric([queue], round(state.oldest_age_seconds, 3))
        out["unilingo_workers_alive"].add_metric([queue], state.workers_alive)
    for provider, count in cluster.deferred.items():
        out["unilingo_jobs_deferred"].add_metric([provider], count)
    out["unilingo_jobs_retry_scheduled"].add_metric([], cluster.retry_scheduled)
    for provider, status in cluster.providers.items():
        policy = status.policy
        out["unilingo_breaker_state"].add_metric([provider], m.breaker_value(status.breaker))
        out["unilingo_policy_revision"].add_metric([provider], status.revision)
        out["unilingo_provider_suspended"].add_metric([provider], 1 if status.suspended else 0)
        out["unilingo_provider_paused_seconds"].add_metric([provider], status.paused_for)
        out["unilingo_provider_in_flight"].add_metric([provider], status.in_flight)
        out["unilingo_provider_in_flight_limit"].add_metric([provider], policy.max_in_flight)
        out["unilingo_provider_requests_window"].add_metric([provider], status.requests_used)
        out["unilingo_provider_tokens_window"].add_metric([provider], status.tokens_used)
        if policy.requests_per_minute:
            out["unilingo_provider_requests_limit"].add_metric([provider], policy.requests_per_minute)
        if policy.tokens_per_minute:
            out["unilingo_provider_tokens_limit"].add_metric([provider], policy.tokens_per_minute)
        if status.spend is not None:
            for period, spend in (("day", status.spend.day), ("month", status.spend.month)):
                out["unilingo_provider_spend_usd"].add_metric([provider, period], spend.spent_usd)
                if spend.budget_usd is not None:
                    out["unilingo_provider_budget_usd"].add_metric([provider, period], spend.budget_usd)
        rpm, tpm = status.effective
        if rpm:
            out["unilingo_provider_requests_effective_limit"].add_metric([provider], rpm)
        if tpm:
            out["unilingo_provider_tokens_effective_limit"].add_metric([provider], tpm)
        if status.learned and status.learned.requests_per_minute:
            out["unilingo_provider_requests_learned_limit"].add_metric([provider], status.learned.requests_per_minute)
        if status.learned and status.learned.tokens_per_minute:
            out["unilingo_provider_tokens_learned_limit"].add_metric([provider], status.learned.tokens_per_minute)
    return [up, *out.values()]


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


async def render(client=None, margin_seconds: float = WINDOW_MARGIN_SECONDS) -> tuple[bytes, str]:
    """The Prometheus text of a scrape: process metrics, then the cluster gauges (if ``client``)."""
    body = generate_latest(m.exposition_registry())
    if client is not None:
        try:
            cluster = await asyncio.wait_for(read_cluster(client, margin_seconds), timeout=5)
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            log.warning("metrics: the cluster state could not be read from Redis (%s)", type(exc).__name__)
            cluster = None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(cluster_families(cluster)))
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


# ---------------------------------------------------------------------------------------------
# Cluster totals: buffered by every request, written once a second
# ---------------------------------------------------------------------------------------------


class Flusher:
    """Writes ``unilingo.metrics.TOTALS`` to Redis once a second while there is something to write.

    Started by the first event after an idle period, on the event loop of the request that
    recorded it; ends when a second passes with nothing new. Lost on a crash: at most a
    second of the cluster totals (the Prometheus metrics are unaffected).
    """

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._services = None

    def kick(self, services) -> None:
        self._services = services
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        self._loop = loop
        self._task = loop.create_task(self._run())

    async def flush(self, services=None) -> None:
        """Write what is pending now (the lifespan's shutdown calls it with its services)."""
        services = services or self._services
        # A client belongs to the loop that opened it.
        if services is None or not services.open_here() or not m.TOTALS.pending():
            return
        try:
            await m.TOTALS.aflush(services.redis)
        except Exception as exc:  # never let bookkeeping break a request or a shutdown
            log.warning("metrics: cluster totals not written (%s)", type(exc).__name__)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if not m.TOTALS.pending():
                return
            await self.flush()


FLUSHER = Flusher()


class MetricsMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app
        # label children, looked up once per (method, route, status): labels() is not free
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        m.init_api_series()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            counter = self._counters.get((method, template, status))
            if counter is None:
                counter = self._counters[(method, template, status)] = m.HTTP_REQUESTS.labels(
                    method, template, str(status)
                )
            histogram = self._histograms.get((method, template))
            if histogram is None:
                histogram = self._histograms[(method, template)] = m.HTTP_DURATION.labels(method, template)
            counter.inc()
            histogram.observe(elapsed)
            m.http_request(template, status, elapsed)
            app = scope.get("app")
            services = getattr(getattr(app, "state", None), "services", None)
            if services is not None:
                try:
                    FLUSHER.kick(services)
                except RuntimeError:  # no running loop (cannot happen under an ASGI server)
                    pass
