"""GET /api/jobs: opaque cursors, filters by type and status, summaries unless include=result."""

from __future__ import annotations

import time

from tests.support.api import auth
from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message


async def page_through(api, limit: int, **params) -> tuple[list[dict], int]:
    seen, pages, cursor = [], 0, None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/api/jobs", params=query, headers=auth("pager"))
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        assert len(body["jobs"]) <= limit
        seen.extend(body["jobs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 50, "the cursor does not advance"


def stored_job(store: JobStore, owner: str, created_at: float) -> str:
    job = Job(
        job_id=new_job_id(),
        type=JobType.TTS,
        status=JobStatus.QUEUED,
        owner=owner,
        params={"text": "x"},
        created_at=created_at,
        updated_at=created_at,
    )
    store.create(
        NewJob(job=job, message=task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id))
    )
    return job.job_id


async def test_paging_through_25_jobs_by_4_shows_each_once(api):
    store = JobStore(api.redis)
    ids = []
    for i in range(20):
        response = await api.post("/api/ai/generate-flashcards", json={"content": f"text {i}"}, headers=auth("pager"))
        assert response.status_code == 202
        ids.append(response.json()["job_id"])
    same_instant = time.time() - 3600  # five jobs created in the same instant: ties broken by id
    ids += [stored_job(store, "pager", same_instant) for _ in range(5)]
    await api.post("/api/ai/generate-flashcards", json={"content": "not yours"}, headers=auth("someone-else"))
    for job_id in ids[:6]:  # some finish, with results
        claim = store.claim(job_id, 5)
        store.succeed(job_id, claim.run_token, {"cards": [{"front": "Q", "back": "A"}], "count": 1})

    jobs, pages = await page_through(api, 4)
    assert sorted(j["job_id"] for j in jobs) == sorted(ids)  # each exactly once
    assert len(jobs) == len({j["job_id"] for j in jobs}) == 25 and pages == 7
    created = [j["created_at"] for j in jobs]
    assert created == sorted(created, reverse=True)  # newest first
    assert {j["job_id"] for j in jobs[-5:]} == set(ids[20:])  # the oldest, tied among themselves
    assert all("result" not in j and "progress" not in j for j in jobs)  # summaries

    full, _ = await page_through(api, 10, include="result", status="succeeded")
    assert sorted(j["job_id"] for j in full) == sorted(ids[:6])
    assert all(j["result"]["cards"] == [{"front": "Q", "back": "A"}] for j in full)

    tts, _ = await page_through(api, 2, type="tts")
    assert sorted(j["job_id"] for j in tts) == sorted(ids[20:])
    queued_ai, _ = await page_through(api, 3, type=["flashcards", "lesson"], status="queued")
    assert sorted(j["job_id"] for j in queued_ai) == sorted(ids[6:20])


async def test_a_bad_cursor_is_422(api):
    for cursor in ("not-a-cursor", "eyJ4Ijox", "WyJsZXNzb25zIiwxLjAsImFiYyJd"):  # the last: another list's
        response = await api.get("/api/jobs", params={"cursor": cursor}, headers=auth())
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_cursor", cursor
