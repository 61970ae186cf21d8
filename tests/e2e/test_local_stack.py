"""The local stack as `devstack.run` starts it (private ports and run folder), driven by the ``unilingo`` client.

Every job type end to end. The README's own `make run` from a fresh clone is `test_fresh_clone`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from devstack.ports import free_port
from sandbox.images import png_with_text
from tests.samples import pdf_with_text, speech_like, wav_bytes
from tests.support.local_stack import wait_until_serving

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(tmp_path):
    ports = {
        "API_PORT": free_port(),
        "SANDBOX_PORT": free_port(),
        "SANDBOX_AWS_PORT": free_port(),
        "POSTGRES_PORT": free_port(),
    }
    redis_port = free_port()
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SANDBOX_LATENCY_SCALE": "0.02",
        "UNILINGO_RUN_DIR": str(tmp_path / "run"),
        # PostgreSQL runs as its own system user, which cannot enter pytest's 0700 tmp_path.
        "POSTGRES_DIR": tempfile.mkdtemp(prefix="unilingo-e2e-pg-"),
    }
    log = open(tmp_path / "stack.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{ports['API_PORT']}"
    wait_until_serving(api, process, tmp_path / "stack.log", timeout=90)
    yield env, api
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C stops all of it
    process.wait(timeout=40)
    shutil.rmtree(env["POSTGRES_DIR"], ignore_errors=True)


def cli(env: dict, api: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "unilingo.cli", "--api", api, "--user", "e2e", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def test_make_run_serves_pdf_and_flashcards_jobs(stack, tmp_path):
    env, api = stack
    pdf = tmp_path / "lesson.pdf"
    pdf.write_bytes(pdf_with_text(["Guten Morgen! Wie geht es dir?"]))
    job = cli(env, api, "pdf", str(pdf))
    assert job["status"] == "succeeded" and "Guten Morgen" in job["result"]["text"]
    # The user's file outlives the job's Redis TTL: archived in object storage (moto here).
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{env['SANDBOX_AWS_PORT']}",
        region_name="us-east-1",
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
    )
    assert job["result"]["upload"] == {"archived": True}  # where it is kept is not the client's business
    archived = s3.get_object(Bucket="unilingo-uploads", Key=f"uploads/e2e/{job['job_id']}")
    assert archived["Body"].read() == pdf.read_bytes()
    job = cli(env, api, "flashcards", "Mitochondria are the powerhouse of the cell. " * 5, "--count", "3")
    assert job["status"] == "succeeded" and len(job["result"]["cards"]) == 3
    listed = cli(env, api, "jobs")
    assert {j["job_id"] for j in listed["jobs"]} >= {job["job_id"]}


def test_every_job_type_succeeds_through_the_local_stack(stack, tmp_path):
    env, api = stack
    audio = tmp_path / "hallo.wav"
    audio.write_bytes(wav_bytes(speech_like(2.0)))
    image = tmp_path / "page.png"
    image.write_bytes(png_with_text(320, 120, "Der Apfel ist rot"))
    lesson = cli(env, api, "lesson", "Im Restaurant bestellen", "--level", "beginner", "--language", "de")
    assert lesson["status"] == "succeeded" and lesson["result"]["vocabulary"] and lesson["result"]["exercises"]
    assert lesson["progress"]["steps_done"] == 3
    scored = cli(env, api, "pronounce", str(audio), "Hallo, wie geht es dir?", "--language", "de-DE")
    assert scored["status"] == "succeeded" and 0 <= scored["result"]["scores"]["pronunciation"] <= 100
    read = cli(env, api, "ocr", str(image))
    assert read["status"] == "succeeded" and "Apfel" in read["result"]["text"]
    spoken = cli(env, api, "tts", "Guten Tag!", "--language", "de-DE")
    assert spoken["status"] == "succeeded"
    assert httpx.get(spoken["result"]["audio_url"], timeout=10).content  # the presigned URL serves the audio
