"""Real components for integration tests: the sandbox, Celery worker processes, in-process API
apps and a fresh PostgreSQL database per test."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis

from devstack.processes import Service
from tests.support.api import open_api
from tests.support.sandbox import start_sandbox, worker_env
from unilingo import keys, persistence


@pytest.fixture
def client(redis_url):
    """A redis-py client on the test's clean database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    service = start_sandbox(tmp_path_factory.mktemp("sandbox"))
    yield service
    service.stop()


@pytest.fixture
def sandbox_reset(sandbox):
    """A sandbox as if just started: no faults, zeroed statistics and empty quota windows.

    The windows matter: a provider's rolling minute still holding an earlier test's calls
    would refuse calls that this test's limiter rightly granted.
    """
    httpx.post(f"{sandbox.url}/_sandbox/reset").raise_for_status()
    return sandbox


@pytest.fixture
def start_worker(redis_url, sandbox, tmp_path):
    """Starts real ``python -m workers`` processes; each is stopped at the end of the test."""
    started: list[Service] = []
    client = redis.Redis.from_url(redis_url)

    def start(**extra) -> Service:
        before = set(client.zrange(keys.workers_alive(), 0, -1))
        port = int(sandbox.url.rsplit(":", 1)[1])
        service = Service.python(
            f"worker{len(started)}",
            "workers",
            env=worker_env(redis_url, port, sandbox.aws_port, **extra),
            log_dir=tmp_path,
            ready=lambda: bool(set(client.zrange(keys.workers_alive(), 0, -1)) - before),
        )
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()
    client.close()


# --- in-process API apps (tests.support.api) --------------------------------------------------


@pytest.fixture
async def api(redis_url):
    client, lifespan = await open_api(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
        client.redis.close()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def api_factory(redis_url):
    """Apps with other settings: ``client = await api_factory(quota_ip="3/1m")``."""
    opened = []

    async def build(**overrides):
        client, lifespan = await open_api(overrides.pop("redis_url", redis_url), **overrides)
        opened.append((client, lifespan))
        return client

    yield build
    for client, lifespan in opened:
        await client.aclose()
        client.redis.close()
        await lifespan.__aexit__(None, None, None)


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def database_url(postgres_url):
    """A fresh, empty database on the session's server for each test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    yield url
    persistence._drop_connection()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
