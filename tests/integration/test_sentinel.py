"""Redis through Sentinel (the chart's sentinel mode): clients and the Celery broker follow it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from devstack.ports import free_port, wait_for_port
from devstack.processes import Service, wait_until
from tests.samples import pdf_with_text
from tests.support.jobs import finished, submit
from unilingo.connections import redis_client
from unilingo.jobs import JobStatus, JobStore, JobType
from unilingo.settings import Settings


@pytest.fixture
def sentinel(redis_server, tmp_path):
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen([shutil.which("redis-server"), str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    wait_for_port(port)
    yield port
    process.terminate()
    process.wait(timeout=10)


def test_jobs_run_through_sentinel(sentinel, redis_url, sandbox, tmp_path):
    env = {
        "REDIS_SENTINELS": f"127.0.0.1:{sentinel}",
        "REDIS_SENTINEL_MASTER": "mymaster",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    store = JobStore(redis_client(settings))
    worker = Service.python(
        "worker",
        "workers",
        log_dir=tmp_path,
        env={
            **env,
            "SANDBOX_PORT": sandbox.url.rsplit(":", 1)[1],
            "WORKER_QUEUES": "pdf",
            "WORKER_LOG_LEVEL": "WARNING",
        },
    ).start()
    try:
        ids = [submit(store, JobType.PDF, upload=pdf_with_text([f"Sentinel page {i}"])) for i in range(3)]
        jobs = wait_until(lambda: finished(store, ids), timeout=60)
        assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 3, worker.log()[-2000:]
    finally:
        worker.stop()
