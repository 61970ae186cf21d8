"""A provider outage fails no job: real workers, the sandbox answering 500 for 25 s.

Jobs waiting when the outage begins and jobs submitted during it all succeed after it; the
shared breaker keeps the provider's share of the outage to its threshold plus one probe per
half-open period; and the outage spends no job's attempts.
"""

from __future__ import annotations

import math

import httpx

from devstack.processes import wait_until
from tests.support.jobs import finished, submit
from tests.support.sandbox import fault, sandbox_stats, set_policy
from unilingo.jobs import JobStatus, JobStore, JobType
from unilingo.limiter import Limiter

OUTAGE_SECONDS = 25
THRESHOLD, OPEN_SECONDS, PROBES = 5, 10, 1


def test_a_25s_outage_fails_no_job_and_the_provider_sees_threshold_plus_probes(client, start_worker, sandbox_reset):
    store = JobStore(client)
    limiter = Limiter(client)
    set_policy(
        client, "openai", breaker={"failureThreshold": THRESHOLD, "openSeconds": OPEN_SECONDS, "halfOpenProbes": PROBES}
    )
    for _ in range(2):
        start_worker(worker_concurrency=3, worker_queues="ai")
    before = [
        submit(store, JobType.FLASHCARDS, {"content": f"Before {i}: rivers run to the sea.", "count": 1})
        for i in range(6)
    ]
    fault(sandbox_reset, provider="openai", mode="500", duration_s=OUTAGE_SECONDS)
    calls_before = sandbox_stats(sandbox_reset, "openai")["requests"]
    wait_until(lambda: limiter.status("openai").breaker.value == "open", timeout=20)
    during = [
        submit(store, JobType.FLASHCARDS, {"content": f"During {i}: the moon pulls the tides.", "count": 1})
        for i in range(6)
    ]
    waiting = [store.get(j) for j in before + during]
    assert not any(j.status is JobStatus.FAILED for j in waiting), [j.error for j in waiting if j.error]

    wait_until(
        lambda: not httpx.get(f"{sandbox_reset.url}/_sandbox/faults").json()["faults"], timeout=OUTAGE_SECONDS + 20
    )
    calls_during = sandbox_stats(sandbox_reset, "openai")["requests"] - calls_before
    trips = limiter.status("openai").breaker_trips  # the first opening, then one per failed probe
    half_open_periods = trips - 1
    print(f"provider calls during the outage: {calls_during}; breaker trips: {trips}")
    assert 1 <= trips <= 1 + math.ceil(OUTAGE_SECONDS / OPEN_SECONDS)
    assert calls_during <= THRESHOLD + PROBES * half_open_periods

    jobs = wait_until(lambda: finished(store, before + during), timeout=OPEN_SECONDS + 90, interval=0.5)
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs), [(j.attempts, j.error) for j in jobs]
    assert limiter.status("openai").breaker.value == "closed"
    # Only the outage's first failure met a provider that looked healthy; the rest were the
    # provider's, not the jobs': no job spent more than one attempt on the outage.
    assert all(j.attempts <= 2 for j in jobs)
    assert sum(j.attempts for j in jobs) <= len(jobs) + 1


def test_a_lone_job_outlasts_an_outage_its_own_retries_could_not(client, start_worker, sandbox_reset):
    """One job, three attempts, a breaker of five: without other traffic, every failure after
    the first meets a provider already failing, so none of them spends an attempt."""
    store = JobStore(client)
    limiter = Limiter(client)
    set_policy(client, "openai", breaker={"failureThreshold": THRESHOLD, "openSeconds": 3, "halfOpenProbes": PROBES})
    start_worker(worker_concurrency=1, worker_queues="ai")
    fault(sandbox_reset, provider="openai", mode="500", duration_s=8)
    job_id = submit(store, JobType.FLASHCARDS, {"content": "Alone: glaciers carve valleys.", "count": 1})
    wait_until(
        lambda: limiter.status("openai").breaker.value == "open",
        timeout=30,
        message=lambda: (
            f"breaker open ({limiter.status('openai')}, {store.get(job_id)}, {sandbox_stats(sandbox_reset, 'openai')})"
        ),
    )
    (job,) = wait_until(lambda: finished(store, [job_id]), timeout=60, interval=0.5)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2  # the outage's first failure, then the success
