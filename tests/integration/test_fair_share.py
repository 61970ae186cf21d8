"""Fair share: users waiting on one queue take turns, in Redis, whoever queued first."""

from __future__ import annotations

import redis

from tests.support.api import PDF, auth
from unilingo import keys
from unilingo.jobs import JobStore


def next_in_line(client: redis.Redis, queue: str) -> list[str]:
    """The queue's job ids in the order consumers will take them (kombu pops from the right)."""
    import orjson

    return [orjson.loads(m)["headers"]["id"] for m in reversed(client.lrange(queue, 0, -1))]


async def submit(client, user: str, tier: str | None = None, pdf: bytes = PDF, priority: int | None = None) -> str:
    headers = auth(user, tier=tier)
    if priority is not None:
        headers["Job-Priority"] = str(priority)
    response = await client.post("/api/process-pdf", files={"file": ("a.pdf", pdf)}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


async def test_a_light_user_waits_a_few_jobs_behind_a_heavy_backlog(api_factory):
    client = await api_factory()
    heavy = [await submit(client, "heavy") for _ in range(30)]
    store = JobStore(client.redis)
    for job_id in next_in_line(client.redis, "pdf")[:5]:  # five of the heavy backlog start
        assert store.claim(job_id, 30).claimed
        client.redis.rpop("pdf")
    light = [await submit(client, f"light-{i}") for i in range(5)]
    order = next_in_line(client.redis, "pdf")
    assert len(order) == 30 and set(order) == set(heavy[5:]) | set(light)  # KEDA sees every waiting job
    positions = sorted(order.index(job_id) for job_id in light)
    assert positions[-1] < 10, positions  # all five within the next ten, not behind the other 25
    # The heavy user's own jobs keep their order.
    assert [j for j in order if j in heavy] == heavy[5:]


async def test_a_premium_job_starts_within_the_next_few(api_factory):
    client = await api_factory()
    for i in range(30):
        await submit(client, f"free-{i % 3}")
    premium = await submit(client, "vip", tier="premium")
    assert next_in_line(client.redis, "pdf").index(premium) < 5


async def test_a_lowered_priority_job_yields_to_other_users_jobs(api_factory):
    client = await api_factory()
    background = await submit(client, "ann", priority=0)  # free tier: 5 by default
    others = [await submit(client, f"user-{i}") for i in range(5)]
    mine = await submit(client, "ann")  # her next job at her usual priority does not wait behind it
    order = next_in_line(client.redis, "pdf")
    assert order.index(background) == len(order) - 1, order
    assert set(order[:-1]) == {*others, mine}


async def test_a_lowered_job_is_not_starved(api_factory):
    """The queue's clock catches up with it: jobs queued long after it go behind it."""
    client = await api_factory()
    store = JobStore(client.redis)
    for _ in range(3):
        await submit(client, "bob")
    background = await submit(client, "ann", priority=4)  # one level down: ten turns later
    went_first = 0
    while (head := next_in_line(client.redis, "pdf")[0]) != background:
        assert store.claim(head, 30).claimed
        client.redis.rpop("pdf")
        await submit(client, "bob")
        went_first += 1
        assert went_first < 20, "the lowered job never reached the head of the queue"
    assert went_first >= 5  # bob's jobs went first while they were queued before its turn


async def test_a_client_cannot_raise_its_priority_above_its_tier(api_factory):
    client = await api_factory()

    async def post(user: str, priority: str, tier: str | None = None):
        headers = {**auth(user, tier=tier), "Job-Priority": priority}
        return await client.post("/api/process-pdf", files={"file": ("a.pdf", PDF)}, headers=headers)

    refused = await post("ann", "6")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "priority_above_tier"
    assert "free tier's priority 5" in refused.json()["error"]["message"]
    assert (await post("vip", "7", tier="premium")).status_code == 202  # premium's own priority
    assert (await post("vip", "8", tier="premium")).status_code == 403
    for bad in ("high", "-1", "10", "1.5"):
        answer = await post("ann", bad)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_priority", bad
    assert client.redis.llen("pdf") == 1  # nothing refused was queued


async def test_first_come_first_served_when_fair_share_is_off(api_factory):
    client = await api_factory(fair_share=False)
    heavy = [await submit(client, "heavy") for _ in range(10)]
    light = await submit(client, "light")
    assert next_in_line(client.redis, "pdf") == [*heavy, light]


async def test_a_deferred_job_goes_back_with_its_turn(api_factory):
    client = await api_factory()
    store = JobStore(client.redis)
    first = await submit(client, "ann")
    queued = [await submit(client, "ann") for _ in range(5)]
    assert store.claim(first, 30).claimed
    client.redis.rpop("pdf")
    import time

    assert store.defer(first, store.get(first).run_token, "openai", due=time.time() - 1, reason="rate")
    assert store.promote_due() == 1
    assert next_in_line(client.redis, "pdf") == [first, *queued]  # it had waited its turn already
    assert client.redis.zcard(keys.fair_index("pdf")) == 6


async def test_with_real_workers_light_users_finish_long_before_the_backlog(api_factory, redis_url, start_worker):
    from devstack.processes import wait_until
    from tests.samples import pdf_with_text

    client = await api_factory()
    pdf = pdf_with_text(["Der Hund bellt."])
    heavy = [await submit(client, "heavy", pdf=pdf) for _ in range(80)]
    light = [await submit(client, f"light-{i}", pdf=pdf) for i in range(5)]
    start_worker(worker_queues="pdf")
    store = JobStore(client.redis)
    wait_until(
        lambda: all(store.get(j).status.terminal for j in heavy + light),
        timeout=240,
        interval=0.5,
        message="the backlog drained",
    )
    jobs = {j: store.get(j) for j in heavy + light}
    assert all(job.status.value == "succeeded" for job in jobs.values())
    # The order the workers took them in (the waits in seconds are the bench's: bench/fairness_bench.py).
    started = sorted(jobs, key=lambda j: jobs[j].started_at)
    ranks = sorted(started.index(j) for j in light)
    assert ranks[-1] < 85 // 4, ranks  # all five among the first quarter to start, not after 80 jobs
    # And the five are done within a quarter of the time the backlog takes to drain, both
    # counted from the moment the worker took its first job, in this one run.
    began = min(job.started_at for job in jobs.values())
    drained = max(job.finished_at for job in jobs.values()) - began
    light_done = max(jobs[j].finished_at for j in light) - began
    assert light_done <= drained / 4, (light_done, drained)


async def test_a_message_a_dying_consumer_took_is_queued_again(api_factory, redis_url, start_worker):
    """kombu pops a message, then records it as unacked: a consumer killed in between loses it.

    Housekeeping finds the job still queued, its message in no list, and queues it again.
    """
    import time as clock

    from tests.samples import pdf_with_text

    client = await api_factory()
    pdf = pdf_with_text(["Die Katze schläft."])
    ids = [await submit(client, "ann", pdf=pdf) for _ in range(3)]
    client.redis.rpop("pdf")  # the consumer that took the next message died with it
    store = JobStore(client.redis)
    assert store.rescue_lost("pdf", grace_seconds=60) == 0  # within the grace: a consumer may be claiming it
    assert store.rescue_lost("pdf", grace_seconds=60, now=clock.time() + 61) == 1
    assert store.rescue_lost("pdf", grace_seconds=60, now=clock.time() + 61) == 0  # once, not again
    assert sorted(next_in_line(client.redis, "pdf")) == sorted(ids)
    start_worker(worker_queues="pdf")
    from devstack.processes import wait_until

    jobs = wait_until(
        lambda: (js := [store.get(j) for j in ids]) and all(j.status.terminal for j in js) and js,
        timeout=60,
        message="the three jobs ran",
    )
    assert [job.status.value for job in jobs] == ["succeeded"] * 3 and all(job.attempts == 1 for job in jobs)
