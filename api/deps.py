"""FastAPI dependencies: the per-process services, the caller, and the client quotas.

Order on every protected route (``Guard``): the bearer token is verified, then the route's
quotas are taken in one Redis round trip (a submission: the address's and the user's AI or
pronunciation quota; a read: the user's read quota), then the route validates its input. A
token that is missing or fails counts against the address's quota before its ``401``, so a
flood of bad tokens meets ``429`` like any other. A submission whose ``Idempotency-Key`` is
already stored is a replay: it spends no quota. A quota that is spent answers
``429 rate_limited`` with ``Retry-After`` and ``RateLimit-*`` headers; the headers of the
tightest quota also go on successful answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
import redis.asyncio as aioredis
from fastapi import Request
from fastapi.security import HTTPBearer
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api import quotas
from api.config import ApiConfig
from api.errors import ApiError
from api.events import JobEvents
from api.security import Principal
from unilingo.connections import async_redis_client
from unilingo.jobs import AsyncJobStore
from unilingo.scripts import PipelinedScripts


class Services:
    """The Redis client and the job store, one of each per process (and per event loop).

    The Lua scripts of the request path (the quotas, the job record) go through ``scripts``
    (``unilingo.scripts.PipelinedScripts``): the calls of concurrent requests in one redis-py
    pipeline per turn of the event loop. Every other command goes through the client itself.
    The pool is made from the URL, so a Redis that stalls costs a request one socket timeout
    and no retry (the answer is a prompt ``503``).

    ``create_app``'s lifespan opens them; should a request arrive on another event loop (a
    test client that runs each request on its own loop), they are opened again for it.
    """

    def __init__(self, config: ApiConfig):
        self.config = config
        self._bound: _LoopConnections | None = None
        self.db: AsyncConnectionPool | None = None  # saved content (PostgreSQL), opened on first use
        self._stale: list[_LoopConnections] = []

    def bind(self) -> Services:
        loop = asyncio.get_running_loop()
        if self._bound is None or self._bound.loop is not loop:
            if self._bound is not None:
                # A client belongs to the loop that opened it; keep a few alive, unused.
                self._stale = [*self._stale[-7:], self._bound]
            self._bound = _LoopConnections.open(loop, self.config)
            self.db = None  # a pool belongs to its loop too
        return self

    def open_here(self) -> bool:
        """Whether the connections are open, and on the running event loop."""
        return self._bound is not None and self._bound.loop is asyncio.get_running_loop()

    def _current(self) -> _LoopConnections:
        if self._bound is None:
            raise RuntimeError("Services.bind() opens the connections first")
        return self._bound

    @property
    def redis(self) -> aioredis.Redis:
        return self._current().redis

    @property
    def scripts(self) -> PipelinedScripts:
        return self._current().scripts

    @property
    def store(self) -> AsyncJobStore:
        return self._current().store

    @property
    def quota(self) -> quotas.QuotaGate:
        return self._current().quota

    @property
    def events(self) -> JobEvents:
        """The SSE streams' one shared subscription."""
        return self._current().events

    @asynccontextmanager
    async def database(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection to the saved content's PostgreSQL (``DATABASE_URL``), from a small pool."""
        url = self.config.settings.database_url
        if not url:
            raise ApiError(501, "not_implemented", "saved content needs a database (DATABASE_URL) on this deployment")
        if self.db is None:
            timeout = self.config.settings.database_connect_timeout_seconds
            self.db = AsyncConnectionPool(
                url,
                min_size=1,
                max_size=4,
                open=False,
                timeout=timeout,
                kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            )
            await self.db.open(wait=False)
        try:
            async with self.db.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise ApiError(
                503, "service_unavailable", "the database is unreachable; retry shortly", headers={"Retry-After": "1"}
            ) from exc

    async def aclose(self) -> None:
        bound, self._bound = self._bound, None
        if bound is not None and bound.loop is asyncio.get_running_loop():
            await bound.events.aclose()
            await bound.redis.aclose()
            if self.db is not None:
                await self.db.close()
        self.db = None
        self._stale.clear()


@dataclass(frozen=True)
class _LoopConnections:
    """What one event loop's requests use: the client, its pipelined scripts, and what is built on them."""

    loop: asyncio.AbstractEventLoop
    redis: aioredis.Redis
    scripts: PipelinedScripts
    store: AsyncJobStore
    quota: quotas.QuotaGate
    events: JobEvents

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, config: ApiConfig) -> _LoopConnections:
        settings = config.settings
        timeouts = {
            "socket_connect_timeout": settings.redis_connect_timeout_seconds,
            "socket_timeout": settings.redis_socket_timeout_seconds,
            "health_check_interval": 30,
        }
        if settings.redis_sentinels:
            redis = async_redis_client(settings, **timeouts)
        else:
            redis = aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(settings.redis_url, **timeouts))
        scripts = PipelinedScripts(redis)
        store = AsyncJobStore(
            redis, ttl=settings.job_ttl_seconds, index_size=settings.user_job_index_size, scripts=scripts
        )
        return cls(loop, redis, scripts, store, quotas.QuotaGate(scripts, settings), JobEvents(redis))


async def services(request: Request) -> Services:
    return request.app.state.services.bind()


async def config(request: Request) -> ApiConfig:
    return request.app.state.config


def bearer_token(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


@lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def require_admin(request: Request, svc: Services, user: Principal) -> None:
    """Admin routes and the monitoring page: an allowed address, then the admin role.

    With ``ADMIN_IP_ALLOWLIST`` (CIDRs) set, the client's address (the one the quotas use, so
    ``X-Forwarded-For`` counts only through ``TRUSTED_PROXIES``) must be in one of them."""
    allowlist = tuple(svc.config.settings.admin_ip_allowlist)
    if allowlist:
        try:
            address = ipaddress.ip_address(svc.quota.client_ip(request))
        except ValueError:
            address = None
        if address is None or not any(address in network for network in _networks(allowlist)):
            raise ApiError(403, "ip_not_allowed", "admin endpoints are not served to this address")
    if not user.admin:
        raise ApiError(403, "forbidden", "this endpoint needs the admin role")


@dataclass(slots=True)
class Caller:
    """Who is calling, and the services to serve them with (what a protected route gets)."""

    user: Principal
    services: Services


class Guard(HTTPBearer):
    """The one dependency of a protected route: verifies the token, then takes the quotas.

    Being an ``HTTPBearer`` it also declares the bearer security scheme in OpenAPI. One
    dependency rather than a chain (token, user, quota, services) because FastAPI's
    dependency resolution costs tens of microseconds per dependency on the submit path.
    Quotas are named: ``ip``, ``ai``, ``pronunciation`` (see ``api.quotas``).
    """

    def __init__(self, *quotas: str, admin: bool = False, submission: bool = False):
        super().__init__(
            auto_error=False,
            scheme_name="SupabaseJWT",
            bearerFormat="JWT",
            description="A Supabase access token (`make token USER=<id>` on the local stack)",
        )
        self.quotas = quotas
        self.admin = admin
        self.submission = submission

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        state = request.app.state
        svc = state.services.bind()
        try:
            user = await state.verifier.verify(bearer_token(request))
        except ApiError as exc:
            if exc.status_code == 401:
                await svc.quota.take(("ip",), request, None)  # 429 instead, once the address is spent
            raise
        request.state.user = user
        quotas = self.quotas
        if self.submission and await self._is_replay(request, svc, user):
            quotas = ()
        if quotas:
            headers = await svc.quota.take(quotas, request, user.user_id)
            if headers:
                request.state.quota_headers = headers
        if self.admin:
            require_admin(request, svc, user)
        return Caller(user, svc)

    @staticmethod
    async def _is_replay(request: Request, svc: Services, user: Principal) -> bool:
        key = request.headers.get("idempotency-key")
        if not key:
            return False
        return await svc.store.idempotent_job(user.user_id, key) is not None


submit_guard = Guard("ip", submission=True)
ai_guard = Guard("ip", "ai", submission=True)
pronunciation_guard = Guard("ip", "pronunciation", submission=True)
read_guard = Guard("read")
admin_guard = Guard("read", admin=True)


def response_headers(request: Request, extra: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Headers every answer carries: the quota's, plus ``extra``."""
    quota_headers = getattr(request.state, "quota_headers", None)
    if quota_headers and extra:
        return {**quota_headers, **extra}
    return quota_headers or extra
