"""A newcomer's first hour: ``git clone``, then the README's own commands, nothing changed but ports.

The repository's HEAD is cloned into a temporary folder and ``make run`` and ``make redis`` run
there as the README says, with the environment a user has: every setting at its default but
the ports (so that the test can run beside another stack). The ``unilingo`` client then
submits a PDF and flashcards and follows them; Ctrl-C (SIGINT to the foreground process group,
as a terminal sends it) must leave nothing listening and nothing running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from devstack.ports import free_port
from devstack.postgres import cluster_folder
from tests.samples import pdf_with_text
from tests.support.local_stack import wait_until_serving
from unilingo.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# The first `make` in a fresh clone installs the Python environment (from pip's cache here).
BOOT_SECONDS = 900


def user_environment(ports: dict[str, int]) -> dict[str, str]:
    """The caller's environment without any of the platform's settings, plus the ports."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ours and k not in ("PYTHONPATH", "VIRTUAL_ENV", "UNILINGO_TOKEN", "UNILINGO_API", "UNILINGO_USER")
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p)
    env.update({name: str(port) for name, port in ports.items() if name != "REDIS_PORT"})
    env["REDIS_URL"] = f"redis://127.0.0.1:{ports['REDIS_PORT']}/0"
    return env


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def interrupt(process: subprocess.Popen, timeout: float = 60) -> None:
    """Ctrl-C: SIGINT to the whole foreground group, then wait for every member to leave."""
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while group_alive(process.pid):
        assert time.monotonic() < deadline, "processes of the stack still running after Ctrl-C"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fresh") / "unilingo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
    yield folder
    shutil.rmtree(cluster_folder(folder / ".run" / "postgres"), ignore_errors=True)


def start(clone: Path, target: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["make", target], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def test_make_redis_from_a_fresh_clone(clone, tmp_path):
    ports = {"REDIS_PORT": free_port()}
    env = user_environment(ports)
    process = start(clone, "redis", env, tmp_path / "redis.log")
    deadline = time.monotonic() + BOOT_SECONDS
    while not listening(ports["REDIS_PORT"]):
        assert process.poll() is None, (tmp_path / "redis.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "make redis did not listen"
        time.sleep(0.5)
    import redis

    client = redis.Redis(port=ports["REDIS_PORT"])
    client.set("first-hour", "ok")
    assert client.get("first-hour") == b"ok"
    client.close()
    assert (clone / ".run" / "redis" / "redis.log").exists()  # relative run folder, as a user has it
    interrupt(process)
    assert not listening(ports["REDIS_PORT"])


def test_make_run_from_a_fresh_clone_serves_the_readme_commands(clone, tmp_path):
    ports = {
        name: free_port()
        for name in (
            "REDIS_PORT",
            "API_PORT",
            "SANDBOX_PORT",
            "SANDBOX_AWS_PORT",
            "POSTGRES_PORT",
            "WORKER_METRICS_PORT",
        )
    }
    env = user_environment(ports)
    log = tmp_path / "make-run.log"
    process = start(clone, "run", env, log)
    api = f"http://127.0.0.1:{ports['API_PORT']}"
    try:
        wait_until_serving(api, process, log, timeout=BOOT_SECONDS)

        def unilingo(*args: str) -> dict:
            out = subprocess.run(
                [str(clone / ".venv" / "bin" / "unilingo"), *args],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert out.returncode == 0, out.stderr + out.stdout
            assert "Traceback" not in out.stderr
            return json.loads(out.stdout)

        pdf = tmp_path / "lesson.pdf"
        pdf.write_bytes(pdf_with_text(["Guten Morgen! Wie geht es dir?"]))
        job = unilingo("pdf", str(pdf))
        assert job["status"] == "succeeded" and "Guten Morgen" in job["result"]["text"]
        cards = unilingo("flashcards", "Die Katze schläft. Der Hund bellt.", "--count", "3")
        assert cards["status"] == "succeeded" and len(cards["result"]["cards"]) == 3
        listed = unilingo("jobs")
        assert {job["job_id"], cards["job_id"]} <= {j["job_id"] for j in listed["jobs"]}
        # The README's curl works with the token `make token USER=me` prints: the CLI's user.
        token = subprocess.run(
            ["make", "-s", "token", "USER=me"], cwd=clone, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        mine = httpx.get(f"{api}/api/jobs/{cards['job_id']}", headers={"Authorization": f"Bearer {token}"}).json()
        assert mine["status"] == "succeeded"
        # /docs renders from the API alone: its scripts are served by the API, not a CDN.
        page = httpx.get(f"{api}/docs").text
        assert "cdn." not in page and "/docs/static/swagger-ui-bundle.js" in page
        assert httpx.get(f"{api}/docs/static/swagger-ui-bundle.js").status_code == 200
    finally:
        interrupt(process)
    for name, port in ports.items():
        assert not listening(port), f"{name} {port} still listening after Ctrl-C"
