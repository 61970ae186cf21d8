"""The chart's process-level claims, against a real Redis, API and Celery worker processes.

These check what the worker Deployment rests on (charts/unilingo/templates/worker/):
- the liveness probe finds the heartbeat that ``python -m workers`` really writes, fails when
  that heartbeat goes stale, and passes when Redis is unreachable;
- the preStop hook's SIGTERM to PID 1, followed by the kubelet's own SIGTERM, is a warm
  shutdown: the worker takes no new job, finishes the running one and exits 0;
and that the `helm test` Pod's script, as rendered, passes against the real API and a pdf worker.

They need real processes (``redis-server`` from scripts/bootstrap.sh), hence the marker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import redis

from devstack.ports import free_port
from devstack.processes import Service, wait_until
from tests.support.chart import REPO, container_env, of_kind, render, worker_container, worker_deployments
from unilingo import keys

MAX_AGE = 5  # the schema minimum


@pytest.fixture(scope="module")
def probe_script() -> str:
    docs = render("default", "--set", f"workers.defaults.livenessProbe.maxHeartbeatAgeSeconds={MAX_AGE}")
    deployment = next(d for d in worker_deployments(docs) if d["metadata"]["name"] == "unilingo-worker-pdf")
    command = worker_container(deployment)["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    return command[2]


def run_probe(script: str, redis_url: str, queue: str = "pdf") -> int:
    env = {**os.environ, "REDIS_URL": redis_url, "WORKER_QUEUES": queue}
    return subprocess.run([sys.executable, "-c", script], env=env, timeout=30).returncode


def start_worker(redis_url: str, tmp_path, queue: str = "pdf", prelude: str = "") -> Service:
    """``python -m workers`` for one queue (optionally with extra test tasks registered first)."""
    client = redis.Redis.from_url(redis_url)
    before = set(client.zrange(keys.workers_alive(), 0, -1))
    env = {"REDIS_URL": redis_url, "WORKER_QUEUES": queue, "WORKER_CONCURRENCY": "1", "WORKER_LOG_LEVEL": "INFO"}
    if prelude:
        argv = [sys.executable, "-c", prelude + "\nfrom workers.__main__ import main\nmain()\n"]
        service = Service(
            "worker",
            argv,
            env=env,
            log_dir=tmp_path,
            ready=lambda: bool(set(client.zrange(keys.workers_alive(), 0, -1)) - before),
        )
    else:
        service = Service.python(
            "worker",
            "workers",
            env=env,
            log_dir=tmp_path,
            ready=lambda: bool(set(client.zrange(keys.workers_alive(), 0, -1)) - before),
        )
    return service.start()


def test_liveness_probe_follows_the_real_worker_heartbeat(redis_url, probe_script, tmp_path):
    assert run_probe(probe_script, redis_url) == 1  # no worker yet: no heartbeat
    worker = start_worker(redis_url, tmp_path)
    try:
        assert run_probe(probe_script, redis_url) == 0
        assert run_probe(probe_script, redis_url, queue="ocr") == 1  # another queue's worker is not us
        # A wedged main process stops its heartbeat: the probe fails once it is older than maxAge.
        os.kill(worker.process.pid, signal.SIGSTOP)
        try:
            time.sleep(MAX_AGE + 1)
            assert run_probe(probe_script, redis_url) == 1
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
        wait_until(lambda: run_probe(probe_script, redis_url) == 0, timeout=10, interval=0.3)
    finally:
        worker.stop()
        print(worker.log()[-2000:])


def test_liveness_probe_passes_when_redis_is_unreachable(probe_script):
    # Restarting workers cannot fix Redis; the alerts report it instead.
    assert run_probe(probe_script, f"redis://127.0.0.1:{free_port()}/0") == 0


SLEEP_TASK = """
import time, redis
from workers.app import app

@app.task(name="unilingo.chart_test.sleep")
def sleep(seconds, key):
    client = redis.Redis.from_url(app.conf.broker_url)
    client.set(key + ":started", 1)
    time.sleep(seconds)
    client.set(key + ":done", 1)
"""


def test_prestop_sigterm_then_kubelet_sigterm_drains_the_running_job(redis_url, tmp_path):
    from workers.app import app

    worker = start_worker(redis_url, tmp_path, queue="pdf", prelude=SLEEP_TASK)
    client = redis.Redis.from_url(redis_url)
    key = f"chart-test:{uuid.uuid4().hex}"
    try:
        with app.connection_for_write(redis_url) as conn:
            app.send_task("unilingo.chart_test.sleep", args=[4, key], queue="pdf", connection=conn)
            app.send_task("unilingo.chart_test.sleep", args=[0, key + ":second"], queue="pdf", connection=conn)
        wait_until(lambda: client.get(key + ":started"), timeout=20)
        # The preStop hook: SIGTERM to PID 1 (the Celery main process only, not its pool).
        os.kill(worker.process.pid, signal.SIGTERM)
        time.sleep(0.5)
        # The kubelet's SIGTERM once the hook returns: must not turn the warm shutdown cold.
        os.kill(worker.process.pid, signal.SIGTERM)
        code = worker.process.wait(timeout=60)
        log = worker.log()
        assert client.get(key + ":done"), "the running job was cut short:\n" + log[-3000:]
        assert code == 0, log[-3000:]
        assert "Warm shutdown" in log or "warm shutdown" in log.lower(), log[-3000:]
        # The job queued behind it was not taken: it is back in (or still in) the queue's list.
        assert not client.get(key + ":second:started")
        assert client.llen(keys.queue_list("pdf")) == 1
        # The worker left the heartbeat set when it began to drain.
        assert not [m for m in client.zrange(keys.workers_alive(), 0, -1) if m.startswith(b"pdf@")]
    finally:
        worker.stop()
        client.close()


def test_helm_test_script_passes_against_the_real_api_and_a_pdf_worker(redis_url, tmp_path):
    (pod,) = of_kind(render("default"), "Pod")
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    env = {name: var["value"] for name, var in container_env(container).items() if "value" in var}
    port = free_port()
    app_env = {"REDIS_URL": redis_url, "API_PORT": str(port)}
    api = Service.python("api", "api", env=app_env, port=port, log_dir=tmp_path).start()
    worker = start_worker(redis_url, tmp_path, queue="pdf")
    try:
        # The Pod's own command and environment, pointed at this API; SUPABASE_JWT_SECRET is
        # the local default here, the credentials Secret's key in a cluster.
        env.update({"API_URL": f"http://127.0.0.1:{port}", "TEST_TIMEOUT_SECONDS": "60"})
        result = subprocess.run(
            [sys.executable, "-c", container["command"][2]],
            env={**os.environ, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr + api.log()[-2000:] + worker.log()[-2000:]
        assert result.stdout.strip().endswith("PASS"), result.stdout
    finally:
        worker.stop()
        api.stop()
