"""The job lifecycle scripts on a real Redis: the guarantees the pipeline rests on."""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from unilingo import keys
from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message


def make_job(store: JobStore, owner="alice", idem=None, job_type=JobType.PDF) -> str:
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        type=job_type,
        status=JobStatus.QUEUED,
        owner=owner,
        params={"n": 1},
        created_at=now,
        updated_at=now,
    )
    message = task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id)
    created, job_id = store.create(NewJob(job=job, message=message, upload=b"%PDF-1.4", idempotency_key=idem))
    assert created or idem
    return job_id


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield JobStore(client)
    client.close()


def test_create_records_and_enqueues_in_one_step(store):
    job_id = make_job(store)
    job = store.get(job_id)
    assert job.status is JobStatus.QUEUED and job.owner == "alice" and job.params == {"n": 1}
    queued = store.client.lrange(keys.queue_list("pdf"), 0, -1)
    assert len(queued) == 1
    message = orjson.loads(queued[0])
    assert message["headers"]["task"] == "unilingo.pdf" and message["headers"]["id"] == job_id
    assert store.upload(job_id) == b"%PDF-1.4"


def test_idempotency_key_returns_the_same_job(store):
    first = make_job(store, idem="k1")
    created, second = store.create(
        NewJob(job=store.get(first).model_copy(update={"job_id": new_job_id()}), message=b"{}", idempotency_key="k1")
    )
    assert not created and second == first
    assert store.client.llen("pdf") == 1


def test_only_the_current_lease_holder_finishes_a_job(store):
    job_id = make_job(store)
    first = store.claim(job_id, lease_seconds=2)
    assert first.claimed and first.attempts == 1
    assert store.claim(job_id, lease_seconds=2).outcome == "busy"  # a duplicate delivery
    # The holder stopped heartbeating (it died): the stalled check, 2.5 s later, takes the job back.
    assert store.requeue_stalled(now=time.time() + 2.5) == 1
    assert store.get(job_id).status is JobStatus.QUEUED
    assert store.client.llen("pdf") == 2  # the original message and the requeued one
    second = store.claim(job_id, lease_seconds=5)
    assert second.claimed and second.attempts == 2
    assert not store.succeed(job_id, first.run_token, {"from": "the dead worker"})
    assert store.succeed(job_id, second.run_token, {"from": "the live worker"})
    assert store.get(job_id).result == {"from": "the live worker"}
    assert store.claim(job_id, 5).outcome == "terminal"


def test_heartbeat_keeps_a_long_job_from_being_requeued(store):
    job_id = make_job(store)
    claim = store.claim(job_id, lease_seconds=0.3)
    for _ in range(4):
        time.sleep(0.15)
        renewed_at = time.time()
        assert store.heartbeat(job_id, claim.run_token, 0.3)
        # As the stalled-job check sees it within the renewed lease, however late this line runs.
        assert store.requeue_stalled(now=renewed_at + 0.29) == 0
    assert store.get(job_id).status is JobStatus.RUNNING


def test_deferral_keeps_the_attempt_and_promotes_when_due(store):
    job_id = make_job(store)
    store.client.delete("pdf")
    claim = store.claim(job_id, 5)
    assert store.defer(job_id, claim.run_token, "openai", due=time.time() + 0.2)
    job = store.get(job_id)
    assert job.status is JobStatus.QUEUED and job.attempts == 0
    assert store.promote_due() == 0
    time.sleep(0.25)
    assert store.promote_due() == 1
    assert store.client.llen("pdf") == 1


def test_retry_counts_the_attempt(store):
    job_id = make_job(store)
    claim = store.claim(job_id, 5)
    assert store.retry_later(job_id, claim.run_token, due=time.time())
    assert store.get(job_id).attempts == 1
    assert store.promote_due() == 1


def test_cancel_before_start_is_honoured_and_terminal_refuses(store):
    job_id = make_job(store)
    assert store.cancel(job_id) == "cancelled"
    assert store.claim(job_id, 5).outcome == "terminal"
    assert store.cancel(job_id) == "terminal"
    assert store.cancel("nope") == "missing"


def test_cancel_while_running_refuses_the_late_result(store):
    job_id = make_job(store)
    claim = store.claim(job_id, 5)
    assert store.cancel(job_id) == "cancelled"
    assert not store.succeed(job_id, claim.run_token, {"late": True})
    assert store.get(job_id).status is JobStatus.CANCELLED


def _with_webhook(store: JobStore, url: str = "https://hooks.example.com/unilingo") -> str:
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        type=JobType.PDF,
        status=JobStatus.QUEUED,
        owner="alice",
        webhook_url=url,
        created_at=now,
        updated_at=now,
    )
    store.create(
        NewJob(job=job, message=task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id))
    )
    return job.job_id


def test_a_completion_writes_its_state_its_outcome_and_its_webhook_together(store):
    store.client.delete(keys.stats("counters"), keys.webhook_outbox())
    store.client.hset(keys.activity("alice"), "submitted", 2)
    done, broken = _with_webhook(store), _with_webhook(store)
    assert store.succeed(done, store.claim(done, 30).run_token, {"text": "hi", "pages": 1})
    assert store.fail(broken, store.claim(broken, 30).run_token, "pdf_corrupt", "unreadable")
    # Nothing else was called: the completion itself queued the webhooks and counted the outcomes.
    assert set(store.client.zrange(keys.webhook_outbox(), 0, -1)) == {done.encode(), broken.encode()}
    assert store.client.hget(keys.webhook(done), "url") == b"https://hooks.example.com/unilingo"
    counters = store.client.hgetall(keys.stats("counters"))
    assert float(counters[b"jobs:pdf:succeeded"]) == 1 and float(counters[b"jobs:pdf:failed"]) == 1
    assert store.client.hget(keys.activity("alice"), "failed") == b"1"


def test_a_refused_completion_reports_nothing(store):
    store.client.delete(keys.stats("counters"), keys.webhook_outbox())
    job_id = _with_webhook(store)
    stale = store.claim(job_id, lease_seconds=0.1)
    time.sleep(0.2)
    store.requeue_stalled()  # its worker was given up for dead
    current = store.claim(job_id, lease_seconds=30)
    assert not store.update_progress(job_id, stale.run_token, {"from": "the stale run"})
    assert not store.fail(job_id, stale.run_token, "provider_error", "late")
    assert not store.succeed(job_id, stale.run_token, {"late": True})
    assert store.get(job_id).progress is None and store.get(job_id).status is JobStatus.RUNNING
    assert store.client.zcard(keys.webhook_outbox()) == 0
    assert store.client.hgetall(keys.stats("counters")) == {}
    assert store.update_progress(job_id, current.run_token, {"pages_done": 1})
    assert store.get(job_id).progress == {"pages_done": 1}


def test_a_job_without_a_webhook_queues_none(store):
    store.client.delete(keys.webhook_outbox())
    job_id = make_job(store)
    assert store.succeed(job_id, store.claim(job_id, 30).run_token, {"text": "x", "pages": 1})
    assert store.client.zcard(keys.webhook_outbox()) == 0
