"""Spend budgets: counted from the usage the provider reports, in Redis, per UTC day and month.

The limiter's tests drive its scripts with an injected clock, so a UTC day or month ends in
microseconds and every boundary is exact. The last tests run real workers against the
sandbox: a tiny daily budget stops the calls, and the jobs say why and until when.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis

from devstack.processes import wait_until
from tests.clock import FakeClock
from tests.support.api import auth
from tests.support.jobs import finished, submit
from tests.support.sandbox import sandbox_stats, set_policy
from unilingo.jobs import JobStatus, JobStore, JobType
from unilingo.limiter import DenyReason, Limiter
from unilingo.policy import PolicyStore, ProviderPolicy

pytestmark = pytest.mark.integration

# 2026-03-31 23:59:00 UTC: a minute before both a new UTC day and a new month.
MONTH_END = datetime(2026, 3, 31, 23, 59, tzinfo=UTC).timestamp()
APRIL_FIRST = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
MAY_FIRST = datetime(2026, 5, 1, tzinfo=UTC).timestamp()


@pytest.fixture
def clock():
    return FakeClock(MONTH_END)


@pytest.fixture
def limiter(client, clock):
    return Limiter(client, clock=clock)


def budget(client, **fields) -> None:
    PolicyStore(client).write(ProviderPolicy(provider="openai", budget=fields))


def test_spend_is_the_reported_usage_at_the_policys_prices(client, limiter):
    budget(client, usdPerDay=1.0)
    permit = limiter.acquire("openai", tokens=1000)
    assert permit.granted
    # In flight, the call holds its worst cost: 1,000 tokens at the output price ($0.60 / 1M).
    assert limiter.status("openai").spend.day.spent_usd == pytest.approx(0.0006)
    limiter.release("openai", permit.lease_id, "success", actual_tokens=500, input_tokens=400, output_tokens=100)
    # gpt-4o-mini's price: 400 x $0.15 / 1M + 100 x $0.60 / 1M
    spend = limiter.status("openai").spend
    assert spend.day.spent_usd == pytest.approx(0.00012, abs=1e-12)
    assert spend.month.spent_usd == pytest.approx(0.00012, abs=1e-12)
    assert spend.day.budget_usd == 1.0 and spend.day.left_usd == pytest.approx(1.0 - 0.00012)
    assert spend.month.budget_usd is None and spend.month.left_usd is None
    assert spend.day.ends_at == APRIL_FIRST and spend.month.ends_at == APRIL_FIRST
    # Released twice, counted once.
    limiter.release("openai", permit.lease_id, "success", input_tokens=400, output_tokens=100)
    assert limiter.status("openai").spend.day.spent_usd == pytest.approx(0.00012, abs=1e-12)


def test_a_call_the_provider_did_not_bill_costs_nothing(client, limiter):
    budget(client, usdPerDay=1.0)
    for outcome in ("success", "rejected", "aborted", "error", "throttled"):  # none reported usage
        permit = limiter.acquire("openai", tokens=1000)
        limiter.release("openai", permit.lease_id, outcome)
    assert limiter.status("openai").spend.day.spent_usd == 0


def test_a_spent_daily_budget_waits_for_the_next_utc_day(client, limiter, clock):
    budget(client, usdPerDay=0.0002)
    first = limiter.acquire("openai", tokens=100)
    # Its reservation (100 tokens at $0.60 / 1M) leaves room: a second call is granted too.
    second = limiter.acquire("openai", tokens=100)
    assert first.granted and second.granted
    for permit in (first, second):
        limiter.release("openai", permit.lease_id, "success", input_tokens=200, output_tokens=150)
    # 2 x (200 x 0.15 + 150 x 0.60) / 1M = $0.00024: over the $0.0002
    refused = limiter.acquire("openai", tokens=100)
    assert not refused.granted and refused.reason is DenyReason.BUDGET
    assert refused.retry_after == pytest.approx(60.0)  # until 00:00 UTC
    assert refused.recheck_after == pytest.approx(60.0)
    status = limiter.status("openai")
    assert status.spend.exhausted and status.spend.day.left_usd == 0
    clock.advance(60)  # 1 April, 00:00 UTC: a new day
    assert limiter.acquire("openai", tokens=100).granted
    assert limiter.status("openai").spend.day.spent_usd == pytest.approx(0.00006)


def test_a_spent_monthly_budget_waits_for_the_next_month_and_rechecks_every_minute(client, limiter, clock):
    clock.advance(60)  # 1 April 00:00 UTC
    budget(client, usdPerMonth=0.0001)
    permit = limiter.acquire("openai", tokens=10)
    limiter.release("openai", permit.lease_id, "success", input_tokens=1000, output_tokens=0)
    clock.advance(5 * 86400)  # 6 April: another day, the same month
    refused = limiter.acquire("openai", tokens=10)
    assert refused.reason is DenyReason.BUDGET
    assert refused.retry_after == pytest.approx(MAY_FIRST - clock.now)
    assert refused.recheck_after == 60.0  # a budget raised meanwhile applies within a minute
    budget(client, usdPerMonth=1.0)
    assert limiter.acquire("openai", tokens=10).granted


@pytest.mark.parametrize(
    "moment, day_ends, month_ends",
    [
        (datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC), datetime(2027, 1, 1), datetime(2027, 1, 1)),
        (datetime(2028, 2, 28, 12, tzinfo=UTC), datetime(2028, 2, 29), datetime(2028, 3, 1)),  # a leap year
        (datetime(2100, 2, 28, 12, tzinfo=UTC), datetime(2100, 3, 1), datetime(2100, 3, 1)),  # not one
        (datetime(2027, 4, 30, tzinfo=UTC), datetime(2027, 5, 1), datetime(2027, 5, 1)),
    ],
)
def test_the_utc_calendar_of_the_budget_periods(client, moment, day_ends, month_ends):
    limiter = Limiter(client, clock=FakeClock(moment.timestamp()))
    spend = limiter.status("openai").spend
    assert spend.day.ends_at == day_ends.replace(tzinfo=UTC).timestamp()
    assert spend.month.ends_at == month_ends.replace(tzinfo=UTC).timestamp()


def test_concurrent_calls_cannot_all_slip_under_the_budget(client, limiter):
    """Reservations are taken with the grant, in the same script: in-flight calls count."""
    budget(client, usdPerDay=0.001)  # 0.001 / (1,000 tokens x $0.60 / 1M) = one call and a bit
    granted = [limiter.acquire("openai", tokens=1000, holder=str(i)) for i in range(5)]
    assert [d.granted for d in granted] == [True, True, False, False, False]
    assert granted[2].reason is DenyReason.BUDGET


def test_the_fail_action_refuses_with_budget_exhausted(client, limiter):
    budget(client, usdPerDay=0, whenSpent="fail")
    refused = limiter.acquire("openai", tokens=10)
    assert not refused.granted and refused.reason is DenyReason.BUDGET_EXHAUSTED


def test_no_budget_no_limit_but_spend_is_still_counted(client, limiter):
    permit = limiter.acquire("openai", tokens=10)
    limiter.release("openai", permit.lease_id, "success", input_tokens=1_000_000, output_tokens=1_000_000)
    status = limiter.status("openai")
    assert status.spend.day.spent_usd == pytest.approx(0.75)  # $0.15 + $0.60 for a million each
    assert status.spend.day.budget_usd is None and not status.spend.exhausted
    assert limiter.acquire("openai", tokens=10).granted


# --- real workers and the sandbox ----------------------------------------------------------------


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield JobStore(client)
    client.close()


def next_utc_midnight() -> float:
    now = time.time()
    return (now // 86400 + 1) * 86400


def test_a_tiny_daily_budget_stops_the_calls_and_the_jobs_say_why(store, start_worker, sandbox_reset):
    # Far below one call's cost: the first call is granted (nothing spent yet), and its
    # reservation alone spends the day, so no second call starts, however many run at once.
    set_policy(store.client, "openai", budget={"usdPerDay": 0.00001})
    start_worker(worker_concurrency=3, worker_queues="ai")
    ids = [
        submit(store, JobType.FLASHCARDS, {"content": f"Fact {i}: ice melts at 0 °C.", "count": 2}) for i in range(4)
    ]
    done = wait_until(lambda: [j for j in (store.get(i) for i in ids) if j.status.terminal], timeout=60)
    assert [j.status for j in done] == [JobStatus.SUCCEEDED]
    waiting = wait_until(
        lambda: (
            (js := [store.get(i) for i in ids if i != done[0].job_id])
            and all(j.waiting is not None and j.waiting.reason == "budget" for j in js)
            and js
        ),
        timeout=30,
    )
    midnight = next_utc_midnight()
    for job in waiting:
        assert job.status is JobStatus.QUEUED and job.attempts <= 1
        assert job.waiting.provider == "openai"
        assert abs(job.waiting.until - midnight) < 5  # until the next UTC day
    assert sandbox_stats(sandbox_reset, "openai")["requests"] == 1
    # What the one call cost, from the usage the sandbox reported through the SDK.
    spend = Limiter(store.client).status("openai").spend
    tokens = done[0].result["usage"]["openai"]
    assert tokens * 0.00015 / 1000 <= spend.day.spent_usd <= tokens * 0.0006 / 1000
    assert spend.exhausted


def test_the_fail_action_fails_the_jobs_with_budget_exhausted(store, start_worker, sandbox_reset):
    set_policy(store.client, "openai", budget={"usdPerDay": 0, "whenSpent": "fail"})
    start_worker(worker_queues="ai")
    ids = [submit(store, JobType.FLASHCARDS, {"content": "Die Katze schläft.", "count": 2}) for _ in range(2)]
    jobs = wait_until(lambda: finished(store, ids), timeout=60)
    assert [j.status for j in jobs] == [JobStatus.FAILED] * 2
    assert {j.error.code for j in jobs} == {"budget_exhausted"}
    assert "until" in jobs[0].error.message
    assert sandbox_stats(sandbox_reset, "openai")["requests"] == 0


async def test_the_status_and_the_metrics_show_spend_and_what_is_left(api):
    set_policy(api.redis, "openai", budget={"usdPerDay": 0.5, "usdPerMonth": 10.0})
    limiter = Limiter(api.redis)
    permit = limiter.acquire("openai", tokens=10)
    limiter.release("openai", permit.lease_id, "success", input_tokens=1_000_000, output_tokens=0)  # $0.15
    body = (await api.get("/api/ai/status", headers=auth("maria"))).json()
    midnight = datetime.fromtimestamp(next_utc_midnight(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["spend"]["day"] == {"spent_usd": 0.15, "budget_usd": 0.5, "left_usd": 0.35, "resets_at": midnight}
    assert body["spend"]["month"]["budget_usd"] == 10.0 and body["spend"]["month"]["left_usd"] == 9.85
    assert body["spend"]["when_spent"] == "wait" and body["spend"]["exhausted"] is False
    assert body["policy"]["budget"] == {"usdPerDay": 0.5, "usdPerMonth": 10.0, "whenSpent": "wait"}
    text = (await api.get("/metrics")).text
    assert 'unilingo_provider_spend_usd{period="day",provider="openai"} 0.15' in text
    assert 'unilingo_provider_budget_usd{period="day",provider="openai"} 0.5' in text
    assert 'unilingo_provider_budget_usd{period="month",provider="openai"} 10.0' in text
    assert 'unilingo_provider_budget_usd{period="day",provider="storage"}' not in text  # no budget, no gauge
