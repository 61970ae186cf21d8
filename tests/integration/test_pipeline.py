"""Jobs through real Celery worker processes on a real Redis, providers in the sandbox."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from devstack.processes import wait_until
from tests.samples import pdf_with_text
from tests.support.jobs import finished, submit
from unilingo.jobs import JobStatus, JobStore, JobType


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield JobStore(client)
    client.close()


def test_pdf_and_flashcards_complete(store, start_worker, sandbox_reset):
    start_worker()
    pdf = submit(store, JobType.PDF, upload=pdf_with_text(["Der Hund schläft.", "Die Katze spielt."]))
    cards = submit(store, JobType.FLASHCARDS, {"content": "Photosynthesis turns light into sugar. " * 20, "count": 5})
    broken = submit(store, JobType.PDF, upload=b"%PDF-1.4 this is not really a pdf")
    jobs = wait_until(lambda: finished(store, [pdf, cards, broken]), timeout=60)
    by_id = {j.job_id: j for j in jobs}
    assert by_id[pdf].status is JobStatus.SUCCEEDED
    assert "Hund" in by_id[pdf].result["text"] and by_id[pdf].result["pages"] == 2
    assert by_id[cards].status is JobStatus.SUCCEEDED, by_id[cards].error
    assert len(by_id[cards].result["cards"]) == 5
    assert all(c["front"] and c["back"] for c in by_id[cards].result["cards"])
    assert by_id[broken].status is JobStatus.FAILED and by_id[broken].error.code in ("pdf_corrupt", "pdf_no_text")
    assert by_id[broken].attempts == 1  # a permanent error is not retried


def test_sigkilled_worker_loses_no_job_and_each_result_lands_once(store, start_worker, sandbox_reset, redis_url):
    # Slow provider calls so that the kill lands mid-job.
    import httpx

    httpx.post(
        f"{sandbox_reset.url}/_sandbox/faults",
        json={"provider": "openai", "mode": "slow", "delay_s": 2.5, "duration_s": 6},
    )
    doomed = start_worker(worker_concurrency=2)
    ids = [
        submit(store, JobType.FLASHCARDS, {"content": f"Topic number {i}: the water cycle.", "count": 2})
        for i in range(4)
    ]
    wait_until(lambda: sum(store.get(j).status is JobStatus.RUNNING for j in ids) >= 2, timeout=20)
    doomed.kill()  # SIGKILL the whole worker: main process and pool children
    start_worker(worker_concurrency=2)
    jobs = wait_until(lambda: finished(store, ids), timeout=90)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 4, [j.error for j in jobs]
    assert max(j.attempts for j in jobs) == 2  # the interrupted ones ran again, once
    assert all(len(j.result["cards"]) == 2 for j in jobs)


def test_a_job_still_running_when_the_drain_time_is_up_is_handed_back_at_once(store, start_worker, sandbox_reset):
    import httpx

    # A provider call far longer than the drain time, and a job lease far longer than the test:
    # only an explicit hand-back can get the job running elsewhere in time.
    httpx.post(
        f"{sandbox_reset.url}/_sandbox/faults",
        json={"provider": "openai", "mode": "slow", "delay_s": 45, "duration_s": 8},
    )
    leaving = start_worker(worker_concurrency=1, worker_queues="ai", worker_drain_seconds=2, job_lease_seconds=120)
    job_id = submit(store, JobType.FLASHCARDS, {"content": "The Rhine flows into the North Sea.", "count": 2})
    wait_until(lambda: store.get(job_id).status is JobStatus.RUNNING, timeout=20)
    time.sleep(0.5)  # into the provider call
    leaving.process.send_signal(signal.SIGTERM)  # warm shutdown: the drain clock starts
    # Within the slow call's 45 s, however busy the machine (the drain itself is 2 s).
    handed_back = wait_until(lambda: (j := store.get(job_id)).status is JobStatus.QUEUED and j, timeout=40)
    assert handed_back.attempts == 0  # the worker's leaving is not the job's failure
    assert leaving.process.wait(timeout=30) == 0, leaving.log()[-3000:]
    assert "handed back" in leaving.log()
    start_worker(worker_concurrency=1, worker_queues="ai")
    # A second call still inside the fault's 8 s is slow too: at most 45 s more.
    (job,) = wait_until(lambda: finished(store, [job_id]), timeout=90)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1, job.error
    assert len(job.result["cards"]) == 2


def test_queued_jobs_survive_a_redis_restart(store, redis_server, start_worker, sandbox_reset):
    ids = [submit(store, JobType.PDF, upload=pdf_with_text([f"page {i}"])) for i in range(5)]
    redis_server.process.kill()  # no graceful save: AOF with fsync always must suffice
    redis_server.process.wait()
    redis_server.start()
    store.client.connection_pool.disconnect()
    assert all(store.get(j).status is JobStatus.QUEUED for j in ids)
    start_worker()
    jobs = wait_until(lambda: finished(store, ids), timeout=60)
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)


def test_a_lesson_resumes_after_its_last_paid_part(store, start_worker, sandbox_reset):
    """A lesson deferred or retried after its outline does not pay for the outline again."""
    import httpx
    import orjson

    from unilingo import keys

    job_id = submit(store, JobType.LESSON, {"topic": "Am Bahnhof", "level": "beginner", "language": "de"})
    outline = {"title": "Fahrkarten kaufen", "objectives": ["eine Fahrkarte kaufen"], "sections": ["Dialog"]}
    # What an earlier run left behind when it was deferred after its first call.
    store.client.hset(
        keys.job(job_id),
        "progress",
        orjson.dumps({"step": "outline", "steps_done": 1, "steps": 3, "parts": {"outline": outline}}),
    )
    start_worker(worker_queues="ai")
    job = wait_until(lambda: finished(store, [job_id]), timeout=60)[0]
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.result["title"] == "Fahrkarten kaufen"  # the checkpointed outline, not a new one
    assert job.progress["steps_done"] == 3
    assert httpx.get(f"{sandbox_reset.url}/_sandbox/stats").json()["openai"]["requests"] == 2
