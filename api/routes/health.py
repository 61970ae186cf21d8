"""Health and metrics: no token needed, no quota taken.

* ``GET /api/health`` — liveness: the process answers (no Redis call).
* ``GET /api/health/detailed`` — Redis ping latency, each queue's depth (``LLEN`` of the
  Celery list), live workers (members of ``keys.workers_alive()`` whose heartbeat is less
  than 30 s old). ``status`` is ``ok``, ``degraded`` (no live worker) or, with ``503``,
  ``down`` (Redis unreachable): usable as a readiness probe.
* ``GET /metrics`` — Prometheus text format.
"""

from __future__ import annotations

import time
from typing import Any

import redis.exceptions
from fastapi import APIRouter, Depends
from starlette.responses import Response

from api import metrics, schemas
from api.deps import Services, services
from api.responses import JSON
from unilingo import keys
from unilingo.jobs import QUEUES

router = APIRouter(tags=["health"])

_STARTED = time.time()


@router.get("/api/health", response_model=schemas.Health, summary="Liveness")
async def health() -> JSON:
    return JSON({"status": "ok"})


@router.get(
    "/api/health/detailed",
    summary="Redis, queue depths and live workers",
    responses={503: {"description": "Redis unreachable (`status: down`)"}},
)
async def health_detailed(svc: Services = Depends(services)) -> JSON:
    body: dict[str, Any] = {"status": "ok", "uptime_seconds": round(time.time() - _STARTED, 1)}
    client = svc.redis
    try:
        start = time.perf_counter()
        await client.ping()  # type: ignore[misc]  # redis-py: one signature for sync and async
        latency_ms = (time.perf_counter() - start) * 1000
        now = time.time()
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(keys.queue_list(queue))
        pipe.zrangebyscore(keys.workers_alive(), now - keys.WORKER_ALIVE_SECONDS, "+inf", withscores=True)
        replies = await pipe.execute()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        body.update(status="down", redis={"ok": False, "error": type(exc).__name__})
        return JSON(body, status_code=503, headers={"Retry-After": "5"})
    workers = [
        {"name": name.decode() if isinstance(name, bytes) else name, "last_heartbeat_age_s": round(now - score, 2)}
        for name, score in replies[-1]
    ]
    body["redis"] = {"ok": True, "latency_ms": round(latency_ms, 3)}
    body["queues"] = {queue: int(depth) for queue, depth in zip(QUEUES, replies[:-1], strict=True)}
    body["workers"] = {"alive": len(workers), "members": workers}
    if not workers:
        body["status"] = "degraded"
    return JSON(body)


@router.get("/metrics", include_in_schema=True, summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(svc: Services = Depends(services)) -> Response:
    # This process's metrics, then the platform's state read from Redis now (api.metrics).
    data, content_type = await metrics.render(svc.redis, svc.config.settings.provider_window_margin_seconds)
    return Response(data, media_type=content_type)
