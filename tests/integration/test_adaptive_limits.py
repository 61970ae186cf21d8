"""Limits learned from the provider: a policy above what the account allows meets almost no 429.

The sandbox plays an OpenAI account whose quota (30 requests a minute) is smaller than the
policy's (50). With ``adaptive: true`` the workers read the ``x-ratelimit-*`` headers of every
answer, record the account's figure in Redis, and every worker's next permit is held to it.
Counted from the sandbox's own records, never timed: 429s it sent, requests it accepted.
"""

from __future__ import annotations

import httpx
import pytest
import redis

from devstack.processes import wait_until
from tests.clock import FakeClock
from tests.support.api import auth
from tests.support.jobs import finished, submit
from tests.support.sandbox import sandbox_stats, set_policy
from unilingo.adaptive import LearnedStore, RateLimits
from unilingo.jobs import JobStatus, JobStore, JobType
from unilingo.limiter import Limiter
from unilingo.policy import PolicyStore, ProviderPolicy

pytestmark = pytest.mark.integration

ACCOUNT_RPM, POLICY_RPM = 30, 50
JOBS = 66  # more than two minutes of the account's quota: the two minutes are saturated


def granted_in_a_minute(limiter: Limiter, clock: FakeClock, provider: str = "openai", tokens: int = 0) -> int:
    """Permits granted one every 100 ms through a minute (released at once)."""
    granted = 0
    for _ in range(600):
        decision = limiter.acquire(provider, tokens=tokens)
        if decision.granted:
            granted += 1
            limiter.release(provider, decision.lease_id, "success")
        clock.advance(0.1)
    return granted


def test_every_limiter_holds_to_the_learned_figure_never_above_the_policy(redis_url):
    client = redis.Redis.from_url(redis_url)
    policies, learned = PolicyStore(client), LearnedStore(client)
    clock = FakeClock()
    limiter = Limiter(client, clock=clock, window_margin_seconds=0)
    policies.write(ProviderPolicy(provider="openai", requests_per_minute=50, burst=50, adaptive=True))
    assert granted_in_a_minute(limiter, clock) == 50  # nothing learned yet: the policy

    learned.record("openai", RateLimits(requests_limit=30, tokens_limit=150_000), observed_ms=1)
    clock.advance(61)
    assert granted_in_a_minute(limiter, clock) == 30  # the account's figure, burst cut to it
    status = limiter.status("openai")
    assert status.effective.requests_per_minute == 30
    assert status.requests_used + status.requests_left == 30  # what is left is left of the 30
    assert status.effective.tokens_per_minute == 75_000  # the account allows more: the policy's

    learned.record("openai", RateLimits(requests_limit=80, tokens_limit=1_000), observed_ms=2)
    clock.advance(61)
    assert granted_in_a_minute(limiter, clock) == 50  # an account above the policy: the policy
    clock.advance(61)
    assert granted_in_a_minute(limiter, clock, tokens=100) == 10  # 1,000 learned tokens a minute

    policies.write(ProviderPolicy(provider="openai", requests_per_minute=50, burst=50))  # adaptive off
    clock.advance(61)
    assert granted_in_a_minute(limiter, clock, tokens=100) == 50
    client.close()


@pytest.fixture
def small_account(sandbox_reset):
    """The sandbox as an account allowed 30 requests a minute; the default account afterwards."""
    answer = httpx.post(
        f"{sandbox_reset.url}/_sandbox/quotas", json={"provider": "openai", "requests_per_minute": ACCOUNT_RPM}
    )
    answer.raise_for_status()
    yield sandbox_reset
    httpx.post(f"{sandbox_reset.url}/_sandbox/reset").raise_for_status()


async def test_an_adaptive_policy_holds_to_the_accounts_quota_and_uses_it(
    redis_url, start_worker, small_account, api_factory
):
    client = redis.Redis.from_url(redis_url)
    set_policy(client, "openai", requestsPerMinute=POLICY_RPM, adaptive=True)
    for _ in range(2):
        # A lease longer than the tests' 3 s: a late heartbeat on a busy machine must not requeue a job.
        start_worker(worker_concurrency=3, worker_queues="ai", job_lease_seconds=20, job_heartbeat_seconds=2)
    store = JobStore(client)
    ids = [
        submit(store, JobType.FLASHCARDS, {"content": f"Fact {i}: the Rhine flows into the North Sea.", "count": 2})
        for i in range(JOBS)
    ]
    jobs = wait_until(lambda: finished(store, ids), timeout=300, interval=1, message="the backlog drained")
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs if j.error]

    stats = sandbox_stats(small_account, "openai")
    print("sandbox's openai refusals:", stats["refusals"])  # shown in full when the test fails
    accepted = {int(s): row["requests"] - row["rejected_429"] for s, row in stats["per_second"].items()}
    print("accepted per second:", accepted)
    assert stats["rejected_429"] <= 3
    assert stats["requests"] - stats["rejected_429"] == JOBS  # each job one call; a refused one ran again
    # The first two minutes of the backlog: at least 90 % of the 60 calls the account allows in them.
    first = min(accepted)
    in_two_minutes = sum(n for s, n in accepted.items() if first <= s < first + 120)
    assert in_two_minutes >= 0.9 * 2 * ACCOUNT_RPM, in_two_minutes

    # What every replica shares in Redis, and what the status, the metrics and the limiter report.
    learned = LearnedStore(client).read("openai")
    assert learned.requests_per_minute == ACCOUNT_RPM and learned.tokens_per_minute == 75_000
    status = Limiter(client).status("openai")
    assert status.policy.requests_per_minute == POLICY_RPM and status.effective.requests_per_minute == ACCOUNT_RPM
    api = await api_factory()
    body = (await api.get("/api/ai/status", headers=auth("ops"))).json()
    assert body["adaptive"] is True and body["limits"]["requests_per_minute"] == POLICY_RPM
    assert body["effective"] == {"requests_per_minute": ACCOUNT_RPM, "tokens_per_minute": 75_000}
    assert body["learned"]["requests_per_minute"] == ACCOUNT_RPM
    metrics = (await api.get("/metrics")).text
    assert f'unilingo_provider_requests_effective_limit{{provider="openai"}} {float(ACCOUNT_RPM)}' in metrics
    assert f'unilingo_provider_requests_learned_limit{{provider="openai"}} {float(ACCOUNT_RPM)}' in metrics


def test_without_adaptive_the_accounts_figure_is_shown_but_the_policy_holds(redis_url, start_worker, small_account):
    """Learning is always on (it is what the status shows); holding to it is the policy's choice."""
    client = redis.Redis.from_url(redis_url)
    set_policy(client, "openai", requestsPerMinute=POLICY_RPM)
    start_worker(worker_concurrency=2, worker_queues="ai")
    store = JobStore(client)
    ids = [
        submit(store, JobType.FLASHCARDS, {"content": f"Note {i}: ice melts at 0 °C.", "count": 1}) for i in range(2)
    ]
    wait_until(lambda: finished(store, ids), timeout=60, interval=0.5)
    status = Limiter(client).status("openai")
    assert status.learned.requests_per_minute == ACCOUNT_RPM
    assert status.effective.requests_per_minute == POLICY_RPM
