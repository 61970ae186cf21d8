"""The webhook outbox on a real Redis, delivering to a local HTTP server."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
import redis

from devstack.processes import wait_until
from tests.support.api import DripReceiver, Receiver
from unilingo import keys, webhooks
from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message
from unilingo.settings import Settings

SECRET = "webhook-test-secret"


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def settings(**overrides) -> Settings:
    return Settings(
        **{
            "webhook_secret": SECRET,
            "webhook_allow_private": True,
            "webhook_timeout_seconds": 2.0,
            "webhook_attempts": 3,
            **overrides,
        }
    )


def finished_job(client, url: str, status: str = "succeeded") -> str:
    store = JobStore(client)
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        type=JobType.PDF,
        status=JobStatus.QUEUED,
        owner="alice",
        params={},
        webhook_url=url,
        created_at=now,
        updated_at=now,
    )
    store.create(NewJob(job=job, message=task_message("unilingo.pdf", "pdf", [job.job_id], task_id=job.job_id)))
    claim = store.claim(job.job_id, 30)
    if status == "succeeded":
        store.succeed(job.job_id, claim.run_token, {"text": "hello", "pages": 1})
    else:
        store.fail(job.job_id, claim.run_token, "pdf_corrupt", "the PDF could not be read")
    return job.job_id


def test_delivery_is_signed_and_retried_after_a_500(client):
    with Receiver(statuses=[500, 200]) as receiver:
        job_id = finished_job(client, receiver.url)
        webhooks.enqueue(client, job_id, receiver.url)
        assert webhooks.pending(client) == 1

        assert webhooks.deliver_due(client, settings()) == 1  # answered 500
        assert len(receiver.requests) == 1
        due = client.zscore(keys.webhook_outbox(), job_id)
        assert due > time.time()  # rescheduled with backoff
        assert b"HTTP 500" in client.hget(keys.webhook(job_id), "last_error")
        assert webhooks.deliver_due(client, settings()) == 0  # not due yet

        assert webhooks.deliver_due(client, settings(), now=due + 0.01) == 1  # the retry: 200
        assert len(receiver.requests) == 2
        assert webhooks.pending(client) == 0 and not client.exists(keys.webhook(job_id))

    request = receiver.requests[-1]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert webhooks.verify(SECRET, headers["unilingo-signature"], request["body"], tolerance_s=60)
    assert not webhooks.verify("wrong-secret", headers["unilingo-signature"], request["body"])
    assert headers["unilingo-signature"].startswith(f"t={headers['unilingo-timestamp']},v1=")
    assert headers["unilingo-event"] == "job.succeeded"
    assert headers["content-type"] == "application/json"
    assert headers["unilingo-delivery"] == f"{job_id}.2"
    assert request["path"] == "/hooks/unilingo"
    body = orjson.loads(request["body"])
    assert body["job_id"] == job_id and body["type"] == "pdf" and body["status"] == "succeeded"
    assert body["result"] == {"text": "hello", "pages": 1} and "owner" not in body and "params" not in body


def test_a_failed_job_carries_its_error(client):
    with Receiver() as receiver:
        job_id = finished_job(client, receiver.url, status="failed")
        webhooks.enqueue(client, job_id, receiver.url)
        assert webhooks.deliver_due(client, settings()) == 1
    request = receiver.requests[0]
    body = orjson.loads(request["body"])
    assert body["status"] == "failed" and body["error"]["code"] == "pdf_corrupt"
    assert {k.lower(): v for k, v in request["headers"].items()}["unilingo-event"] == "job.failed"


def test_loopback_is_refused_unless_allowed(client):
    with Receiver() as receiver:
        job_id = finished_job(client, receiver.url)
        webhooks.enqueue(client, job_id, receiver.url)
        assert webhooks.deliver_due(client, settings(webhook_allow_private=False)) == 1
        assert receiver.requests == []  # never called
        assert b"webhook_target_refused" in client.hget(keys.webhook(job_id), "last_error")
        # the target is checked again at every attempt: allowed now, delivered
        due = client.zscore(keys.webhook_outbox(), job_id)
        assert webhooks.deliver_due(client, settings(webhook_allow_private=True), now=due + 0.01) == 1
        assert len(receiver.requests) == 1


def test_gives_up_after_the_last_attempt(client):
    with Receiver(statuses=[503, 503, 503]) as receiver:
        job_id = finished_job(client, receiver.url)
        webhooks.enqueue(client, job_id, receiver.url)
        now = time.time()
        for _ in range(3):
            assert webhooks.deliver_due(client, settings(webhook_attempts=3), now=now) == 1
            now += 10_000
        assert len(receiver.requests) == 3
        assert webhooks.pending(client) == 0
        dead = orjson.loads(client.lindex(keys.webhook_dead(), 0))
        assert dead["job_id"] == job_id and dead["attempts"] == 3 and "503" in dead["error"]


def test_concurrent_workers_never_send_the_same_attempt_twice(client, redis_url):
    with Receiver() as receiver:
        ids = [finished_job(client, receiver.url) for _ in range(10)]
        for job_id in ids:
            webhooks.enqueue(client, job_id, receiver.url)
        barrier = threading.Barrier(4)
        counts = []

        def worker():
            own = redis.Redis.from_url(redis_url)
            barrier.wait()
            counts.append(webhooks.deliver_due(own, settings(), limit=5))
            own.close()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while webhooks.deliver_due(client, settings()):
            pass
        delivered = sorted(orjson.loads(r["body"])["job_id"] for r in receiver.requests)
        assert delivered == sorted(ids)  # each exactly once
        assert webhooks.pending(client) == 0


def test_a_delivery_for_a_job_that_expired_is_dropped(client):
    with Receiver() as receiver:
        webhooks.enqueue(client, "0" * 32, receiver.url)
        assert webhooks.deliver_due(client, settings()) == 1
        assert receiver.requests == [] and webhooks.pending(client) == 0


def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_at_the_attempts_deadline(client):
    receiver = DripReceiver(interval=0.5, drips=120)  # a full answer would take a minute
    try:
        job_id = finished_job(client, receiver.url)
        sent = threading.Thread(target=webhooks.deliver_due, args=(client, settings(webhook_timeout_seconds=2.0)))
        sent.start()
        # The attempt is settled (as a failure to retry) while the receiver is still dripping.
        wait_until(lambda: client.hget(keys.webhook(job_id), "last_error"), timeout=30)
        assert receiver.arrived == 1 and receiver.completed == 0
        assert b"no complete answer within 2 s" in client.hget(keys.webhook(job_id), "last_error")
        sent.join(timeout=30)
    finally:
        receiver.close()


def test_deliveries_in_flight_are_bounded(client):
    client.delete(keys.webhook_outbox())
    receiver = DripReceiver(interval=0.2, drips=10)
    try:
        jobs = [finished_job(client, receiver.url) for _ in range(6)]
        assert webhooks.deliver_due(client, settings(webhook_concurrency=2, webhook_timeout_seconds=30)) == 2
        while webhooks.deliver_due(client, settings(webhook_concurrency=2, webhook_timeout_seconds=30)):
            pass
        assert receiver.arrived == len(jobs) and receiver.peak == 2
        assert webhooks.pending(client) == 0
    finally:
        receiver.close()
