"""Fair share against first come, first served, in one run.

One heavy user queues 80 flashcards jobs, then five light users queue one each, on the local
stack's pieces (real Redis, the sandbox at OpenAI's real quota of 50 requests a minute, one
real worker with 4 slots). The same backlog runs twice: queued with fair share (the default)
and first come, first served (``FAIR_SHARE=false``). Reported: how long the light users waited
for their job to start (p50, p99), when the heavy user's last job finished, and how much of
the provider's quota the drain used (fairness must not cost throughput).

Writes ``bench/results/fairness.md``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis

from devstack.ports import free_port
from devstack.processes import Service, wait_until
from devstack.redis import RedisServer
from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message

RESULTS = Path(__file__).parent / "results"
HEAVY_JOBS, LIGHT_USERS = 80, 5
QUOTA_PER_MINUTE = 50  # OpenAI's quota as Unilingo v1 ran it; the sandbox enforces it


def queue(store: JobStore, owner: str, fair: bool, text: str) -> str:
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        type=JobType.FLASHCARDS,
        status=JobStatus.QUEUED,
        owner=owner,
        params={"content": text, "count": 3},
        created_at=now,
        updated_at=now,
    )
    message = task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id)
    store.create(NewJob(job=job, message=message, fair_weight=1.0 if fair else 0.0))
    return job.job_id


def run_side(fair: bool, work: Path) -> dict:
    redis_server = RedisServer(workdir=work / f"redis-{fair}", appendonly=False).start()
    sandbox_port = free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "SANDBOX_PORT": str(sandbox_port),
        "SANDBOX_AWS_PORT": str(free_port()),
        "SANDBOX_LATENCY_SCALE": "0.05",
        "CACHE_ENABLED": "false",
        "WORKER_QUEUES": "ai",
        "WORKER_CONCURRENCY": "4",
        "WORKER_LOG_LEVEL": "WARNING",
        "WORKER_METRICS_PORT": "0",
    }
    sandbox = Service.python("sandbox", "sandbox", env=env, port=sandbox_port, log_dir=work).start()
    client = redis.Redis.from_url(redis_server.url)
    store = JobStore(client)
    try:
        heavy = [queue(store, "heavy", fair, f"Lesson {i}: the dog sleeps on the sofa.") for i in range(HEAVY_JOBS)]
        light = [queue(store, f"light-{i}", fair, f"Light {i}: the cat sits on the roof.") for i in range(LIGHT_USERS)]
        worker = Service.python("worker", "workers", env=env, log_dir=work).start()
        try:
            jobs: list[Job] = wait_until(
                lambda: (js := [store.get(j) for j in heavy + light]) and all(j.status.terminal for j in js) and js,
                timeout=900,
                interval=0.5,
                message="the backlog drained",
            )
        finally:
            worker.stop()
        by_id = {job.job_id: job for job in jobs}
        began = min(job.started_at for job in jobs)
        waits = sorted(by_id[j].started_at - by_id[j].created_at for j in light)
        drained = max(job.finished_at for job in jobs) - began
        stats = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats").json()["openai"]
        return {
            "succeeded": sum(job.status is JobStatus.SUCCEEDED for job in jobs),
            "light_p50": statistics.median(waits),
            "light_p99": waits[-1],  # five users: the worst of them
            "heavy_done": max(by_id[j].finished_at for j in heavy) - began,
            "drained": drained,
            "quota_used": (stats["requests"] - stats["rejected_429"]) / (QUOTA_PER_MINUTE * drained / 60),
            "rejected": stats["rejected_429"],
        }
    finally:
        sandbox.stop()
        client.close()
        redis_server.stop()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="unilingo-bench-fair-"))
    fair = run_side(True, work)
    fifo = run_side(False, work)
    lines = [
        "# Fair share against first come, first served",
        "",
        f"One user queues {HEAVY_JOBS} flashcards jobs, then {LIGHT_USERS} other users queue one each. One worker "
        f"(4 slots), the sandbox at OpenAI's quota ({QUOTA_PER_MINUTE} requests a minute), provider latencies at "
        "0.05×. "
        "The same backlog, queued both ways, in one run.",
        "",
        "| | fair share (default) | first come, first served |",
        "| --- | ---: | ---: |",
        f"| light users' wait to start, p50 | {fair['light_p50']:.1f} s | {fifo['light_p50']:.1f} s |",
        f"| light users' wait to start, worst of 5 | {fair['light_p99']:.1f} s | {fifo['light_p99']:.1f} s |",
        f"| heavy user's last job done | {fair['heavy_done']:.1f} s | {fifo['heavy_done']:.1f} s |",
        f"| whole backlog drained | {fair['drained']:.1f} s | {fifo['drained']:.1f} s |",
        f"| provider quota used while draining | {fair['quota_used']:.0%} | {fifo['quota_used']:.0%} |",
        f"| provider 429s | {fair['rejected']} | {fifo['rejected']} |",
        f"| jobs succeeded | {fair['succeeded']} / {HEAVY_JOBS + LIGHT_USERS} | {fifo['succeeded']} / "
        f"{HEAVY_JOBS + LIGHT_USERS} |",
        "",
        f"Light users' wait, fair against first come: {fifo['light_p50'] / max(fair['light_p50'], 1e-3):.0f}× "
        "shorter (p50).",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fairness.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
