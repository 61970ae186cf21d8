"""Client quotas on a real Redis: exact across replicas, exact in every rolling window."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import pytest
import redis
import redis.asyncio

from tests.clock import FakeClock
from unilingo import keys
from unilingo.quota import AsyncClientQuota, ClientQuota, rate_limit_headers


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def quota(client, clock):
    return ClientQuota(client, clock=clock)


def _replica(url: str, hits: int, start, results) -> None:
    """One API replica's worth of requests from the same user, as fast as it can."""
    quota = ClientQuota(redis.Redis.from_url(url))
    start.wait()
    results.put(sum(quota.hit("user_ai", "alice", "50/1h").allowed for _ in range(hits)))


def test_one_user_hammering_three_replicas_gets_exactly_the_quota(redis_url):
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    replicas = [ctx.Process(target=_replica, args=(redis_url, 100, start, results)) for _ in range(3)]
    for replica in replicas:
        replica.start()
    start.set()
    accepted = sum(results.get(timeout=30) for _ in replicas)
    for replica in replicas:
        replica.join(timeout=10)
    assert accepted == 50


async def test_concurrent_async_hits_from_several_clients_are_exact(redis_url):
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(3)]
    quotas = [AsyncClientQuota(c) for c in clients]
    results = await asyncio.gather(*(quotas[i % 3].hit("ip", "203.0.113.9", "100/15m") for i in range(400)))
    assert sum(r.allowed for r in results) == 100
    assert sorted(r.remaining for r in results if r.allowed) == list(range(100))
    refused = [r for r in results if not r.allowed]
    assert all(r.remaining == 0 and 0 < r.retry_after <= 900 for r in refused)
    for c in clients:
        await c.aclose()


def test_the_window_slides_one_hit_at_a_time(quota, clock):
    start = clock.now
    for i in range(5):  # hits at t = 0, 10, 20, 30, 40
        result = quota.hit("user_ai", "bob", "5/1m")
        assert (result.allowed, result.remaining) == (True, 4 - i)
        assert result.reset_seconds == 60 - 10 * i  # the first hit leaves at t = 60
        clock.advance(10)
    refused = quota.hit("user_ai", "bob", "5/1m")  # t = 50
    assert (refused.allowed, refused.remaining, refused.retry_after, refused.reset_seconds) == (False, 0, 10.0, 10.0)
    clock.advance(9.999)
    assert not quota.hit("user_ai", "bob", "5/1m").allowed
    clock.advance(0.001)  # t = 60: the hit from t = 0 has left, exactly one is free
    assert quota.hit("user_ai", "bob", "5/1m").allowed
    assert not quota.hit("user_ai", "bob", "5/1m").allowed
    assert clock.now - start == 60


def test_refused_requests_cost_nothing(quota, clock):
    for _ in range(3):
        quota.hit("ip", "198.51.100.7", "3/1m")
    for _ in range(50):
        clock.advance(1)
        assert not quota.hit("ip", "198.51.100.7", "3/1m").allowed
    clock.advance(10)  # t = 60: all three have left, however often the client knocked
    assert all(quota.hit("ip", "198.51.100.7", "3/1m").allowed for _ in range(3))


def test_scopes_and_subjects_count_apart(quota):
    assert quota.hit("user_ai", "carol", "1/1h").allowed
    assert not quota.hit("user_ai", "carol", "1/1h").allowed
    assert quota.hit("user_pronunciation", "carol", "1/1h").allowed
    assert quota.hit("user_ai", "dave", "1/1h").allowed


def test_a_lowered_limit_waits_for_enough_hits_to_leave(quota, clock):
    for _ in range(5):
        quota.hit("ip", "x", "5/1m")
        clock.advance(1)
    refused = quota.hit("ip", "x", "3/1m")  # t = 5, five hits logged, three allowed
    assert (refused.allowed, refused.retry_after) == (False, 57.0)  # the hit from t = 2


def test_headers_from_a_real_hit(quota):
    allowed = quota.hit("ip", "h", "2/15m")
    assert rate_limit_headers(allowed) == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "1",
        "RateLimit-Reset": "900",
        "RateLimit-Policy": "2;w=900",
    }
    quota.hit("ip", "h", "2/15m")
    headers = rate_limit_headers(quota.hit("ip", "h", "2/15m"))
    assert headers["Retry-After"] == "900" and headers["RateLimit-Remaining"] == "0"


def test_on_redis_time_the_log_expires_with_the_window(client):
    quota = ClientQuota(client)  # no injected clock: Redis TIME, as in production
    results = [quota.hit("ip", "real", "3/1s") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert 0 < results[-1].retry_after <= 1.0
    assert 0 < client.pttl(keys.quota("ip", "real")) <= 1000
    time.sleep(results[-1].retry_after + 0.01)
    assert quota.hit("ip", "real", "3/1s").allowed


def test_a_request_counts_against_all_its_quotas_or_none(quota):
    ai = [("ip", "203.0.113.9", "5/15m"), ("user_ai", "erin", "2/1h")]
    first, second = quota.hit_all(ai), quota.hit_all(ai)
    assert all(r.allowed for r in first + second)
    assert [r.remaining for r in second] == [3, 0]
    address, user = quota.hit_all(ai)  # the user's quota is spent: refused, and...
    assert (address.allowed, user.allowed) == (True, False)
    assert address.retry_after == 0 and user.retry_after == 3600
    assert address.remaining == 3  # ...the address's quota was not charged for it
    assert quota.hit("ip", "203.0.113.9", "5/15m").remaining == 2


async def test_async_hit_all(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    quota = AsyncClientQuota(client)
    results = await quota.hit_all([("ip", "a", "1/1m"), ("user_ai", "u", "1/1m")])
    assert [r.allowed for r in results] == [True, True]
    assert [r.allowed for r in await quota.hit_all([("ip", "a", "1/1m"), ("user_ai", "u", "1/1m")])] == [False, False]
    await client.aclose()
