"""The figures behind the monitoring endpoints, read from Redis state every replica shares.

``api.routes.monitoring`` serves them; this module computes them. Figures come from three
places (``unilingo.metrics``): the cluster totals in Redis (every replica's and worker's events
added up), the live state read at request time (queues, limiter, workers), and per-user
activity records (bounded: the 5,000 most recently active users, each kept 24 h after their
last activity, with per-minute submission counts over the last hour).

Risk score (0-100) = 100 × (0.4·q + 0.3·f + 0.3·b), where
``q = min(1, quota_hits / 10)`` (quota pressure), ``f = failed / max(submitted, 5)`` capped
at 1 (failure share, damped for users with few jobs), ``b = min(1, peak submissions in one
minute over the last hour / 20)`` (burstiness). ``high`` from 60, ``medium`` from 30.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import redis.exceptions

from api.deps import Services
from api.errors import ApiError
from api.metrics import Cluster, read_cluster
from unilingo import keys
from unilingo import metrics as m
from unilingo.policy import PROVIDERS

STATUS_SERVICES = {"ai": ("openai", "ai"), "pronunciation": ("azure-speech", "speech")}

QUOTA_HITS_REFERENCE = 10
FAILURE_MIN_JOBS = 5
BURST_REFERENCE_PER_MINUTE = 20
RISK_WEIGHTS = (0.4, 0.3, 0.3)
SCORING = {
    "formula": "100 * (0.4*min(1, quota_hits/10) + 0.3*min(1, failed/max(submitted, 5)) + 0.3*min(1, "
    "peak_per_minute/20))",
    "levels": {"high": 60, "medium": 30},
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ratio(part: float, whole: float, digits: int = 4) -> float:
    return round(part / whole, digits) if whole else 0.0


def histogram_quantile(q: float, counts: list[float], bounds: tuple[float, ...]) -> float | None:
    """Prometheus's ``histogram_quantile`` over per-bucket counts (the last bucket is +Inf).

    The JSON summary answers without a Prometheus server (the local stack has none), from the
    bucket counts every replica adds to the cluster totals; prometheus-client has no reader
    of its own histograms, so the interpolation Prometheus documents is done here.
    """
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0.0
    for index, count in enumerate(counts):
        if seen + count >= rank and count:
            lower = bounds[index - 1] if index > 0 else 0.0
            if index >= len(bounds):
                return bounds[-1]
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


# --- reading Redis -------------------------------------------------------------------------------


async def cluster_state(svc: Services) -> Cluster:
    try:
        return await read_cluster(svc.redis, svc.config.settings.provider_window_margin_seconds)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise ApiError(
            503, "service_unavailable", "Redis is unreachable; retry shortly", headers={"Retry-After": "5"}
        ) from None


async def cluster_totals(svc: Services) -> dict[str, float]:
    # redis-py types its commands for the sync and async clients at once (value | Awaitable).
    raw = await svc.redis.hgetall(keys.stats("counters"))  # type: ignore[misc]
    return {_text(k): float(v) for k, v in raw.items()}


async def platform_summary(svc: Services) -> dict[str, Any]:
    return summary(await cluster_totals(svc), await cluster_state(svc))


async def provider_status_of(svc: Services, service: str) -> dict[str, Any]:
    provider, queue = STATUS_SERVICES[service]
    return provider_status(provider, queue, await cluster_state(svc))


# --- the JSON summary (/api/metrics, /monitoring/data) ---------------------------------------------


def _provider_block(provider: str, totals: dict[str, float], cluster: Cluster) -> dict[str, Any]:
    outcomes = {o: int(totals.get(f"provider:{provider}:{o}", 0)) for o in m.PROVIDER_OUTCOMES}
    calls = sum(outcomes.values())
    errors = outcomes["error"] + outcomes["throttled"]
    permits = {o: int(totals.get(f"permits:{provider}:{o}", 0)) for o in m.PERMIT_OUTCOMES}
    status = cluster.providers.get(provider)
    block: dict[str, Any] = {
        "calls": calls,
        "by_outcome": outcomes,
        "errors": errors,
        "throttled": outcomes["throttled"],
        "error_rate": _ratio(errors, calls),
        "average_latency_ms": round(1000 * totals.get(f"provider_seconds:{provider}", 0) / calls, 1) if calls else None,
        "tokens": int(totals.get(f"tokens:{provider}", 0)),
        "permits": {"granted": permits["granted"], "refused": {o: n for o, n in permits.items() if o != "granted"}},
        "deferred_jobs": cluster.deferred.get(provider, 0),
    }
    if status is not None:
        block.update(
            breaker=status.breaker.value,
            in_flight=status.in_flight,
            max_in_flight=status.policy.max_in_flight,
            requests_in_window=status.requests_used,
            requests_per_minute=status.effective.requests_per_minute or None,
            tokens_in_window=status.tokens_used,
            tokens_per_minute=status.effective.tokens_per_minute or None,
            paused_for_seconds=status.paused_for,
            suspended=status.suspended,
            revision=status.revision,
        )
    return block


def summary(totals: dict[str, float], cluster: Cluster) -> dict[str, Any]:
    # Requests, every API replica together.
    by_route: dict[str, dict[str, int]] = {}
    classes = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
    for name, value in totals.items():
        if name.startswith("http:"):
            route, _, klass = name[5:].rpartition(":")
            by_route.setdefault(route, {})[klass] = int(value)
            classes[klass] = classes.get(klass, 0) + int(value)
    total_requests = sum(classes.values())
    counts = [totals.get(f"http_le:{i}", 0.0) for i in range(len(m.HTTP_BUCKETS) + 1)]

    def ms(q: float) -> float | None:
        value = histogram_quantile(q, counts, m.HTTP_BUCKETS)
        return None if value is None else round(value * 1000, 2)

    requests = {
        "total": total_requests,
        "errors": classes["5xx"],
        "client_errors": classes["4xx"],
        "error_rate": _ratio(classes["5xx"], total_requests),
        "average_response_ms": round(1000 * totals.get("http_seconds", 0) / total_requests, 2)
        if total_requests
        else None,
        "p50_ms": ms(0.5),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "by_status_class": classes,
        "by_route": dict(sorted(by_route.items())),
    }

    # Jobs
    by_type: dict[str, dict[str, Any]] = {}
    for job_type in m.JOB_TYPES:
        row: dict[str, Any] = {
            "submitted": int(totals.get(f"submitted:{job_type}", 0)),
            "started": int(totals.get(f"started:{job_type}", 0)),
        }
        for outcome in m.JOB_OUTCOMES:
            row[outcome] = int(totals.get(f"jobs:{job_type}:{outcome}", 0))
        ended = row["succeeded"] + row["failed"]
        row["failure_rate"] = _ratio(row["failed"], ended)
        row["average_wait_seconds"] = round(totals.get(f"wait_seconds:{job_type}", 0) / ended, 3) if ended else None
        row["average_run_seconds"] = round(totals.get(f"run_seconds:{job_type}", 0) / ended, 3) if ended else None
        by_type[job_type] = row
    sums = {key: sum(row[key] for row in by_type.values()) for key in ("submitted", "started", *m.JOB_OUTCOMES)}
    ended = sums["succeeded"] + sums["failed"]
    jobs = {
        **sums,
        "failure_rate": _ratio(sums["failed"], ended),
        "recovered": int(totals.get("recovered", 0)),
        "by_type": by_type,
    }

    services = {provider: _provider_block(provider, totals, cluster) for provider in PROVIDERS}
    hits = sum(int(totals.get(f"cache:{t}:hit", 0)) for t in m.JOB_TYPES)
    misses = sum(int(totals.get(f"cache:{t}:miss", 0)) for t in m.JOB_TYPES)
    queues = {
        queue: {
            "depth": s.depth,
            "oldest_age_seconds": round(s.oldest_age_seconds, 1),
            "workers_alive": s.workers_alive,
        }
        for queue, s in cluster.queues.items()
    }
    return {
        "generated_at": _iso(cluster.read_at),
        "requests": requests,
        "jobs": jobs,
        "services": services,
        "breakers": {provider: block.get("breaker", "closed") for provider, block in services.items()},
        "queues": queues,
        "queue_sizes": {queue: s["depth"] for queue, s in queues.items()},
        "deferred": cluster.deferred,
        "retry_scheduled": cluster.retry_scheduled,
        "quota_rejections": {scope: int(totals.get(f"quota:{scope}", 0)) for scope in m.QUOTA_SCOPES},
        "cache": {"hits": hits, "misses": misses, "hit_rate": _ratio(hits, hits + misses)},
    }


# --- provider status (/api/ai/status, /api/pronunciation/status) -----------------------------------


def provider_status(provider: str, queue: str, cluster: Cluster) -> dict[str, Any]:
    status = cluster.providers[provider]
    state = cluster.queues.get(queue, None)
    policy = status.policy
    if status.suspended:
        health = "suspended"
    elif status.breaker.value == "open":
        health = "unavailable"
    elif (
        status.breaker.value == "half_open"
        or status.paused_for > 0
        or (state and state.depth and not state.workers_alive)
    ):
        health = "degraded"
    else:
        health = "operational"
    return {
        "service": provider,
        "status": health,
        "revision": status.revision,
        "policy": policy.model_dump(mode="json", by_alias=True),
        "adaptive": policy.adaptive,
        "effective": {
            "requests_per_minute": status.effective.requests_per_minute or None,
            "tokens_per_minute": status.effective.tokens_per_minute or None,
        },
        "learned": status.learned.as_dict() if status.learned else None,
        "limits": {
            "requests_per_minute": policy.requests_per_minute or None,
            "tokens_per_minute": policy.tokens_per_minute or None,
            "burst": policy.burst,
            "max_in_flight": policy.max_in_flight,
            "breaker_failure_threshold": policy.breaker.failure_threshold,
            "breaker_open_seconds": policy.breaker.open_seconds,
            "breaker_half_open_probes": policy.breaker.half_open_probes,
        },
        "budget": {
            "window_seconds": 60,
            "requests_used": status.requests_used,
            "requests_left": status.requests_left,
            "tokens_used": status.tokens_used,
            "tokens_left": status.tokens_left,
        },
        "spend": spend_view(status),
        "in_flight": status.in_flight,
        "in_flight_left": status.in_flight_left,
        "breaker": {
            "state": status.breaker.value,
            "consecutive_failures": status.breaker_failures,
            "half_open_in_seconds": status.breaker_half_open_in if status.breaker.value == "open" else None,
            "probes_in_flight": status.breaker_probes_in_flight,
            "trips": status.breaker_trips,
        },
        "paused_for_seconds": status.paused_for,
        "suspended": status.suspended,
        "deferred_jobs": cluster.deferred.get(provider, 0),
        "queue": {
            "name": queue,
            "depth": state.depth if state else 0,
            "oldest_age_seconds": round(state.oldest_age_seconds, 1) if state else 0.0,
            "workers_alive": state.workers_alive if state else 0,
        },
        "checked_at": _iso(cluster.read_at),
    }


def spend_view(status) -> dict[str, Any] | None:
    """What the provider has cost this UTC day and month, against its budget (None: no limit)."""
    if status.spend is None:
        return None

    def period(p) -> dict[str, Any]:
        return {
            "spent_usd": round(p.spent_usd, 9),
            "budget_usd": p.budget_usd,
            "left_usd": None if p.left_usd is None else round(p.left_usd, 9),
            "resets_at": _iso(p.ends_at),
        }

    return {
        "day": period(status.spend.day),
        "month": period(status.spend.month),
        "when_spent": status.spend.when_spent,
        "exhausted": status.spend.exhausted,
    }


# --- users: activity and risk (/api/admin/users/...) ------------------------------------------------


def user_record(user_id: str, raw: dict, now: float) -> dict[str, Any] | None:
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    minute_now = int(now // 60)
    per_minute = {}
    for name, value in fields.items():
        if name.startswith("m:"):
            minute = int(name[2:])
            if minute > minute_now - m.ACTIVITY_MINUTES:
                per_minute[minute] = int(value)
    submitted = int(fields.get("submitted", 0))
    failed = int(fields.get("failed", 0))
    quota_hits = int(fields.get("quota_hits", 0))
    peak = max(per_minute.values(), default=0)
    last_hour = sum(per_minute.values())
    quota_part = min(1.0, quota_hits / QUOTA_HITS_REFERENCE)
    failure_part = min(1.0, failed / max(submitted, FAILURE_MIN_JOBS))
    burst_part = min(1.0, peak / BURST_REFERENCE_PER_MINUTE)
    wq, wf, wb = RISK_WEIGHTS
    score = round(100 * (wq * quota_part + wf * failure_part + wb * burst_part))
    return {
        "user_id": user_id,
        "submitted": submitted,
        "failed": failed,
        "quota_hits": quota_hits,
        "failure_share": _ratio(failed, submitted) if submitted else (1.0 if failed else 0.0),
        "submitted_last_hour": last_hour,
        "peak_per_minute": peak,
        "burstiness": round(burst_part, 3),
        "risk_score": score,
        "risk_level": "high" if score >= 60 else "medium" if score >= 30 else "low",
        "risk_factors": {
            "quota_pressure": round(quota_part, 3),
            "failure_share": round(failure_part, 3),
            "burstiness": round(burst_part, 3),
        },
        "first_seen": _iso(float(fields["first_seen"])) if "first_seen" in fields else None,
        "last_seen": _iso(float(fields["last_seen"])) if "last_seen" in fields else None,
    }


async def read_users(svc: Services, user_id: str | None = None) -> list[dict[str, Any]]:
    client = svc.redis
    now = time.time()
    if user_id is not None:
        ids = [user_id]
    else:
        ids = [_text(u) for u in await client.zrevrange(keys.activity_users(), 0, m.ACTIVITY_MAX_USERS - 1)]
    records = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for uid in chunk:
            pipe.hgetall(keys.activity(uid))
        for uid, raw in zip(chunk, await pipe.execute(), strict=True):
            record = user_record(uid, raw, now)
            if record is not None:
                records.append(record)
    return records


def risk_sort(record: dict[str, Any]):
    return (-record["risk_score"], -record["submitted"], record["user_id"])


def overview(records: list[dict[str, Any]], now: float) -> dict[str, Any]:
    def seen_within(record, seconds):
        last = record["last_seen"]
        return last is not None and datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() >= now - seconds

    levels = {"high": 0, "medium": 0, "low": 0}
    for record in records:
        levels[record["risk_level"]] += 1
    brief = lambda r: {k: r[k] for k in ("user_id", "submitted", "failed", "quota_hits", "risk_score", "risk_level")}  # noqa: E731
    return {
        "generated_at": _iso(now),
        "users": {
            "tracked": len(records),
            "active_last_hour": sum(1 for r in records if seen_within(r, 3600)),
            "active_last_24h": sum(1 for r in records if seen_within(r, 86400)),
        },
        "activity": {
            "submitted": sum(r["submitted"] for r in records),
            "submitted_last_hour": sum(r["submitted_last_hour"] for r in records),
            "failed": sum(r["failed"] for r in records),
            "quota_hits": sum(r["quota_hits"] for r in records),
        },
        "risk_levels": levels,
        "top_by_activity": [brief(r) for r in sorted(records, key=lambda r: (-r["submitted"], r["user_id"]))[:10]],
        "top_by_risk": [brief(r) for r in sorted(records, key=risk_sort)[:10]],
        "retention": {
            "max_users": m.ACTIVITY_MAX_USERS,
            "ttl_seconds": m.ACTIVITY_TTL_SECONDS,
            "burst_window_minutes": m.ACTIVITY_MINUTES,
        },
    }


def statistics(records: list[dict[str, Any]], sort: str, limit: int) -> dict[str, Any]:
    if sort == "risk":
        records.sort(key=risk_sort)
    elif sort == "activity":
        records.sort(key=lambda r: (-r["submitted"], r["user_id"]))
    else:
        records.sort(key=lambda r: r["last_seen"] or "", reverse=True)
    return {
        "generated_at": _iso(time.time()),
        "sort": sort,
        "total_users": len(records),
        "scoring": SCORING,
        "users": records[:limit],
    }
