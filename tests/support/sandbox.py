"""The provider sandbox and provider policy as tests drive them: the sandbox process, the
environment of a worker that uses it, faults, counts, policy changes."""

from __future__ import annotations

import httpx
import redis

from devstack.ports import free_port
from devstack.processes import Service
from unilingo.policy import PolicyStore, ProviderPolicy, default_policy


def set_policy(client: redis.Redis, provider: str, **changes) -> int:
    """The provider's default policy with ``changes`` (nested ones merged), written as a new revision."""
    document = default_policy(provider).model_dump(by_alias=True)
    for name, value in changes.items():
        if isinstance(value, dict):
            document[name] = {**document[name], **value}
        else:
            document[name] = value
    return PolicyStore(client).write(ProviderPolicy.model_validate(document))


def sandbox_stats(sandbox, provider: str) -> dict:
    return httpx.get(f"{sandbox.url}/_sandbox/stats").json()[provider]


def fault(sandbox, **body) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/faults", json=body).raise_for_status()


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
