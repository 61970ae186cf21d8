"""The local stack started the way a user starts it, driven by the ``unilingo`` client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devstack.ports import free_port
from tests.samples import pdf_with_text

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(tmp_path):
    ports = {"API_PORT": free_port(), "SANDBOX_PORT": free_port(), "SANDBOX_AWS_PORT": free_port()}
    redis_port = free_port()
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SANDBOX_LATENCY_SCALE": "0.02",
        "UNILINGO_RUN_DIR": str(tmp_path / "run"),
    }
    log = open(tmp_path / "stack.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "devstack.run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    api = f"http://127.0.0.1:{ports['API_PORT']}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{api}/api/health/detailed", timeout=1).json().get("workers", {}).get("alive", 0) >= 1:
                break
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp_path / "stack.log").read_text()[-4000:])
        time.sleep(0.5)
    yield env, api
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C stops all of it
    process.wait(timeout=40)
    assert process.returncode is not None


def cli(env: dict, api: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "unilingo.cli", "--api", api, "--user", "e2e", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def test_make_run_serves_pdf_and_flashcards_jobs(stack, tmp_path):
    env, api = stack
    pdf = tmp_path / "lesson.pdf"
    pdf.write_bytes(pdf_with_text(["Guten Morgen! Wie geht es dir?"]))
    job = cli(env, api, "pdf", str(pdf))
    assert job["status"] == "succeeded" and "Guten Morgen" in job["result"]["text"]
    job = cli(env, api, "flashcards", "Mitochondria are the powerhouse of the cell. " * 5, "--count", "3")
    assert job["status"] == "succeeded" and len(job["result"]["cards"]) == 3
    listed = cli(env, api, "jobs")
    assert {j["job_id"] for j in listed["jobs"]} >= {job["job_id"]}
