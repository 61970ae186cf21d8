"""Unilingo v1's monitoring endpoints, on Redis state shared by every replica and worker.

| endpoint | who | what |
| --- | --- | --- |
| ``GET /api/ai/status`` | any user | OpenAI: the policy in force (limits, revision), budget left in the rolling minute, calls in flight, breaker, pause, deferred jobs, the ``ai`` queue |
| ``GET /api/pronunciation/status`` | any user | the same for Azure Speech and the ``speech`` queue |
| ``GET /api/metrics`` | admin | JSON summary: requests (total, error rate, response times), jobs, per-service figures, breakers, queues, quota rejections, cache |
| ``GET /api/admin/users/overview`` | admin | users tracked and active, activity totals, risk levels, top users |
| ``GET /api/admin/users/statistics`` | admin | activity and risk score per user (``?sort=risk|activity|recent``, ``?limit=``, ``?user_id=``) |
| ``GET /monitoring`` | admin | an HTML page that refreshes itself every 5 s from ``GET /monitoring/data`` |

Admin endpoints need a token with the admin role (``403 forbidden`` otherwise, ``401`` without
a valid token) and, when ``ADMIN_IP_ALLOWLIST`` lists networks (CIDRs), a client address in
one of them (``403 ip_not_allowed``; the address is the one the quotas use, so
``X-Forwarded-For`` counts only through ``TRUSTED_PROXIES``). The ``/api/`` ones take the IP
quota like every ``/api/`` route.

``/monitoring`` in a browser: a browser cannot send an ``Authorization`` header when it opens
a page, so the page also accepts the token once, by ``GET /monitoring?token=<jwt>`` or by the
sign-in form (``POST /monitoring``); it answers with a redirect to ``/monitoring`` that sets
the token as an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/monitoring`` (so the
token leaves the address bar and history at once, and no script can read it), valid until the
token expires (8 h at most). ``Authorization: Bearer`` works too. The page and its data take
no quota: it polls every 5 s. The sign-in and sign-out forms are refused (``403``) when the
browser says they were sent from another site (``Origin`` not this host, or
``Sec-Fetch-Site: cross-site``): no other page can sign an admin in as someone else (login
CSRF) or out.

Figures come from three places (``unilingo.metrics``): the cluster totals in Redis (every
replica's and worker's events added up), the live state read at request time (queues,
limiter, workers), and per-user activity records (bounded: the 5,000 most recently active
users, each kept 24 h after their last activity, with per-minute submission counts over the
last hour).

Risk score (0-100) = 100 × (0.4·q + 0.3·f + 0.3·b), where
``q = min(1, quota_hits / 10)`` (quota pressure), ``f = failed / max(submitted, 5)`` capped
at 1 (failure share, damped for users with few jobs), ``b = min(1, peak submissions in one
minute over the last hour / 20)`` (burstiness). ``high`` from 60, ``medium`` from 30.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import redis.exceptions
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api import monitoring_schemas as ms
from api.deps import Caller, Services, bearer_token, read_guard
from api.errors import ApiError
from api.metrics import Cluster, read_cluster
from api.responses import JSON
from api.security import Principal
from api.templates import monitoring as page
from unilingo import keys
from unilingo import metrics as m
from unilingo.policy import PROVIDERS

router = APIRouter(tags=["monitoring"])

COOKIE = "unilingo_monitoring"
COOKIE_MAX_SECONDS = 8 * 3600
STATUS_SERVICES = {"ai": ("openai", "ai"), "pronunciation": ("azure-speech", "speech")}

QUOTA_HITS_REFERENCE = 10
FAILURE_MIN_JOBS = 5
BURST_REFERENCE_PER_MINUTE = 20
RISK_WEIGHTS = (0.4, 0.3, 0.3)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def check_allowlist(request: Request, svc: Services) -> None:
    allowlist = tuple(svc.config.settings.admin_ip_allowlist)
    if not allowlist:
        return
    try:
        address = ipaddress.ip_address(svc.quota.client_ip(request))
    except ValueError:
        address = None
    if address is None or not any(address in network for network in _networks(allowlist)):
        raise ApiError(403, "ip_not_allowed", "admin endpoints are not served to this address")


async def _require_admin(request: Request, token: str | None) -> tuple[Principal, Services]:
    svc: Services = request.app.state.services.bind()
    check_allowlist(request, svc)
    user = await request.app.state.verifier.verify(token)
    request.state.user = user
    if not user.admin:
        raise ApiError(403, "forbidden", "this endpoint needs the admin role")
    return user, svc


async def admin_api(request: Request, caller: Caller = Depends(read_guard)) -> Caller:
    """``/api/`` admin routes: the IP quota (with the token check), then allowlist and role."""
    check_allowlist(request, caller.services)
    if not caller.user.admin:
        raise ApiError(403, "forbidden", "this endpoint needs the admin role")
    return caller


# ---------------------------------------------------------------------------------------------
# Reading Redis
# ---------------------------------------------------------------------------------------------


async def _cluster(svc: Services) -> Cluster:
    try:
        return await read_cluster(svc.redis, svc.config.settings.provider_window_margin_seconds)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise ApiError(503, "service_unavailable", "Redis is unreachable; retry shortly", headers={"Retry-After": "5"}) from None


async def _totals(svc: Services) -> dict[str, float]:
    raw = await svc.redis.hgetall(keys.stats("counters"))
    return {_text(k): float(v) for k, v in raw.items()}


def _ratio(part: float, whole: float, digits: int = 4) -> float:
    return round(part / whole, digits) if whole else 0.0


def _quantile(q: float, counts: list[float], bounds: tuple[float, ...]) -> float | None:
    """``histogram_quantile`` over per-bucket counts (the last bucket is +Inf)."""
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


# ---------------------------------------------------------------------------------------------
# The JSON summary (/api/metrics, /monitoring/data)
# ---------------------------------------------------------------------------------------------


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
            requests_per_minute=status.policy.requests_per_minute or None,
            tokens_in_window=status.tokens_used,
            tokens_per_minute=status.policy.tokens_per_minute or None,
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
        value = _quantile(q, counts, m.HTTP_BUCKETS)
        return None if value is None else round(value * 1000, 2)

    requests = {
        "total": total_requests,
        "errors": classes["5xx"],
        "client_errors": classes["4xx"],
        "error_rate": _ratio(classes["5xx"], total_requests),
        "average_response_ms": round(1000 * totals.get("http_seconds", 0) / total_requests, 2) if total_requests else None,
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
    jobs = {**sums, "failure_rate": _ratio(sums["failed"], ended), "recovered": int(totals.get("recovered", 0)),
            "by_type": by_type}

    services = {provider: _provider_block(provider, totals, cluster) for provider in PROVIDERS}
    hits = sum(int(totals.get(f"cache:{t}:hit", 0)) for t in m.JOB_TYPES)
    misses = sum(int(totals.get(f"cache:{t}:miss", 0)) for t in m.JOB_TYPES)
    queues = {
        queue: {"depth": s.depth, "oldest_age_seconds": round(s.oldest_age_seconds, 1), "workers_alive": s.workers_alive}
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


async def _summary(svc: Services) -> dict[str, Any]:
    cluster = await _cluster(svc)
    return summary(await _totals(svc), cluster)


@router.get("/api/metrics", response_model=ms.PlatformSummary, summary="JSON summary of the platform (admin)")
async def metrics_summary(caller: Caller = Depends(admin_api)) -> JSON:
    return JSON(await _summary(caller.services))


# ---------------------------------------------------------------------------------------------
# Provider status (/api/ai/status, /api/pronunciation/status)
# ---------------------------------------------------------------------------------------------


def provider_status(provider: str, queue: str, cluster: Cluster) -> dict[str, Any]:
    status = cluster.providers[provider]
    state = cluster.queues.get(queue, None)
    policy = status.policy
    if status.suspended:
        health = "suspended"
    elif status.breaker.value == "open":
        health = "unavailable"
    elif status.breaker.value == "half_open" or status.paused_for > 0 or (state and state.depth and not state.workers_alive):
        health = "degraded"
    else:
        health = "operational"
    return {
        "service": provider,
        "status": health,
        "revision": status.revision,
        "policy": policy.model_dump(mode="json", by_alias=True),
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


@router.get("/api/ai/status", response_model=ms.ProviderStatus, summary="OpenAI: the policy in force, budget left, breaker, queue")
async def ai_status(caller: Caller = Depends(read_guard)) -> JSON:
    provider, queue = STATUS_SERVICES["ai"]
    return JSON(provider_status(provider, queue, await _cluster(caller.services)))


@router.get("/api/pronunciation/status", response_model=ms.ProviderStatus,
            summary="Azure Speech: the policy in force, budget left, breaker, queue")
async def pronunciation_status(caller: Caller = Depends(read_guard)) -> JSON:
    provider, queue = STATUS_SERVICES["pronunciation"]
    return JSON(provider_status(provider, queue, await _cluster(caller.services)))


# ---------------------------------------------------------------------------------------------
# Users: activity and risk (/api/admin/users/...)
# ---------------------------------------------------------------------------------------------


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
        "risk_factors": {"quota_pressure": round(quota_part, 3), "failure_share": round(failure_part, 3),
                         "burstiness": round(burst_part, 3)},
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
        chunk = ids[start: start + 500]
        pipe = client.pipeline(transaction=False)
        for uid in chunk:
            pipe.hgetall(keys.activity(uid))
        for uid, raw in zip(chunk, await pipe.execute()):
            record = user_record(uid, raw, now)
            if record is not None:
                records.append(record)
    return records


def _risk_sort(record: dict[str, Any]):
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
        "top_by_risk": [brief(r) for r in sorted(records, key=_risk_sort)[:10]],
        "retention": {"max_users": m.ACTIVITY_MAX_USERS, "ttl_seconds": m.ACTIVITY_TTL_SECONDS,
                      "burst_window_minutes": m.ACTIVITY_MINUTES},
    }


@router.get("/api/admin/users/overview", response_model=ms.UsersOverview, summary="User activity overview and risk levels (admin)")
async def users_overview(caller: Caller = Depends(admin_api)) -> JSON:
    return JSON(overview(await read_users(caller.services), time.time()))


@router.get("/api/admin/users/statistics", response_model=ms.UsersStatistics, summary="Activity and risk score per user (admin)")
async def users_statistics(
    caller: Caller = Depends(admin_api),
    sort: str = Query("risk", pattern="^(risk|activity|recent)$"),
    limit: int = Query(50, ge=1, le=1000),
    user_id: str | None = Query(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@|+\-]+$"),
) -> JSON:
    records = await read_users(caller.services, user_id)
    if user_id is not None and not records:
        raise ApiError(404, "not_found", "no recent activity is recorded for this user")
    if sort == "risk":
        records.sort(key=_risk_sort)
    elif sort == "activity":
        records.sort(key=lambda r: (-r["submitted"], r["user_id"]))
    else:
        records.sort(key=lambda r: (r["last_seen"] or ""), reverse=True)
    return JSON({
        "generated_at": _iso(time.time()),
        "sort": sort,
        "total_users": len(records),
        "scoring": {
            "formula": "100 * (0.4*min(1, quota_hits/10) + 0.3*min(1, failed/max(submitted, 5)) "
                       "+ 0.3*min(1, peak_per_minute/20))",
            "levels": {"high": 60, "medium": 30},
        },
        "users": records[:limit],
    })


# ---------------------------------------------------------------------------------------------
# /monitoring: the HTML page
# ---------------------------------------------------------------------------------------------


def _page_token(request: Request) -> str | None:
    return bearer_token(request) or request.cookies.get(COOKIE)


def _set_cookie(response: Response, request: Request, token: str, user: Principal) -> None:
    exp = user.claims.get("exp")
    max_age = COOKIE_MAX_SECONDS
    if isinstance(exp, (int, float)):
        max_age = max(1, min(max_age, int(exp - time.time())))
    response.set_cookie(
        COOKIE, token, max_age=max_age, path="/monitoring", httponly=True, samesite="strict",
        secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
    )


def _html(body: str, status: int = 200, nonce: str | None = None) -> HTMLResponse:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    headers = {
        "Content-Security-Policy": f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
                                   "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
                                   "frame-ancestors 'none'; base-uri 'none'",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return HTMLResponse(body, status_code=status, headers=headers)


async def _page_admin(request: Request, token: str | None) -> tuple[Principal | None, Response | None]:
    """The admin behind ``token``, or the page to answer instead (sign-in or refusal)."""
    try:
        user, _ = await _require_admin(request, token)
    except ApiError as exc:
        if exc.status_code == 401:
            return None, _html(page.sign_in(exc.message), status=401)
        if exc.status_code in (403,):
            return None, _html(page.refused(exc.message), status=403)
        raise
    return user, None


@router.get("/monitoring", include_in_schema=True, summary="Live monitoring page (admin; HTML)",
            response_class=HTMLResponse)
async def monitoring_page(request: Request, token: str | None = Query(None, max_length=8192)) -> Response:
    if token:  # a token in the address: remember it in a cookie and take it out of the address
        user, refusal = await _page_admin(request, token)
        if refusal is not None:
            return refusal
        response = RedirectResponse("/monitoring", status_code=303, headers={"Cache-Control": "no-store"})
        _set_cookie(response, request, token, user)
        return response
    user, refusal = await _page_admin(request, _page_token(request))
    if refusal is not None:
        return refusal
    nonce = secrets.token_urlsafe(16)
    return _html(page.dashboard(nonce, user.user_id), nonce=nonce)


def _cross_site(request: Request) -> bool:
    """True when the browser says this form was sent from another site.

    Browsers send ``Origin`` with every form POST and ``Sec-Fetch-Site`` on every request; a
    client that sends neither is not a browser, and carries no ambient cookie to abuse."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    own = {request.headers.get("host", "").lower()}
    public = request.app.state.settings.public_base_url
    if public:
        own.add(urlsplit(public).netloc.lower())
    return origin == "null" or urlsplit(origin).netloc.lower() not in own


def _cross_site_refusal() -> Response:
    return _html(page.refused("this form was sent from another site; open /monitoring itself to sign in or out"), status=403)


@router.post("/monitoring", include_in_schema=False)
async def monitoring_sign_in(request: Request) -> Response:
    if _cross_site(request):
        return _cross_site_refusal()
    form = await request.form()
    token = str(form.get("token") or "").strip() or None
    user, refusal = await _page_admin(request, token)
    if refusal is not None:
        return refusal
    response = RedirectResponse("/monitoring", status_code=303, headers={"Cache-Control": "no-store"})
    _set_cookie(response, request, token, user)
    return response


@router.get("/monitoring/data", summary="The figures /monitoring shows (admin; cookie or bearer token)")
async def monitoring_data(request: Request) -> JSON:
    _, svc = await _require_admin(request, _page_token(request))
    data = await _summary(svc)
    data["users"] = overview(await read_users(svc), time.time())
    return JSON(data, headers={"Cache-Control": "no-store"})


@router.post("/monitoring/sign-out", include_in_schema=False)
async def monitoring_sign_out(request: Request) -> Response:
    if _cross_site(request):
        return _cross_site_refusal()
    response = RedirectResponse("/monitoring", status_code=303)
    response.delete_cookie(COOKIE, path="/monitoring")
    return response

