"""The response cache: a repeated request is answered with no provider call and no permit.

Jobs run through the real runner (``workers.runner.run``: claim, cache, handler, persist,
finish) in this process, on real Redis, against the sandbox subprocess, whose statistics
show what reached each provider.
"""

from __future__ import annotations

import time

import pytest
import redis

from sandbox.images import png_with_text
from tests.samples import speech_like, wav_bytes
from tests.support.jobs import submit
from tests.support.providers import configure, reset_process_caches
from unilingo import cache
from unilingo.jobs import JobStatus, JobStore, JobType
from unilingo.limiter import Limiter
from workers import runner
from workers.tasks import HANDLERS

CONTENT = (
    "Photosynthesis turns light into chemical energy. Chlorophyll absorbs red and blue light. "
    "The Calvin cycle fixes carbon dioxide into sugar. Oxygen is released as a by-product."
)


@pytest.fixture
def env(sandbox_reset, redis_url, monkeypatch):
    handle = configure(monkeypatch, sandbox_reset, redis_url)
    handle.http.post("/_sandbox/reset")  # fresh provider quotas too
    client = redis.Redis.from_url(redis_url)
    yield handle, client
    client.close()
    monkeypatch.undo()
    reset_process_caches()


def run_job(client, job_type: JobType, params: dict, upload: bytes | None = None, owner: str = "alice"):
    job_id = submit(JobStore(client), job_type, params, upload, owner)
    outcome = runner.run(job_id, HANDLERS[job_type])
    return outcome, JobStore(client).get(job_id)


def test_repeated_flashcards_are_served_from_the_cache(env):
    sandbox, client = env
    outcome, first = run_job(client, JobType.FLASHCARDS, {"content": CONTENT, "count": 3, "subject": "Biology"})
    assert outcome == "succeeded" and not first.cache_hit
    calls = sandbox.requests("openai")
    permits = Limiter(client).status("openai").requests_used
    assert calls >= 1 and permits == calls

    # The same request from another user, spaced and cased differently.
    messy = "  " + CONTENT.upper().replace(" ", "   \n ") + "\n"
    outcome, second = run_job(
        client, JobType.FLASHCARDS, {"content": messy, "count": 3, "subject": "biology "}, owner="bob"
    )
    assert outcome == "succeeded" and second.status is JobStatus.SUCCEEDED
    assert second.cache_hit and second.public()["cache_hit"] is True
    assert second.result["cards"] == first.result["cards"]
    assert "usage" not in second.result  # a hit costs nothing
    assert sandbox.requests("openai") == calls  # no provider call...
    assert Limiter(client).status("openai").requests_used == permits  # ...and no permit

    # Different options are a different request.
    outcome, third = run_job(client, JobType.FLASHCARDS, {"content": CONTENT, "count": 2, "subject": "Biology"})
    assert outcome == "succeeded" and not third.cache_hit
    assert sandbox.requests("openai") > calls


def test_repeated_tts_reuses_the_stored_audio(env):
    sandbox, client = env
    _, first = run_job(client, JobType.TTS, {"text": "Guten Morgen", "language": "de"})
    before = sandbox.stats()
    _, second = run_job(client, JobType.TTS, {"text": "guten   morgen", "language": "de"}, owner="bob")
    after = sandbox.stats()
    assert second.cache_hit and second.result["audio_url"] == first.result["audio_url"]
    assert after["aws-polly"]["requests"] == before["aws-polly"]["requests"] == 1
    assert after["storage"]["requests"] == before["storage"]["requests"]


def test_uploads_are_part_of_the_key(env):
    sandbox, client = env
    params = {"reference_text": "hello world", "language": "en-US"}
    _, first = run_job(client, JobType.PRONUNCIATION, params, wav_bytes(speech_like(0.9)))
    _, same = run_job(client, JobType.PRONUNCIATION, params, wav_bytes(speech_like(0.9)))
    _, other = run_job(client, JobType.PRONUNCIATION, params, wav_bytes(speech_like(1.5)))
    assert first.status is JobStatus.SUCCEEDED, first.error
    assert same.cache_hit and not other.cache_hit
    assert sandbox.requests("azure-speech") == 2


def test_failures_are_not_cached_and_entries_expire(env, monkeypatch):
    sandbox, client = env
    monkeypatch.setenv("CACHE_TTL_SECONDS", "1")
    reset_process_caches()
    blank = png_with_text(200, 200, None)  # the provider finds no text: a failure, after paid calls
    _, failed = run_job(client, JobType.OCR, {}, blank)
    assert failed.status is JobStatus.FAILED and failed.error.code == "no_text"
    paid_once = sandbox.requests("azure-vision")
    _, again = run_job(client, JobType.OCR, {}, blank)
    # Paid again: a new analysis and its polls (how many polls depends on how long Tesseract reads).
    assert not again.cache_hit and sandbox.requests("azure-vision") >= paid_once + 2 and paid_once >= 2

    _, first = run_job(client, JobType.TTS, {"text": "short lived"})
    _, hit = run_job(client, JobType.TTS, {"text": "short lived"})
    time.sleep(1.2)
    _, miss = run_job(client, JobType.TTS, {"text": "short lived"})
    assert hit.cache_hit and not miss.cache_hit
    assert sandbox.requests("aws-polly") == 2


def test_cache_keys_normalise_text_and_option_order():
    from unilingo.jobs import Job

    def job(params):
        return Job(
            job_id="x",
            type=JobType.LESSON,
            status=JobStatus.QUEUED,
            owner="a",
            params=params,
            created_at=0,
            updated_at=0,
        )

    a = cache.digest(job({"topic": "Past  tense", "level": "B1", "webhook_url": "https://a"}), None)
    b = cache.digest(job({"level": "b1", "topic": " past tense\n"}), None)
    c = cache.digest(job({"level": "b2", "topic": "past tense"}), None)
    assert a == b != c
