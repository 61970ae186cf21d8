"""The ``unilingo`` client as a person runs it: exit codes, one-line errors, a waiting job explained."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devstack.ports import free_port
from tests.support.api import SECRET, ApiProcess, token


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "unilingo.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture
def api_process(redis_url, tmp_path):
    api = ApiProcess(redis_url, tmp_path).start()
    yield api
    api.stop()


def local(api: ApiProcess, redis_url: str, user: str = "cli-user") -> dict[str, str]:
    return {
        "UNILINGO_API": api.url,
        "UNILINGO_TOKEN": token(user),
        "REDIS_URL": redis_url,
        "SUPABASE_JWT_SECRET": SECRET,
    }


def test_errors_are_one_line_with_their_own_exit_status(api_process, redis_url, tmp_path):
    env = local(api_process, redis_url)
    missing = run_cli("pdf", str(tmp_path / "nope.pdf"), env=env)
    assert missing.returncode == 2 and missing.stderr.strip() == f"unilingo: no such file: {tmp_path / 'nope.pdf'}"

    down = run_cli("--api", f"http://127.0.0.1:{free_port()}", "jobs", env=env)
    assert down.returncode == 3 and "cannot reach the API" in down.stderr and len(down.stderr.strip().splitlines()) == 1

    forged = run_cli("jobs", env={**env, "UNILINGO_TOKEN": "not-a-token"})
    assert forged.returncode == 3 and "401 invalid_token" in forged.stderr

    unknown = run_cli("job", "0" * 32, env=env)
    assert unknown.returncode == 3 and "404 job_not_found" in unknown.stderr

    bad_policy = run_cli("policy", "set", "openai", "--set", "requestsPerMinute=-5", env=env)
    assert bad_policy.returncode == 2 and "invalid policy for openai: requestsPerMinute" in bad_policy.stderr
    no_field = run_cli("policy", "set", "openai", "--set", "requestsPerHour=5", env=env)
    assert no_field.returncode == 2 and "unknown provider or policy field: requestsPerHour" in no_field.stderr


def test_every_command_explains_itself():
    top = run_cli("--help")
    assert top.returncode == 0 and "exit status" in top.stdout
    for command in (
        "pdf",
        "flashcards",
        "lesson",
        "pronounce",
        "ocr",
        "tts",
        "job",
        "wait",
        "jobs",
        "cancel",
        "policy",
    ):
        help_ = run_cli(command, "--help")
        assert help_.returncode == 0 and len(help_.stdout.splitlines()) > 2, command
        assert command in top.stdout


def test_a_waiting_job_says_why_and_a_timeout_is_not_success(api_process, redis_url, sandbox, start_worker):
    env = local(api_process, redis_url)
    suspended = run_cli("policy", "set", "openai", "--set", "suspended=true", env=env)
    assert suspended.returncode == 0, suspended.stderr
    start_worker(worker_queues="ai")
    out = run_cli("--timeout", "8", "flashcards", "Die Katze schläft. Der Hund bellt.", "--count", "2", env=env)
    assert out.returncode == 4, out.stderr
    assert "waiting for openai: suspended by an operator" in out.stderr
    assert "had not ended after 8 s" in out.stderr.strip().splitlines()[-1]
    job_id = out.stderr.split()[1]

    shown = json.loads(run_cli("job", job_id, env=env).stdout)
    assert shown["status"] == "queued" and shown["attempts"] == 0
    assert shown["waiting"]["reason"] == "suspended" and shown["waiting"]["provider"] == "openai"
    assert shown["waiting"]["until"].endswith("Z")
    listed = json.loads(run_cli("jobs", env=env).stdout)["jobs"]
    assert [job["waiting"]["reason"] for job in listed if job["job_id"] == job_id] == ["suspended"]

    # Resumed, the same job runs and the follower ends with success.
    assert run_cli("policy", "set", "openai", "--set", "suspended=false", env=env).returncode == 0
    done = run_cli("--timeout", "60", "wait", job_id, env=env, timeout=90)
    assert done.returncode == 0, done.stderr
    finished = json.loads(done.stdout)
    assert finished["status"] == "succeeded" and "waiting" not in finished


def test_a_failed_job_exits_non_zero(api_process, redis_url, tmp_path, start_worker):
    env = local(api_process, redis_url)
    start_worker(worker_queues="pdf")
    scanned = tmp_path / "scan.pdf"  # a PDF without a text layer fails as pdf_no_text
    scanned.write_bytes(
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
        b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >> endobj\n"
        b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )
    out = run_cli("pdf", str(scanned), env=env)
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["status"] == "failed"
    assert "failed: pdf_" in out.stderr
