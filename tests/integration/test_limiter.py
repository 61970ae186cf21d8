"""Provider permits and the policy store on a real Redis.

Most tests drive the scripts with an injected clock, which makes minutes of policy time
pass in milliseconds and every boundary exact. The races, the dead worker and the
cross-process tests run on Redis's own clock, as production does.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time

import pytest
import redis
import redis.asyncio

from tests.clock import FakeClock
from unilingo import keys
from unilingo.limiter import AsyncLimiter, Limiter, Released
from unilingo.policy import AsyncPolicyStore, BreakerPolicy, PolicyStore, ProviderPolicy, default_policy, parse_change


@pytest.fixture
def store(client):
    return PolicyStore(client)


@pytest.fixture
def clock():
    return FakeClock()


MARGIN = 1.0  # a 1 s window margin, so that the figures below read plainly (the setting's is 2 s)


@pytest.fixture
def limiter(client, clock):
    return Limiter(client, clock=clock, window_margin_seconds=MARGIN)


@pytest.fixture
def other(redis_url, clock):
    """A second process's limiter: its own connection, the same Redis."""
    client = redis.Redis.from_url(redis_url)
    yield Limiter(client, clock=clock, window_margin_seconds=MARGIN)
    client.close()


def policy(provider: str = "openai", **fields) -> ProviderPolicy:
    return ProviderPolicy.model_validate({"provider": provider, **fields})


def window_counts(times: list[float], window: float) -> int:
    """The most events found in any half-open interval [t, t + window)."""
    times, window_ms = sorted(round(t * 1000) for t in times), round(window * 1000)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window_ms:
            start += 1
        most = max(most, end - start + 1)
    return most


# --- the policy store ---------------------------------------------------------------------------


def test_policy_store_writes_under_growing_revisions_and_announces_them(client, store):
    pubsub = client.pubsub()
    pubsub.subscribe(keys.policy_channel())
    pubsub.get_message(timeout=1)  # the subscription confirmation

    assert store.read("openai") == (default_policy("openai"), 0)
    first = store.write(policy(requestsPerMinute=40))
    second = store.write(policy("azure-speech", maxInFlight=10))
    assert (first, second) == (1, 2) and store.revision() == 2
    assert store.read("openai") == (policy(requestsPerMinute=40), 1)

    changes = [parse_change(pubsub.get_message(timeout=1)["data"]) for _ in range(2)]
    assert changes == [("openai", 1), ("azure-speech", 2)]

    assert store.reset("openai") == 3
    assert store.read("openai") == (default_policy("openai"), 3)
    everything = store.read_all()
    assert set(everything) == {"openai", "azure-speech", "azure-vision", "aws-polly", "storage"}
    assert everything["azure-speech"] == (policy("azure-speech", maxInFlight=10), 2)
    assert everything["storage"] == (default_policy("storage"), 0)
    stored = client.hgetall(keys.policy("azure-speech"))
    assert stored[b"max_in_flight"] == b"10" and stored[b"revision"] == b"2" and len(stored[b"digest"]) == 16
    pubsub.close()


def test_a_revision_floor_keeps_a_flushed_counter_from_repeating_revisions(client, store):
    """The operator passes the revisions its resources report: after a flush none is handed out again."""
    assert store.write(policy(requestsPerMinute=40)) == 1
    client.flushdb()  # the counter goes back to nothing
    assert store.write(policy(requestsPerMinute=41), revision_floor=7) == 8
    assert store.write(policy(requestsPerMinute=42), revision_floor=3) == 9  # a floor below does nothing


async def test_async_policy_store(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    store = AsyncPolicyStore(client)
    assert await store.write(policy(suspended=True)) == 1
    assert (await store.read("openai")).policy.suspended
    assert (await store.read_all())["openai"].revision == 1
    assert await store.reset("openai") == 2 and await store.revision() == 2
    await client.aclose()


# --- requests per minute ------------------------------------------------------------------------


def test_no_rolling_minute_ever_carries_more_than_the_rate(store, limiter, clock):
    store.write(policy(requestsPerMinute=50, burst=50, tokensPerMinute=0, maxInFlight=100))
    rng = random.Random(7)
    start, granted = clock.now, []
    while clock.now - start < 300:  # five minutes of eager, irregular demand
        clock.advance(rng.expovariate(2.0))
        decision = limiter.acquire("openai")
        if decision.granted:
            granted.append(clock.now)
            limiter.release("openai", decision.lease_id, "success")
        else:
            assert decision.reason == "rate" and 0 < decision.retry_after <= 61
    assert window_counts(granted, 60.0) == 50
    assert window_counts(granted, 61.0) == 50  # the jitter margin: also over 61 s
    assert len(granted) >= 50 * 4  # and the budget is used, not just respected


def test_a_refused_call_is_told_exactly_when_the_next_one_fits(store, limiter, clock):
    store.write(policy(requestsPerMinute=3, burst=3))
    for _ in range(3):
        assert limiter.acquire("openai").granted
        clock.advance(10)
    refused = limiter.acquire("openai")  # t = 30: the call at t = 0 leaves at 61 (60 s + margin)
    assert (refused.granted, refused.reason, refused.retry_after) == (False, "rate", 31.0)
    clock.advance(30.999)
    assert limiter.acquire("openai").reason == "rate"
    clock.advance(0.001)
    assert limiter.acquire("openai").granted


def test_a_call_that_left_late_holds_its_place_in_the_window_from_when_it_left(store, limiter, clock):
    store.write(policy(requestsPerMinute=1, burst=1))
    late = limiter.acquire("openai")
    clock.advance(5)  # the worker stalled 5 s between the grant and the call reaching the provider
    clock.advance(2)  # the call took 2 s
    limiter.release("openai", late.lease_id, "success", sent_after=5)
    clock.advance(54)  # 61 s after the grant, but only 56 s after the provider counted it
    refused = limiter.acquire("openai")
    assert (refused.granted, refused.reason, refused.retry_after) == (False, "rate", 5.0)
    clock.advance(5)
    assert limiter.acquire("openai").granted


def test_burst_spreads_a_minutes_budget(store, limiter, clock):
    store.write(policy(requestsPerMinute=60, burst=5, maxInFlight=100))  # at most 5 in any 5 s
    granted = []
    start = clock.now
    while clock.now - start < 60:
        while (decision := limiter.acquire("openai")).granted:  # everyone wants a call, always
            granted.append(clock.now)
            limiter.release("openai", decision.lease_id, "success")
        clock.advance(0.1)
    assert granted[:5] == [start] * 5 and granted[5] == start + 5  # a burst at once, then wait
    assert window_counts(granted, 5.0) == 5
    assert len(granted) == 60  # the sustained rate is the full 60 a minute


def test_refusals_consume_nothing(store, limiter, clock):
    store.write(policy(requestsPerMinute=2, burst=2))
    assert limiter.acquire("openai").granted and limiter.acquire("openai").granted
    for _ in range(100):
        assert not limiter.acquire("openai").granted
    clock.advance(61)
    assert limiter.acquire("openai").granted and limiter.acquire("openai").granted


# --- tokens per minute ---------------------------------------------------------------------------


def test_tokens_per_minute_and_reconciliation(store, client, limiter, clock):
    store.write(policy(tokensPerMinute=1000))
    first = limiter.acquire("openai", tokens=600)
    assert first.granted
    clock.advance(5)
    refused = limiter.acquire("openai", tokens=500)
    assert (refused.reason, refused.retry_after) == ("tokens", 56.0)  # until the 600 leave
    assert limiter.acquire("openai", tokens=400).granted  # exactly fills the minute

    # usage below the estimate is not refunded by default: providers charge the estimate
    limiter.release("openai", first.lease_id, "success", actual_tokens=100)
    assert limiter.status("openai").tokens_used == 1000
    # usage above it is charged
    third = limiter.acquire("openai", tokens=0)
    limiter.release("openai", third.lease_id, "success", actual_tokens=50)
    assert limiter.status("openai").tokens_used == 1050

    refunding = Limiter(client, clock=clock, refund_unused_tokens=True, window_margin_seconds=MARGIN)
    clock.advance(61)
    fourth = refunding.acquire("openai", tokens=900)
    refunding.release("openai", fourth.lease_id, "success", actual_tokens=200)
    assert refunding.status("openai").tokens_used == 200
    assert refunding.acquire("openai", tokens=800).granted


def test_a_call_bigger_than_the_whole_budget_waits_for_an_empty_window(store, limiter, clock):
    store.write(policy(tokensPerMinute=1000))
    assert limiter.acquire("openai", tokens=10).granted
    assert limiter.acquire("openai", tokens=5000).reason == "tokens"
    clock.advance(61)
    assert limiter.acquire("openai", tokens=5000).granted
    assert limiter.acquire("openai", tokens=1).reason == "tokens"


# --- the in-flight semaphore ---------------------------------------------------------------------


def test_release_frees_the_slot(store, limiter, clock):
    store.write(policy("storage", maxInFlight=2))
    a, _b = limiter.acquire("storage"), limiter.acquire("storage")
    refused = limiter.acquire("storage")
    assert (refused.reason, refused.retry_after) == ("in_flight", 1.0)
    assert limiter.release("storage", a.lease_id, "success").held
    assert limiter.acquire("storage").granted
    assert not limiter.release("storage", "no-such-lease", "success").held
    assert limiter.status("storage").in_flight == 2


def _race(url: str, enough: int, state, lock, seconds: float = 30.0, cap: int = 5) -> int:
    """Take and give back storage permits as fast as possible until ``enough`` were granted and
    the cap was reached at least once (however busy the machine: counts, not a time); count
    holders in ``state``."""
    limiter = Limiter(redis.Redis.from_url(url))
    deadline, grants = time.monotonic() + seconds, 0
    while (grants < enough or state[1] < cap) and time.monotonic() < deadline:
        decision = limiter.acquire("storage")
        if not decision.granted:
            continue
        grants += 1
        with lock:
            state[0] += 1
            state[1] = max(state[1], state[0])
        time.sleep(0.003)
        with lock:
            state[0] -= 1
        limiter.release("storage", decision.lease_id, "success")
    return grants


def test_threads_racing_for_five_slots_never_hold_more_than_five(store, redis_url):
    store.write(policy("storage", maxInFlight=5))
    state, lock = [0, 0], threading.Lock()
    grants = [0] * 16

    def run(i):
        grants[i] = _race(redis_url, 8, state, lock)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state[1] == 5  # the cap is reached and never passed
    assert sum(grants) > 100


def _race_process(url, enough, shared, lock, results):
    class View:  # the list interface _race expects, over shared memory
        def __getitem__(self, i):
            return shared[i]

        def __setitem__(self, i, value):
            shared[i] = value

    grants = [0] * 4

    def run(i):
        grants[i] = _race(url, enough, View(), lock)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(grants))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(sum(grants))


def test_processes_racing_for_five_slots_never_hold_more_than_five(store, redis_url):
    store.write(policy("storage", maxInFlight=5))
    ctx = multiprocessing.get_context("fork")
    shared, lock, results = ctx.Array("i", [0, 0]), ctx.Lock(), ctx.Queue()
    processes = [ctx.Process(target=_race_process, args=(redis_url, 5, shared, lock, results)) for _ in range(3)]
    for process in processes:
        process.start()
    grants = sum(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=10)
    assert shared[1] == 5  # 12 racers in 3 processes: the cap is reached and never passed
    assert grants > 50


def _hold(url: str, ready) -> None:
    limiter = Limiter(redis.Redis.from_url(url), lease_seconds=2.0)
    for _ in range(2):
        assert limiter.acquire("storage", holder=f"pid-{os.getpid()}").granted
    ready.set()
    time.sleep(60)  # "calling the provider" until killed


def test_a_dead_holders_slots_come_back_when_its_leases_lapse(store, client, redis_url):
    store.write(policy("storage", maxInFlight=2))
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    worker = ctx.Process(target=_hold, args=(redis_url, ready))
    worker.start()
    assert ready.wait(30)
    limiter = Limiter(client)
    refused = limiter.acquire("storage")
    assert refused.reason == "in_flight" and 0 < refused.retry_after <= 1.0

    os.kill(worker.pid, signal.SIGKILL)  # mid-call, without a word: no release, no heartbeat
    worker.join(10)
    deadline, regained = time.monotonic() + 5, 0
    while regained < 2:  # both of its slots come back, each when its lease lapses
        decision = limiter.acquire("storage")
        if decision.granted:
            regained += 1
        else:
            assert decision.reason == "in_flight" and time.monotonic() < deadline
            time.sleep(decision.retry_after)
    assert limiter.status("storage").in_flight == 2


def test_renewing_keeps_a_long_call_its_slot(store, limiter, other, clock):
    store.write(policy("storage", maxInFlight=1))
    held = limiter.acquire("storage")
    clock.advance(20)
    assert limiter.renew("storage", held.lease_id)  # now good until t = 50
    clock.advance(20)
    assert other.acquire("storage").reason == "in_flight"
    clock.advance(11)  # the heartbeat stopped: lapsed at t = 50
    assert not limiter.renew("storage", held.lease_id)
    assert other.acquire("storage").granted
    assert not limiter.release("storage", held.lease_id, "success").held


# --- the circuit breaker -------------------------------------------------------------------------


def _fail(limiter: Limiter, provider: str = "openai", outcome: str = "error") -> str:
    decision = limiter.acquire(provider)
    assert decision.granted, decision
    return limiter.release(provider, decision.lease_id, outcome).breaker


def test_the_breaker_opens_at_the_threshold_for_every_client(store, limiter, other, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000))
    assert [_fail(limiter) for _ in range(4)] == ["closed"] * 4
    assert _fail(other) == "open"  # four failures: still closed for everyone; the fifth opens it
    for client in (limiter, other):
        refused = client.acquire("openai")
        assert (refused.reason, refused.retry_after) == ("breaker_open", 60.0)
    status = other.status("openai")
    assert (status.breaker, status.breaker_half_open_in, status.breaker_trips) == ("open", 60.0, 1)


def test_a_success_resets_the_count_of_consecutive_failures(store, limiter, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000))
    for _ in range(4):
        _fail(limiter)
    _fail(limiter, outcome="success")
    assert [_fail(limiter) for _ in range(4)] == ["closed"] * 4
    assert limiter.status("openai").breaker_failures == 4


@pytest.mark.parametrize("outcome", ["rejected", "aborted"])
def test_bad_input_and_our_own_errors_say_nothing_of_the_providers_health(store, limiter, clock, outcome):
    store.write(policy(requestsPerMinute=1000, burst=1000))
    for _ in range(4):
        _fail(limiter)
    assert [_fail(limiter, outcome=outcome) for _ in range(3)] == ["closed"] * 3  # never the fifth failure
    assert limiter.status("openai").breaker_failures == 0  # an answer, as healthy as a success


def test_half_open_admits_only_the_probes_and_their_successes_close_it(store, limiter, other, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000, breaker={"openSeconds": 10, "halfOpenProbes": 2}))
    for _ in range(5):
        _fail(limiter)
    clock.advance(9.999)
    assert limiter.acquire("openai").reason == "breaker_open"
    clock.advance(0.001)
    probes = [limiter.acquire("openai"), other.acquire("openai")]
    assert all(p.granted for p in probes)
    refused = other.acquire("openai")
    assert (refused.reason, refused.retry_after) == ("breaker_open", 1.0)
    assert limiter.status("openai").breaker_probes_in_flight == 2

    assert limiter.release("openai", probes[0].lease_id, "success").breaker == "half_open"
    third = other.acquire("openai")  # a probe slot came back
    assert third.granted and other.acquire("openai").reason == "breaker_open"
    assert limiter.release("openai", probes[1].lease_id, "success").breaker == "closed"
    assert limiter.status("openai").breaker == "closed"
    assert all(other.acquire("openai").granted for _ in range(3))
    # the third probe's outcome belongs to a finished half-open period: it moves nothing
    assert other.release("openai", third.lease_id, "error").breaker == "closed"
    assert limiter.status("openai").breaker_failures == 0


def test_a_failed_probe_opens_the_breaker_again(store, limiter, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000))
    for _ in range(5):
        _fail(limiter)
    clock.advance(60)
    assert _fail(limiter) == "open"
    refused = limiter.acquire("openai")
    assert (refused.reason, refused.retry_after) == ("breaker_open", 60.0)
    assert limiter.status("openai").breaker_trips == 2


def test_outcomes_of_calls_admitted_before_the_breaker_opened_are_ignored(store, limiter, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000, maxInFlight=10))
    late, *failing = [limiter.acquire("openai") for _ in range(6)]
    for decision in failing:
        limiter.release("openai", decision.lease_id, "error")
    assert limiter.release("openai", late.lease_id, "success").breaker == "open"


def test_a_failing_provider_gets_no_more_calls_at_once_than_could_still_open_the_breaker(store, limiter, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000, maxInFlight=10))
    _fail(limiter)
    held = [limiter.acquire("openai") for _ in range(5)]
    assert [d.granted for d in held] == [True] * 4 + [False]  # 1 failure + 4 in flight = the threshold
    assert held[-1].reason == "in_flight"
    for decision in held[:4]:
        limiter.release("openai", decision.lease_id, "error")
    assert limiter.status("openai").breaker == "open"  # the outage cost the provider 5 calls
    clock.advance(60)
    probe = limiter.acquire("openai")
    limiter.release("openai", probe.lease_id, "success")
    assert sum(limiter.acquire("openai").granted for _ in range(10)) == 10  # healthy: the full cap again


def test_only_a_healthy_providers_failure_counts_against_the_job(store, limiter, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000, breaker={"openSeconds": 30}))

    def failure() -> Released:
        decision = limiter.acquire("openai")
        assert decision.granted, decision
        return limiter.release("openai", decision.lease_id, "error")

    first = failure()  # the provider's previous answer was a success (none yet): the job's own
    assert (first.counts_against_job, first.breaker, first.retry_after) == (True, "closed", 1.0)
    streak = [failure() for _ in range(3)]  # the provider keeps failing: an outage, not the jobs
    assert [(r.counts_against_job, r.breaker, r.retry_after) for r in streak] == [(False, "closed", 1.0)] * 3
    opened = failure()
    assert (opened.counts_against_job, opened.breaker, opened.retry_after) == (False, "open", 30.0)
    clock.advance(30)
    probe = failure()  # a failed probe: the provider is still down
    assert (probe.counts_against_job, probe.breaker, probe.retry_after) == (False, "open", 30.0)
    clock.advance(30)
    limiter.release("openai", limiter.acquire("openai").lease_id, "success")
    assert failure().counts_against_job  # healthy again: a failure is the job's once more


def test_a_new_open_time_applies_to_an_open_breaker(store, limiter, clock):
    store.write(policy(requestsPerMinute=1000, burst=1000))
    for _ in range(5):
        _fail(limiter)
    clock.advance(5)
    store.write(policy(requestsPerMinute=1000, burst=1000, breaker={"openSeconds": 5}))
    assert limiter.acquire("openai").granted  # half-open now, under the new revision


# --- pauses, suspension, revisions ------------------------------------------------------------------


def test_a_providers_retry_after_pauses_it_for_everyone(store, limiter, other, clock):
    decision = limiter.acquire("openai")
    limiter.release("openai", decision.lease_id, "throttled", retry_after=2.5)
    refused = other.acquire("openai")
    assert (refused.reason, refused.retry_after) == ("paused", 2.5)
    assert other.status("openai").paused_for == 2.5
    clock.advance(2.5)
    assert other.acquire("openai").granted


def test_throttled_without_retry_after_pauses_for_the_policys_backoff(store, limiter, other, clock):
    store.write(policy(retry={"backoffSeconds": 4}))
    decision = limiter.acquire("openai")
    limiter.release("openai", decision.lease_id, "throttled")
    assert other.acquire("openai").retry_after == 4.0


def test_pauses_only_ever_grow(store, limiter, clock):
    a, b = limiter.acquire("openai"), limiter.acquire("openai")
    limiter.release("openai", a.lease_id, "throttled", retry_after=10)
    limiter.release("openai", b.lease_id, "throttled", retry_after=1)
    assert limiter.acquire("openai").retry_after == 10.0


def test_suspended_denies_first_and_says_why(store, limiter, other, clock):
    decision = limiter.acquire("openai")
    limiter.release("openai", decision.lease_id, "throttled", retry_after=30)
    revision = store.write(policy(suspended=True))
    refused = other.acquire("openai")
    assert (refused.reason, refused.retry_after, refused.revision) == ("suspended", 1.0, revision)
    assert other.status("openai").suspended
    store.write(policy(suspended=False))
    assert other.acquire("openai").reason == "paused"


def test_a_new_revision_is_enforced_on_the_very_next_decision(store, limiter, other, clock):
    assert limiter.acquire("openai").revision == 0
    revision = store.write(policy(maxInFlight=1))
    for client in (limiter, other):
        refused = client.acquire("openai")
        assert (refused.reason, refused.revision) == ("in_flight", revision)
    revision = store.write(policy(maxInFlight=3))
    assert other.acquire("openai").revision == revision
    store.reset("openai")
    assert limiter.status("openai").policy == default_policy("openai")


def _watch_for_suspension(url: str, results) -> None:
    limiter = Limiter(redis.Redis.from_url(url))
    results.put("ready")
    while True:
        decision = limiter.acquire("azure-speech")
        if decision.reason == "suspended":
            results.put(time.time())
            return
        if decision.granted:
            limiter.release("azure-speech", decision.lease_id, "success")
        time.sleep(0.01)  # a worker's pace, not a spin


def test_every_process_enforces_a_new_revision_within_a_second(store, redis_url):
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    watchers = [ctx.Process(target=_watch_for_suspension, args=(redis_url, results)) for _ in range(3)]
    for watcher in watchers:
        watcher.start()
    assert [results.get(timeout=30) for _ in watchers] == ["ready"] * 3
    time.sleep(0.2)
    written_at = time.time()
    store.write(policy("azure-speech", suspended=True))
    seen = [results.get(timeout=5) for _ in watchers]
    for watcher in watchers:
        watcher.join(timeout=10)
    assert max(seen) - written_at < 1.0


# --- status, async form, misuse ------------------------------------------------------------------


def test_status_shows_what_is_in_force_and_what_is_left(store, limiter, clock):
    revision = store.write(policy(requestsPerMinute=10, burst=10, tokensPerMinute=1000))
    a = limiter.acquire("openai", tokens=300)
    limiter.acquire("openai", tokens=200)
    limiter.release("openai", a.lease_id, "error")
    status = limiter.status("openai")
    assert status.revision == revision and status.policy.requests_per_minute == 10
    assert (status.requests_used, status.requests_left) == (2, 8)
    assert (status.tokens_used, status.tokens_left) == (500, 500)
    assert (status.in_flight, status.in_flight_left) == (1, 4)
    assert (status.breaker, status.breaker_failures, status.breaker_half_open_in) == ("closed", 1, None)
    assert (status.paused_for, status.suspended) == (0.0, False)
    clock.advance(61)
    status = limiter.status("openai")
    assert (status.requests_used, status.tokens_used) == (0, 0)
    data = status.as_dict()
    assert data["policy"]["requestsPerMinute"] == 10 and data["breaker"] == "closed"
    assert limiter.status("storage").requests_left is None  # not metered


async def test_async_limiter(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    await AsyncPolicyStore(client).write(policy(maxInFlight=1, breaker=BreakerPolicy(half_open_probes=1)))
    limiter = AsyncLimiter(client)
    held = await limiter.acquire("openai", tokens=100, holder="job-1")
    assert held.granted and (await limiter.acquire("openai")).reason == "in_flight"
    assert await limiter.renew("openai", held.lease_id)
    assert (await limiter.status("openai")).in_flight == 1
    released = await limiter.release("openai", held.lease_id, "success", actual_tokens=150)
    assert released.held and released.breaker == "closed"
    assert (await limiter.status("openai")).tokens_used == 150
    await client.aclose()


def test_misuse_is_refused_before_redis(limiter):
    with pytest.raises(ValueError, match="unknown provider"):
        limiter.acquire("gemini")
    with pytest.raises(ValueError, match="outcome"):
        limiter.release("openai", "lease", "maybe")
    with pytest.raises(ValueError, match="tokens"):
        limiter.acquire("openai", tokens=-1)


def test_an_idle_provider_leaves_nothing_behind(store, client, limiter, clock):
    decision = limiter.acquire("openai", tokens=10)
    limiter.release("openai", decision.lease_id, "success")
    ttls = {key.decode(): client.pttl(key) for key in client.keys(keys.limiter("openai", "*"))}
    # The month's spend is kept until the month is over (and a day); the rest for a minute.
    assert 0 < ttls.pop(keys.limiter("openai", "spend")) <= 32 * 86_400_000
    assert ttls and all(0 < ttl <= 61_000 for ttl in ttls.values()), ttls
