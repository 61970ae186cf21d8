"""Redis connections for every component, from one place.

A plain ``REDIS_URL`` names one server. With Sentinel (``REDIS_SENTINELS=host:port,...`` and
``REDIS_SENTINEL_MASTER``, what the Helm chart renders in its sentinel mode) the clients ask the
Sentinels for the current master and follow a failover; redis-py URLs cannot name Sentinels,
hence the separate settings. Celery's broker gets the same choice in its own URL form.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from unilingo.settings import Settings, get_settings


def _sentinel_hosts(settings: Settings) -> list[tuple[str, int]]:
    hosts = []
    for entry in settings.redis_sentinels.split(","):
        host, _, port = entry.strip().rpartition(":")
        if entry.strip():
            hosts.append((host or entry.strip(), int(port or 26379)))
    return hosts


def _sentinel_options(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    master = {
        "db": settings.redis_db,
        "password": settings.redis_password,
        "username": settings.redis_username,
        "ssl": settings.redis_tls,
    }
    sentinel = {"password": settings.redis_sentinel_password, "ssl": settings.redis_tls}
    return master, {k: v for k, v in sentinel.items() if v}


def redis_client(settings: Settings | None = None, **options: Any) -> redis.Redis:
    """A synchronous client (workers, operator, CLI)."""
    settings = settings or get_settings()
    if settings.redis_sentinels:
        master, sentinel = _sentinel_options(settings)
        return Sentinel(_sentinel_hosts(settings), sentinel_kwargs=sentinel, **master).master_for(
            settings.redis_sentinel_master, **options
        )
    return redis.Redis.from_url(settings.redis_url, **options)


def async_redis_client(settings: Settings | None = None, **options: Any) -> aioredis.Redis:
    """An asyncio client (API tier, operator)."""
    settings = settings or get_settings()
    if settings.redis_sentinels:
        master, sentinel = _sentinel_options(settings)
        return AsyncSentinel(_sentinel_hosts(settings), sentinel_kwargs=sentinel, **master).master_for(
            settings.redis_sentinel_master, **options
        )
    return aioredis.Redis.from_url(settings.redis_url, **options)


def celery_broker(settings: Settings | None = None) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and the transport options that go with it."""
    settings = settings or get_settings()
    if not settings.redis_sentinels:
        return settings.redis_url, {}
    auth = f":{settings.redis_password}@" if settings.redis_password else ""
    url = ";".join(f"sentinel://{auth}{host}:{port}/{settings.redis_db}" for host, port in _sentinel_hosts(settings))
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    _, sentinel = _sentinel_options(settings)
    if sentinel:
        options["sentinel_kwargs"] = sentinel
    return url, options
