"""Real components for integration tests: the sandbox and Celery worker processes."""

from __future__ import annotations

import httpx
import pytest
import redis

from devstack.ports import free_port
from devstack.processes import Service, wait_until  # noqa: F401  (tests import it from here)
from tests.support.api import open_api
from unilingo import keys


def start_sandbox(log_dir, latency_scale: float = 0.01) -> Service:
    """``python -m sandbox`` on free ports, its latencies scaled; ``url`` and ``aws_port`` set on it."""
    port, aws_port = free_port(), free_port()
    service = Service.python(
        "sandbox",
        "sandbox",
        port=port,
        log_dir=log_dir,
        env={"SANDBOX_PORT": str(port), "SANDBOX_AWS_PORT": str(aws_port), "SANDBOX_LATENCY_SCALE": str(latency_scale)},
    )
    service.start()
    service.url = f"http://127.0.0.1:{port}"
    service.aws_port = aws_port
    return service


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


def worker_env(redis_url: str, sandbox_port: int, aws_port: int | None = None, **extra) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "SANDBOX_PORT": str(sandbox_port),
        "SANDBOX_AWS_PORT": str(aws_port or sandbox_port + 1),
        "WORKER_CONCURRENCY": "2",
        "JOB_LEASE_SECONDS": "3",
        "JOB_HEARTBEAT_SECONDS": "0.5",
        "WORKER_LOG_LEVEL": "WARNING",
        # Several workers share this host: no /metrics port unless a test asks for one.
        "WORKER_METRICS_PORT": "0",
    }
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


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
