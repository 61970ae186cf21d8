"""The OpenAPI document types every job's result and progress, and real jobs' answers fit it.

One job of each type runs through the API and a real worker against the sandbox; each answer
of ``GET /api/jobs/{id}`` is validated twice: by jsonschema against the document itself, and
by pydantic models that datamodel-code-generator (an off-the-shelf generator, as an app's
build would run one) generated from that document.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import jsonschema
import redis

from devstack.processes import wait_until
from sandbox.images import png_with_text
from tests.samples import pdf_with_text, spoken_wav
from tests.support.api import auth
from unilingo.errors import JOB_ERROR_CODES
from unilingo.jobs import JobStore

RESULT_SCHEMAS = {
    "flashcards": "FlashcardsResult",
    "lesson": "LessonResult",
    "pronunciation": "PronunciationResult",
    "ocr": "OcrResult",
    "pdf": "PdfResult",
    "tts": "TtsResult",
}


def job_schema(document: dict) -> dict:
    return document["paths"]["/api/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


async def test_the_document_names_the_result_and_progress_of_each_job_type(api_factory):
    api = await api_factory()
    document = (await api.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    mapping = job_schema(document)["discriminator"]["mapping"]
    assert job_schema(document)["discriminator"]["propertyName"] == "type"
    assert set(mapping) == set(RESULT_SCHEMAS)
    for job_type, result_name in RESULT_SCHEMAS.items():
        job = schemas[mapping[job_type].rsplit("/", 1)[-1]]
        assert job["properties"]["type"]["const"] == job_type
        result_refs = [alt.get("$ref") for alt in job["properties"]["result"]["anyOf"]]
        assert f"#/components/schemas/{result_name}" in result_refs
        progress_refs = [alt.get("$ref", "") for alt in job["properties"]["progress"]["anyOf"]]
        assert any(ref.endswith("Progress") for ref in progress_refs)
        assert schemas[result_name]["properties"], result_name
    # Error codes, with their meanings, are in the document.
    assert all(f"`{code}`" in schemas["JobErrorView"]["properties"]["code"]["description"] for code in JOB_ERROR_CODES)
    assert "`rate_limited`" in schemas["ErrorInfo"]["properties"]["code"]["description"]
    # Every signed-in route documents what a signed-in call can meet.
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                assert {"401", "403", "404", "429"} <= set(operation["responses"]), (method, path)


def generated_models(document: dict, tmp_path):
    """Pydantic models generated from the document by datamodel-code-generator (its CLI)."""
    source, target = tmp_path / "openapi.json", tmp_path / "unilingo_client_models.py"
    source.write_text(json.dumps(document))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "datamodel_code_generator",
            "--input",
            str(source),
            "--input-file-type",
            "openapi",
            "--output-model-type",
            "pydantic_v2.BaseModel",
            "--formatters",
            "builtin",
            "--output",
            str(target),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    spec = importlib.util.spec_from_file_location("unilingo_client_models", target)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves generic models through it
    spec.loader.exec_module(module)
    return module


async def test_real_jobs_of_every_type_validate_against_the_document(
    api_factory,
    start_worker,
    sandbox_reset,
    redis_url,
    tmp_path,
):
    api = await api_factory(max_audio_bytes=500_000)
    start_worker(worker_queues="ai,speech,ocr,pdf,tts", azure_vision_poll_seconds="0.05")
    headers = auth("typed-user")
    submissions = {
        "flashcards": api.post(
            "/api/ai/generate-flashcards",
            json={"content": "Der Hund schläft. Die Katze spielt.", "count": 2},
            headers=headers,
        ),
        "lesson": api.post(
            "/api/ai/generate-lesson", json={"topic": "Ordering coffee", "language": "es"}, headers=headers
        ),
        "tts": api.post("/api/audio/generate", json={"text": "Buenos días", "language": "es"}, headers=headers),
        "pronunciation": api.post(
            "/api/pronunciation-assess",
            headers=headers,
            data={"reference_text": "good morning", "language": "en"},
            files={"audio": ("r.wav", spoken_wav("good morning"))},
        ),
        "ocr": api.post(
            "/api/process-image", headers=headers, files={"image": ("p.png", png_with_text(300, 100, "Bonjour"))}
        ),
        "pdf": api.post("/api/process-pdf", headers=headers, files={"file": ("l.pdf", pdf_with_text(["Hallo Welt"]))}),
        "failed": api.post("/api/process-pdf", headers=headers, files={"file": ("b.pdf", b"%PDF-1.4 not really")}),
    }
    ids = {}
    for name, request in submissions.items():
        response = await request
        assert response.status_code == 202, (name, response.text)
        ids[name] = response.json()["job_id"]
    store = JobStore(redis.Redis.from_url(redis_url))
    wait_until(
        lambda: all((job := store.get(i)) is not None and job.status.terminal for i in ids.values()), timeout=120
    )

    document = (await api.get("/openapi.json")).json()
    validator = jsonschema.Draft202012Validator({**job_schema(document), "components": document["components"]})
    client_models = generated_models(document, tmp_path)
    bodies = {}
    for name, job_id in ids.items():
        body = (await api.get(f"/api/jobs/{job_id}", headers=headers)).json()
        bodies[name] = body
        assert body["status"] == ("failed" if name == "failed" else "succeeded"), (name, body.get("error"))
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, (name, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]])
        model = getattr(client_models, type_model(body["type"]))
        parsed = model.model_validate(body)
        assert parsed.job_id == job_id
        assert body["cache_hit"] is False  # explicit, not absent
    assert bodies["failed"]["error"]["code"] in JOB_ERROR_CODES
    # Stable shapes: every word has its phonemes list, every OCR word its box.
    assert all(isinstance(word["phonemes"], list) for word in bodies["pronunciation"]["result"]["words"])
    assert bodies["lesson"]["result"]["vocabulary"] and isinstance(bodies["lesson"]["result"]["exercises"], list)
    assert bodies["ocr"]["result"]["image"] == {"source_format": "png", "converted": False, "width": 300, "height": 100}
    # Nothing internal: no storage layout, no checkpoint bookkeeping, no provider operation ids.
    assert "bucket" not in bodies["tts"]["result"] and "key" not in bodies["tts"]["result"]
    assert "operation" not in (bodies["ocr"].get("progress") or {})


def type_model(job_type: str) -> str:
    return {
        "flashcards": "FlashcardsJob",
        "lesson": "LessonJob",
        "pronunciation": "PronunciationJob",
        "ocr": "OcrJob",
        "pdf": "PdfJob",
        "tts": "TtsJob",
    }[job_type]


async def test_status_and_admin_answers_validate_against_the_document(api_factory):
    api = await api_factory()
    await api.post(
        "/api/ai/generate-flashcards", json={"content": "Activity for the admin views."}, headers=auth("maria")
    )
    document = (await api.get("/openapi.json")).json()
    admin = auth("ops", admin=True)
    for path in (
        "/api/ai/status",
        "/api/pronunciation/status",
        "/api/metrics",
        "/api/admin/users/overview",
        "/api/admin/users/statistics",
    ):
        schema = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in schema, (path, schema)  # a named model, not a free-form object
        response = await api.get(path, headers=admin)
        assert response.status_code == 200, (path, response.text)
        validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
        errors = sorted(validator.iter_errors(response.json()), key=str)
        assert not errors, (path, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]])
