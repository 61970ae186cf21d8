"""The six submit endpoints on a real Redis: validation, 202 + the Celery message, 501, idempotency."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.support.api import PDF, PNG, WAV, auth
from unilingo import keys
from unilingo.jobs import WORKLOADS, JobType, Workload


def queued(client, queue: str) -> list[dict]:
    return [orjson.loads(raw) for raw in client.redis.lrange(keys.queue_list(queue), 0, -1)]


def task_args(message: dict) -> list:
    return orjson.loads(base64.b64decode(message["body"]))[0]


def assert_accepted(response, queue: str, task: str, client) -> str:
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    assert body == {
        "job_id": job_id,
        "status": "queued",
        "status_url": f"/api/jobs/{job_id}",
        "events_url": f"/api/jobs/{job_id}/events",
    }
    assert response.headers["location"] == body["status_url"]
    assert "ratelimit-limit" in response.headers
    messages = queued(client, queue)
    assert len(messages) == 1, messages
    assert messages[0]["headers"]["task"] == task and messages[0]["headers"]["id"] == job_id
    assert task_args(messages[0]) == [job_id]
    assert messages[0]["properties"]["delivery_info"]["routing_key"] == queue
    return job_id


# --- the endpoints available now ----------------------------------------------------------


async def test_flashcards_accepted_and_enqueued(api):
    response = await api.post(
        "/api/ai/generate-flashcards",
        json={"content": "Le chat est noir.", "subject": "French", "count": 12, "language": "fr"},
        headers=auth(),
    )
    job_id = assert_accepted(response, "ai", "unilingo.flashcards", api)
    job = (await api.get(f"/api/jobs/{job_id}", headers=auth())).json()
    assert job["type"] == "flashcards" and job["status"] == "queued" and job["attempts"] == 0
    record = api.redis.hgetall(keys.job(job_id))
    assert orjson.loads(record[b"params"]) == {
        "content": "Le chat est noir.",
        "subject": "French",
        "count": 12,
        "language": "fr",
    }
    assert record[b"owner"] == b"alice"


async def test_lesson_accepted_and_enqueued(api):
    response = await api.post(
        "/api/ai/generate-lesson", json={"topic": "Ser vs estar", "level": "B1", "language": "es"}, headers=auth()
    )
    assert_accepted(response, "ai", "unilingo.lesson", api)


async def test_pdf_accepted_with_its_upload_stored(api):
    response = await api.post("/api/process-pdf", files={"file": ("notes.pdf", PDF, "application/pdf")}, headers=auth())
    job_id = assert_accepted(response, "pdf", "unilingo.pdf", api)
    assert api.redis.get(keys.job_input(job_id)) == PDF
    params = orjson.loads(api.redis.hget(keys.job(job_id), "params"))
    assert params["format"] == "pdf" and params["size"] == len(PDF) and params["filename"] == "notes.pdf"
    assert len(params["sha256"]) == 64


async def test_a_pdf_is_judged_by_its_bytes_not_its_name(api):
    # a PDF named .png with a wrong content type is still a PDF
    response = await api.post("/api/process-pdf", files={"file": ("photo.png", PDF, "image/png")}, headers=auth())
    assert response.status_code == 202


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,body,status,code",
    [
        ("/api/ai/generate-flashcards", {}, 422, "validation_error"),
        ("/api/ai/generate-flashcards", {"content": 42}, 422, "validation_error"),
        ("/api/ai/generate-flashcards", {"content": "x", "count": "ten"}, 422, "validation_error"),
        ("/api/ai/generate-flashcards", {"content": "   "}, 422, "validation_error"),
        ("/api/ai/generate-flashcards", {"content": "x", "colour": "red"}, 422, "validation_error"),
        ("/api/ai/generate-flashcards", {"content": "x" * 2_001}, 413, "text_too_long"),
        ("/api/ai/generate-lesson", {"level": "B1"}, 422, "validation_error"),
        ("/api/ai/generate-lesson", {"topic": ["a"]}, 422, "validation_error"),
        ("/api/ai/generate-lesson", {"topic": "t", "content": "y" * 2_001}, 413, "text_too_long"),
        ("/api/audio/generate", {}, 422, "validation_error"),
        ("/api/audio/generate", {"text": "hi", "voice": "no spaces allowed"}, 422, "validation_error"),
        ("/api/audio/generate", {"text": "z" * 501}, 413, "text_too_long"),
    ],
)
async def test_json_validation(api, path, body, status, code):
    response = await api.post(path, json=body, headers=auth())
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if status == 422:
        assert error["details"] and all({"field", "message", "type"} <= set(d) for d in error["details"])
    assert not any(api.redis.llen(q) for q in ("ai", "tts"))


async def test_malformed_json_and_wrong_content_type_are_4xx(api):
    response = await api.post(
        "/api/ai/generate-flashcards", content=b"{not json", headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
    response = await api.post(
        "/api/ai/generate-flashcards", content=b"content=x", headers={**auth(), "Content-Type": "text/plain"}
    )
    assert response.status_code == 422


async def test_an_oversized_json_body_is_refused_while_read(api):
    huge = b'{"content": "' + b"a" * 1_500_000 + b'"}'

    async def chunks():  # no Content-Length: the cap must hold while reading
        for i in range(0, len(huge), 64 * 1024):
            yield huge[i : i + 64 * 1024]

    response = await api.post(
        "/api/ai/generate-flashcards", content=chunks(), headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    response = await api.post(
        "/api/ai/generate-flashcards", content=huge, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413  # declared Content-Length: refused before reading


@pytest.mark.parametrize(
    "path,field,data,extra",
    [
        ("/api/process-pdf", "file", PDF, {}),
        ("/api/process-image", "image", PNG, {}),
        ("/api/pronunciation-assess", "audio", WAV, {"reference_text": "hello", "language": "en-US"}),
    ],
)
async def test_upload_validation(api, path, field, data, extra):
    h = auth()
    # wrong bytes
    wrong = PNG if field != "image" else PDF
    response = await api.post(path, files={field: ("x.bin", wrong, "application/octet-stream")}, data=extra, headers=h)
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_file_type"
    # oversized (limit 20,000 bytes in these tests): the file is refused
    response = await api.post(
        path, files={field: ("x.bin", data + b"\x00" * 20_001, "application/octet-stream")}, data=extra, headers=h
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
    # far past the limit: the body itself is refused, whatever it holds
    response = await api.post(
        path, files={field: ("x.bin", data + b"\x00" * 200_000, "application/octet-stream")}, data=extra, headers=h
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    # empty
    response = await api.post(path, files={field: ("x.bin", b"", "application/octet-stream")}, data=extra, headers=h)
    assert response.status_code == 422 and response.json()["error"]["code"] == "empty_file"
    # missing file
    response = await api.post(path, files={"other": ("x.bin", data, "application/octet-stream")}, data=extra, headers=h)
    assert response.status_code == 422
    assert any(d["field"] == field for d in response.json()["error"]["details"])
    # the file sent as a text field
    response = await api.post(path, data={**extra, field: "not a file"}, headers=h)
    assert response.status_code == 422
    # not multipart at all
    response = await api.post(path, json={field: "x"}, headers=h)
    assert response.status_code == 422
    for queue in ("pdf", "ocr", "speech"):
        assert api.redis.llen(queue) == 0


async def test_pronunciation_fields_are_validated(api):
    files = {"audio": ("a.wav", WAV, "audio/wav")}
    response = await api.post("/api/pronunciation-assess", files=files, data={"language": "en-US"}, headers=auth())
    assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == "reference_text"
    response = await api.post(
        "/api/pronunciation-assess", files=files, data={"reference_text": "hi", "language": "!!"}, headers=auth()
    )
    assert response.status_code == 422
    response = await api.post(
        "/api/pronunciation-assess", files=files, data={"reference_text": "r" * 1_001, "language": "en"}, headers=auth()
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "text_too_long"


# --- availability --------------------------------------------------------------------------

_OTHERS = [
    (
        JobType.PRONUNCIATION,
        "/api/pronunciation-assess",
        {"files": {"audio": ("a.wav", WAV, "audio/wav")}, "data": {"reference_text": "hello", "language": "en-US"}},
    ),
    (JobType.OCR, "/api/process-image", {"files": {"image": ("a.png", PNG, "image/png")}}),
    (JobType.TTS, "/api/audio/generate", {"json": {"text": "Hola", "language": "es"}}),
]


@pytest.mark.parametrize("job_type,path,request_kwargs", _OTHERS, ids=[t.value for t, _, _ in _OTHERS])
async def test_other_types_are_queued_when_available_else_501(api, job_type, path, request_kwargs):
    workload = WORKLOADS[job_type]
    response = await api.post(path, headers=auth(), **request_kwargs)
    if workload.available:
        assert_accepted(response, workload.queue, workload.task, api)
    else:
        assert response.status_code == 501, response.text
        assert response.json()["error"]["code"] == "not_implemented"
        assert api.redis.llen(workload.queue) == 0
        assert api.redis.zcard(keys.user_jobs("alice")) == 0  # nothing recorded either


async def test_an_unavailable_type_answers_501_only_after_auth_and_validation(api, monkeypatch):
    workload = WORKLOADS[JobType.PDF]
    monkeypatch.setitem(
        WORKLOADS, JobType.PDF, Workload(workload.queue, workload.task, workload.provider, available=False)
    )
    files = {"file": ("a.pdf", PDF, "application/pdf")}
    assert (await api.post("/api/process-pdf", files=files)).status_code == 401
    assert (
        await api.post("/api/process-pdf", files={"file": ("a.png", PNG, "image/png")}, headers=auth())
    ).status_code == 415
    response = await api.post("/api/process-pdf", files=files, headers=auth())
    assert response.status_code == 501 and response.json()["error"]["code"] == "not_implemented"
    assert api.redis.llen("pdf") == 0


# --- idempotency ---------------------------------------------------------------------------


async def test_idempotency_key_returns_the_same_job(api):
    body = {"content": "same request", "count": 3}
    first = await api.post("/api/ai/generate-flashcards", json=body, headers={**auth(), "Idempotency-Key": "k-1"})
    assert first.status_code == 202
    again = await api.post("/api/ai/generate-flashcards", json=body, headers={**auth(), "Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert api.redis.llen("ai") == 1  # one job, one message

    # the same key with another body is refused; nothing new is queued
    other = await api.post(
        "/api/ai/generate-flashcards", json={**body, "count": 4}, headers={**auth(), "Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    other = await api.post("/api/ai/generate-lesson", json={"topic": "x"}, headers={**auth(), "Idempotency-Key": "k-1"})
    assert other.status_code == 422
    assert api.redis.llen("ai") == 1

    # keys are per user: bob's k-1 is his own job
    bob = await api.post("/api/ai/generate-flashcards", json=body, headers={**auth("bob"), "Idempotency-Key": "k-1"})
    assert bob.status_code == 202 and bob.json()["job_id"] != first.json()["job_id"]


async def test_idempotent_uploads_compare_the_file(api):
    h = {**auth(), "Idempotency-Key": "upload-1"}
    first = await api.post("/api/process-pdf", files={"file": ("a.pdf", PDF, "application/pdf")}, headers=h)
    again = await api.post("/api/process-pdf", files={"file": ("a.pdf", PDF, "application/pdf")}, headers=h)
    assert (first.status_code, again.status_code) == (202, 200) and first.json()["job_id"] == again.json()["job_id"]
    changed = await api.post(
        "/api/process-pdf", files={"file": ("a.pdf", PDF + b"%changed", "application/pdf")}, headers=h
    )
    assert changed.status_code == 422


async def test_a_malformed_idempotency_key_is_422(api):
    response = await api.post(
        "/api/ai/generate-flashcards", json={"content": "x"}, headers={**auth(), "Idempotency-Key": "x" * 300}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_idempotency_key"


# --- webhooks at submission ----------------------------------------------------------------


async def test_a_private_webhook_target_is_refused_at_submission(api):
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "ftp://example.com/x", "http://localhost/hook"):
        response = await api.post(
            "/api/ai/generate-flashcards", json={"content": "x", "webhook_url": url}, headers=auth()
        )
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["code"].startswith("webhook_")
    assert api.redis.llen("ai") == 0


async def test_a_private_webhook_target_is_accepted_when_allowed(api_factory):
    client = await api_factory(webhook_allow_private=True)
    response = await client.post(
        "/api/ai/generate-flashcards", json={"content": "x", "webhook_url": "http://127.0.0.1:9/hook"}, headers=auth()
    )
    assert response.status_code == 202
    assert client.redis.hget(keys.job(response.json()["job_id"]), "webhook_url") == b"http://127.0.0.1:9/hook"
