"""The provider sandbox and provider policy as tests drive them: faults, counts, policy changes."""

from __future__ import annotations

import httpx
import redis

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
