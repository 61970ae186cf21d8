"""One atomic completion: a worker that dies between the provider's answer and the job's
completion still leads to exactly one webhook."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from devstack.processes import wait_until
from tests.support.api import DripReceiver, Receiver
from tests.support.jobs import finished
from tests.support.sandbox import fault, sandbox_stats
from unilingo import keys
from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message


@pytest.fixture
def client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.execute_command("CLIENT", "UNPAUSE")
    client.close()


def test_a_worker_killed_between_the_answer_and_the_completion_still_sends_exactly_one_webhook(
    client, start_worker, sandbox_reset
):
    store = JobStore(client)
    with Receiver() as receiver:
        now = time.time()
        job = Job(
            job_id=new_job_id(),
            type=JobType.FLASHCARDS,
            status=JobStatus.QUEUED,
            owner="alice",
            params={"content": "Bees dance to show where the flowers are.", "count": 1},
            webhook_url=receiver.url,
            created_at=now,
            updated_at=now,
        )
        store.create(
            NewJob(
                job=job, message=task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id)
            )
        )
        fault(sandbox_reset, provider="openai", mode="slow", delay_s=1.5, duration_s=60)
        doomed = start_worker(
            worker_concurrency=1, worker_queues="ai", webhook_allow_private="true", cache_enabled="false"
        )
        wait_until(lambda: sandbox_stats(sandbox_reset, "openai")["in_flight"] >= 1, timeout=30)
        # Redis takes no write while the provider answers: the worker holds the answer and
        # cannot complete the job. Then it dies.
        client.execute_command("CLIENT", "PAUSE", 20000, "WRITE")
        try:
            wait_until(
                lambda: (s := sandbox_stats(sandbox_reset, "openai"))["in_flight"] == 0 and s["requests"] >= 1,
                timeout=15,
            )
            time.sleep(0.3)  # the answer reaches the worker, which now waits on Redis
            doomed.kill()
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
        httpx.delete(f"{sandbox_reset.url}/_sandbox/faults")
        start_worker(worker_concurrency=1, worker_queues="ai", webhook_allow_private="true", cache_enabled="false")
        (done,) = wait_until(lambda: finished(store, [job.job_id]), timeout=60, interval=0.3)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.attempts == 2  # the killed run's answer was never written; the job ran again
        # Delivered and settled: with the job terminal, nothing can queue another delivery.
        wait_until(lambda: receiver.requests and client.zscore(keys.webhook_outbox(), job.job_id) is None, timeout=30)
        assert len(receiver.requests) == 1
        assert receiver.requests[0]["headers"]["Unilingo-Event"] == "job.succeeded"


def test_a_slow_webhook_receiver_does_not_stall_the_workers_housekeeping(client, start_worker, sandbox_reset):
    store = JobStore(client)
    receiver = DripReceiver(interval=0.5, drips=120)  # a minute for one answer
    try:
        before = set(client.zrange(keys.workers_alive(), 0, -1))
        start_worker(
            worker_concurrency=1, worker_queues="pdf", webhook_allow_private="true", webhook_timeout_seconds=60
        )
        (worker,) = set(client.zrange(keys.workers_alive(), 0, -1)) - before
        hooked = _job(store, JobType.PDF, webhook_url=receiver.url)
        store.succeed(hooked, store.claim(hooked, 30).run_token, {"text": "x", "pages": 1})
        wait_until(lambda: receiver.arrived == 1, timeout=30)

        # While the receiver drips, the worker still announces itself alive...
        announced = client.zscore(keys.workers_alive(), worker)
        wait_until(lambda: client.zscore(keys.workers_alive(), worker) > announced + 1, timeout=20)
        # ...and queues again a job whose backoff is over (on a queue no worker here consumes,
        # so its messages stay where the test can count them).
        waiting = _job(store, JobType.OCR)
        assert store.retry_later(waiting, store.claim(waiting, 30).run_token, time.time())
        queued = lambda: sum(waiting.encode() in m for m in client.lrange(keys.queue_list("ocr"), 0, -1))  # noqa: E731
        wait_until(lambda: queued() == 2, timeout=20)  # the first message and the promoted one
        assert store.get(waiting).status is JobStatus.QUEUED
        assert receiver.completed == 0  # the webhook is still being dripped to
    finally:
        receiver.close()


def _job(store: JobStore, job_type: JobType, webhook_url: str | None = None) -> str:
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        type=job_type,
        status=JobStatus.QUEUED,
        owner="alice",
        webhook_url=webhook_url,
        created_at=now,
        updated_at=now,
    )
    store.create(
        NewJob(job=job, message=task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id))
    )
    return job.job_id
