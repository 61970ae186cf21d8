"""Saved content: what jobs made, read back from PostgreSQL after the job records are gone.

Real API, real worker, real PostgreSQL, the sandbox's OpenAI, Polly and S3 (moto). A phone's
view: the job's result links to the saved item; the link still answers once the job has
expired; another user gets 404; lists page by cursor; audio comes with a URL on the public
storage address, naming no user.
"""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
import redis

from devstack.processes import wait_until
from tests.support.api import auth
from unilingo import keys, persistence
from unilingo.jobs import Job, JobStatus, JobStore, JobType


def finished(store: JobStore, job_ids: list[str]):
    jobs = [store.get(job_id) for job_id in job_ids]
    return jobs if all(job is not None and job.status.terminal for job in jobs) else None


async def test_saved_lessons_sets_and_audio_outlive_their_jobs(
    api_factory,
    start_worker,
    sandbox_reset,
    redis_url,
    database_url,
):
    # "localhost" rather than the workers' 127.0.0.1: the address a phone would be given.
    public_storage = f"http://localhost:{sandbox_reset.aws_port}"
    api = await api_factory(database_url=database_url, storage_public_url=public_storage)
    start_worker(worker_queues="ai,tts", database_url=database_url, storage_public_url=public_storage)
    user = f"phone-{uuid.uuid4().hex[:8]}"
    me = auth(user)
    submitted = {
        "lesson": await api.post("/api/ai/generate-lesson", json={"topic": "Am Bahnhof", "language": "de"}, headers=me),
        "flashcards": await api.post(
            "/api/ai/generate-flashcards", json={"content": "Der Zug fährt ab.", "count": 2}, headers=me
        ),
        "tts": await api.post("/api/audio/generate", json={"text": "Guten Morgen", "language": "de"}, headers=me),
    }
    ids = {name: response.json()["job_id"] for name, response in submitted.items()}
    store = JobStore(redis.Redis.from_url(redis_url))
    jobs = wait_until(lambda: finished(store, list(ids.values())), timeout=90)
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs), [job.error for job in jobs]

    bodies = {name: (await api.get(f"/api/jobs/{job_id}", headers=me)).json() for name, job_id in ids.items()}
    links = {name: body["result"]["saved"] for name, body in bodies.items()}
    assert links["lesson"] == {"kind": "lesson", "id": ids["lesson"], "url": f"/api/lessons/{ids['lesson']}"}
    assert links["flashcards"]["url"] == f"/api/flashcard-sets/{ids['flashcards']}"
    assert links["tts"]["url"] == f"/api/audio-lessons/{ids['tts']}"
    # A result names no user and no storage layout; its media URL is on the public address.
    tts = bodies["tts"]["result"]
    assert user not in orjson.dumps(bodies).decode()
    assert "bucket" not in tts and "key" not in tts and tts["audio_url"].startswith(public_storage + "/")
    fetched = httpx.get(tts["audio_url"], timeout=10)
    assert fetched.status_code == 200 and len(fetched.content) == tts["bytes"] > 0

    # The job records expire (here: are deleted); what they made stays readable.
    for job_id in ids.values():
        store.client.delete(keys.job(job_id))
        assert (await api.get(f"/api/jobs/{job_id}", headers=me)).status_code == 404
    lesson = (await api.get(links["lesson"]["url"], headers=me)).json()
    assert lesson["id"] == ids["lesson"] and lesson["title"] and lesson["topic"] == "Am Bahnhof"
    assert lesson["vocabulary"] and all(item["term"] for item in lesson["vocabulary"])
    assert lesson["vocabulary"] == bodies["lesson"]["result"]["vocabulary"]
    cards = (await api.get(links["flashcards"]["url"], headers=me)).json()
    assert cards["card_count"] == 2 and cards["cards"] == bodies["flashcards"]["result"]["cards"]
    audio = (await api.get(links["tts"]["url"], headers=me)).json()
    assert audio["audio_url"].startswith(public_storage + "/") and audio["expires_at"] > time.time()
    assert user not in audio["audio_url"]
    assert httpx.get(audio["audio_url"], timeout=10).status_code == 200
    listed = (await api.get("/api/lessons", headers=me)).json()
    assert [item["id"] for item in listed["lessons"]] == [ids["lesson"]] and listed["next_cursor"] is None

    # Invisible to anyone else.
    other = auth("someone-else")
    for link in links.values():
        response = await api.get(link["url"], headers=other)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    for path, name in (
        ("/api/lessons", "lessons"),
        ("/api/flashcard-sets", "flashcard_sets"),
        ("/api/audio-lessons", "audio_lessons"),
    ):
        assert (await api.get(path, headers=other)).json() == {name: [], "next_cursor": None}


async def test_saved_lists_page_by_cursor_each_item_once(api_factory, database_url):
    api = await api_factory(database_url=database_url)
    now = time.time()
    made = []
    with persistence.connect(database_url) as conn:
        persistence.migrate(conn)
        for i in range(11):
            job = Job(
                job_id=uuid.uuid4().hex,
                type=JobType.FLASHCARDS,
                status=JobStatus.RUNNING,
                owner="pager",
                params={"subject": f"set {i}"},
                created_at=now,
                updated_at=now,
            )
            persistence.write(conn, job, {"cards": [{"front": f"Q{i}", "back": f"A{i}"}]}, {})
            made.append(job.job_id)
        # Some rows in the same microsecond: ties broken by id.
        conn.execute("UPDATE flashcard_sets SET created_at = '2026-01-01T00:00:00Z' WHERE job_id = ANY(%s)", [made[:4]])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await api.get("/api/flashcard-sets", params=params, headers=auth("pager"))).json()
        seen += [item["id"] for item in body["flashcard_sets"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 11 and pages == 4
    assert set(seen[-4:]) == set(made[:4])  # the oldest come last
    bad = await api.get("/api/flashcard-sets", params={"cursor": "bm9wZQ"}, headers=auth("pager"))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


async def test_without_a_database_saved_content_is_501(api):
    response = await api.get("/api/lessons", headers=auth())
    assert response.status_code == 501 and response.json()["error"]["code"] == "not_implemented"
