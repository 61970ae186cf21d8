"""Submit path against Unilingo v1's inline-blocking design, in one run.

1. Submit latency at fixed rates (open loop, separate load process): p50/p99 per rate and
   the highest rate whose p99 stays within 25 ms — with auth, quota and the job record.
2. Unilingo v1's "10 users at once" (bottleneck timeline): a v1-style endpoint that calls the
   provider inline behind one sequential OpenAI queue, beside ours (202 at once, result later).
3. The queue's own overhead: submit → succeeded for a one-page PDF minus extraction time.
4. Resident memory of one API and one worker process under that load.
5. The request path's two Redis scripts (both quotas, the job record) in-process, by the way
   they are sent: redis-py's ``AsyncScript`` (one round trip each, a pool connection per call)
   against ``unilingo.scripts.PipelinedScripts`` (the calls of concurrent requests in one
   redis-py pipeline per turn of the event loop): CPU per submission, not bounded by latency.

Writes ``bench/results/submit.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from devstack.ports import free_port
from devstack.processes import Service
from devstack.redis import RedisServer
from tests.samples import pdf_with_text
from unilingo.tokens import mint

RESULTS = Path(__file__).parent / "results"
RATES = [100, 300, 500, 600, 800, 1000, 1200, 1500, 2000]
STEP_SECONDS = 5.0
REPEATS = 3
LATENCY_SCALE = 0.1  # the sandbox's provider latencies at a tenth of the real ones


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rss_mb(pid: int, with_children: bool = False) -> float:
    """The largest resident set among the process and (optionally) its children."""
    pids = [pid]
    if with_children:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(p) for p in out]
    largest = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    largest = max(largest, int(line.split()[1]))
        except FileNotFoundError:
            pass
    return largest / 1024


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [p for child in children for p in process_tree(int(child))]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


SCRIPT_CALLERS = 32  # concurrent requests, as the load generator's connections
SCRIPT_SUBMISSIONS = 6000


async def _script_path_cost(url: str, runner_name: str) -> tuple[float, float]:
    """(submissions/s, CPU µs per submission) of the quota and job record scripts in this process."""
    import resource

    import redis.asyncio as aioredis

    from unilingo.jobs import AsyncJobStore, Job, JobStatus, JobType, NewJob, new_job_id
    from unilingo.messages import task_message
    from unilingo.quota import AsyncClientQuota, parse_rate
    from unilingo.scripts import PipelinedScripts

    client = aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(url))
    runner = PipelinedScripts(client) if runner_name == "pipelined" else client
    store, quota = AsyncJobStore(client, scripts=runner), AsyncClientQuota(runner)
    rates = (parse_rate("100000000/1m"), parse_rate("100000000/1h"))

    async def caller(index: int) -> None:
        for _ in range(SCRIPT_SUBMISSIONS // SCRIPT_CALLERS):
            user = f"bench-user-{index}"
            await quota.hit_all([("ip", "203.0.113.9", rates[0]), ("user_ai", user, rates[1])])
            now = time.time()
            job = Job(
                job_id=new_job_id(),
                type=JobType.FLASHCARDS,
                status=JobStatus.QUEUED,
                owner=user,
                params={"content": "Die Katze schläft.", "count": 5},
                created_at=now,
                updated_at=now,
            )
            message = task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id)
            await store.create(NewJob(job=job, message=message))

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    await caller(0)  # scripts loaded, connections open
    cpu_before, start = cpu(), time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(SCRIPT_CALLERS)))
    elapsed, used = time.perf_counter() - start, cpu() - cpu_before
    await client.aclose()
    done = SCRIPT_CALLERS * (SCRIPT_SUBMISSIONS // SCRIPT_CALLERS)
    return done / elapsed, used / done * 1e6


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def celery_delay_app_queue() -> str:
    from bench.celery_delay_app import QUEUE

    return QUEUE


def load(url: str, rate: float, tokens_file: str, duration: float = STEP_SECONDS) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--tokens",
            tokens_file,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def v1_scenario(url: str, users: int, token: str | None) -> list[float]:
    """``users`` requests at t=0; the time each waits for its answer (202 or result)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(i):
            start = time.perf_counter()
            r = await client.post(
                url, json={"content": f"Lesson text number {i}: die Farben.", "count": 5}, headers=headers
            )
            r.raise_for_status()
            return time.perf_counter() - start, r.json()

        return await asyncio.gather(*(one(i) for i in range(users)))


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="unilingo-bench-"))
    redis_server = RedisServer(workdir=work / "redis", fsync="everysec").start()
    api_port, sandbox_port, v1_port = free_port(), free_port(), free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "API_PORT": str(api_port),
        "SANDBOX_PORT": str(sandbox_port),
        "SANDBOX_AWS_PORT": str(free_port()),
        "SANDBOX_LATENCY_SCALE": str(LATENCY_SCALE),
        "QUOTA_IP": "100000000/1m",
        "QUOTA_USER_AI": "100000000/1h",
        "WORKER_LOG_LEVEL": "WARNING",
    }
    sandbox = Service.python("sandbox", "sandbox", env=env, port=sandbox_port, log_dir=work).start()
    api = Service.python("api", "api", env=env, port=api_port, log_dir=work).start()
    v1 = Service.python(
        "v1", "bench.v1_inline", env={**env, "V1_PORT": str(v1_port)}, port=v1_port, log_dir=work
    ).start()
    tokens_file = work / "tokens.txt"
    tokens_file.write_text("\n".join(mint(f"bench-user-{i}") for i in range(500)))
    submit_url = f"http://127.0.0.1:{api_port}/api/ai/generate-flashcards"
    client = redis.Redis.from_url(redis_server.url)
    lines = ["# Submit path: Unilingo v2 against Unilingo v1's inline design", ""]
    try:
        # 1. Submit latency at fixed rates, with one API process and with one per core: ours,
        # then the FastAPI + Celery delay() endpoint a Python team would write first.
        celery_port = free_port()
        loads: list[float] = []
        generator_cpu_us: list[float] = []
        sweeps: list[str] = []
        best_by_processes: dict[tuple[str, int], int | None] = {}
        cpu_at_best: dict[tuple[str, int], float | None] = {}
        peak_rss_api = 0.0
        variants = [
            ("Unilingo", "api", submit_url, api_port, {}, "ai"),
            (
                "FastAPI + Celery delay()",
                "bench.celery_delay_app",
                f"http://127.0.0.1:{celery_port}/api/ai/generate-flashcards",
                celery_port,
                {"CELERY_APP_PORT": str(celery_port)},
                celery_delay_app_queue(),
            ),
        ]
        for label, module, url, port, extra_env, queue in variants:
            for processes in (1, 2):
                if module == "api" and processes == 1:
                    service = api
                else:
                    if module == "api":
                        api.stop()
                    service = Service.python(
                        module,
                        module,
                        env={**env, **extra_env, "WEB_CONCURRENCY": str(processes)},
                        port=port,
                        log_dir=work,
                    ).start()
                    if module == "api":
                        api = service
                load(url, 200, str(tokens_file), duration=2)  # warm-up
                client.delete(queue)
                pids = process_tree(service.process.pid)
                loads.append(os.getloadavg()[0])
                best, best_cpu = None, None
                for rate in RATES:
                    # Other work may share these 2 cores: each rate runs REPEATS times, the table shows medians.
                    runs = []
                    for _ in range(REPEATS):
                        cpu_before = cpu_seconds(pids)
                        result = load(url, rate, str(tokens_file))
                        result["api_cpu_us"] = (cpu_seconds(pids) - cpu_before) / result["sent"] * 1e6
                        generator_cpu_us.append(result["cpu_s"] / result["sent"] * 1e6)
                        runs.append(result)
                        client.delete(queue)  # no workers run here; keep Redis memory flat
                    if module == "api" and processes == 1:
                        peak_rss_api = max(peak_rss_api, rss_mb(service.process.pid))
                    sent = sum(r["sent"] for r in runs)
                    accepted = sum(r["statuses"].get("202", 0) for r in runs)
                    p50 = statistics.median(pct(r["latencies_ms"], 0.5) for r in runs)
                    p99s = sorted(pct(r["latencies_ms"], 0.99) for r in runs)
                    p99 = statistics.median(p99s)
                    achieved = statistics.median(r["sent"] / r["elapsed_s"] for r in runs)
                    api_cpu_us = statistics.median(r["api_cpu_us"] for r in runs)
                    ok = accepted == sent and p99 <= 25.0
                    if ok:
                        best, best_cpu = rate, api_cpu_us
                    sweeps.append(
                        f"| {label} | {processes} | {rate} | {achieved:.0f} | {accepted}/{sent} | {p50:.1f} "
                        f"| {p99:.1f} | {' / '.join(f'{v:.1f}' for v in p99s)} | {api_cpu_us:.0f} "
                        f"| {'yes' if ok else 'no'} |"
                    )
                    if p99 > 250:
                        break
                best_by_processes[(label, processes)] = best
                cpu_at_best[(label, processes)] = best_cpu
                if module != "api":
                    service.stop()
        lines += [
            "## 1. Submit latency (POST /api/ai/generate-flashcards: JWT, IP + user quota, job record, enqueue)",
            "",
            "Two endpoints, measured one after the other in this run: **Unilingo** (`api`: the guard, the job "
            "record and its queue message in one Lua script, fair share, idempotency) and **FastAPI + Celery "
            "delay()** (`bench/celery_delay_app.py`: what a Python team writes first: the same token check and "
            "the same quota script, the job as a Redis hash, then Celery's `delay()` on the Redis broker). "
            "uvicorn (uvloop, httptools) with 1 process, then 2 (`WEB_CONCURRENCY=2`, one per core); Redis AOF "
            "everysec; "
            f"open-loop load from a separate process on the same 2 cores, {STEP_SECONDS:.0f} s per run, {REPEATS} "
            "runs per "
            "rate (the table shows the medians of the runs and each run's p99: other work may share the machine; "
            f"1-minute load average before each sweep: {' / '.join(f'{v:.2f}' for v in loads)}), 500 users. "
            "Latency runs from each request's due time (no coordinated omission). The load generator is "
            "`bench.loadgen`: "
            "HTTP/1.1 keep-alive on a bare asyncio protocol with pre-built requests, 32 connections opened before "
            "the clock "
            f"starts, each request on the connection idle longest; it used {statistics.median(generator_cpu_us):.0f} "
            "µs of "
            "CPU per request (median over the rates; the aiohttp client used before took over twice as much, CPU the "
            "API did not get). API CPU: user + system time of the uvicorn processes per request.",
            "",
            "| endpoint | API processes | target/s | achieved/s | 202s | p50 ms | p99 ms | p99 of each run ms "
            "| API CPU µs/req | p99 ≤ 25 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|:--:|",
            *sweeps,
            "",
            "**Side by side** (highest sustained rate with p99 ≤ 25 ms; API CPU per submission at that rate):",
            "",
            "| endpoint | 1 process | CPU µs/submission | 2 processes | CPU µs/submission |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {label} | {best_by_processes[(label, 1)] or 'none'} | {_figure(cpu_at_best[(label, 1)])} "
                f"| {best_by_processes[(label, 2)] or 'none'} | {_figure(cpu_at_best[(label, 2)])} |"
                for label, *_ in variants
            ),
            "",
            "(targets for Unilingo: ≥ 1,000/s; p99 ≤ 25 ms at 500/s).",
            "",
        ]

        # 5. The request path's scripts in-process, by the way they are sent (before the worker
        # sections: nothing else of ours runs now but Redis).
        script_rows = []
        for runner_name, label in (
            ("redis-py", "redis-py `AsyncScript`: one call per round trip"),
            ("pipelined", "`PipelinedScripts`: one redis-py pipeline per turn of the loop"),
        ):
            runs = [asyncio.run(_script_path_cost(redis_server.url, runner_name)) for _ in range(REPEATS)]
            client.delete("ai")
            rate = statistics.median(r[0] for r in runs)
            cpu_us = statistics.median(r[1] for r in runs)
            script_rows.append(f"| {label} | {rate:.0f} | {cpu_us:.0f} |")
        script_lines = [
            "## 5. The request path's Redis scripts in one process, by the way they are sent",
            "",
            f"{SCRIPT_CALLERS} concurrent callers, {SCRIPT_SUBMISSIONS} submissions, each the two scripts of the "
            "submit path (the address's and the user's quota in one call, then the job record with its queue "
            "message) and the job model and message built as the API builds them; no HTTP. CPU: this process's "
            f"user + system time per submission (median of {REPEATS} runs); the rate is bounded by Redis and "
            "the machine's other work, the CPU much less so.",
            "",
            "| sent by | submissions/s | CPU µs/submission |",
            "|---|---:|---:|",
            *script_rows,
            "",
        ]

        # 2. Unilingo v1's ten users at once.
        worker = Service.python(
            "worker", "workers", env={**env, "WORKER_QUEUES": "ai", "WORKER_CONCURRENCY": "5"}, log_dir=work
        ).start()
        time.sleep(3)
        v1_times = asyncio.run(v1_scenario(f"http://127.0.0.1:{v1_port}/v1/generate-flashcards", 10, None))
        v1_waits = sorted(t for t, _ in v1_times)
        token = mint("ten-users")
        ours = asyncio.run(v1_scenario(submit_url, 10, token))
        ours_waits = sorted(t for t, _ in ours)
        ids = [body["job_id"] for _, body in ours]
        start = time.perf_counter()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"}
        ) as http:
            while True:
                states = [http.get(f"/api/jobs/{i}").json()["status"] for i in ids]
                if all(s in ("succeeded", "failed") for s in states):
                    break
                time.sleep(0.1)
        all_done = time.perf_counter() - start + max(ours_waits)
        worker.stop()
        lines += [
            "## 2. Unilingo v1's bottleneck timeline: 10 users submit AI requests at t=0",
            "",
            f"Provider latency at {LATENCY_SCALE}× Unilingo v1's (multiply seconds by {1 / LATENCY_SCALE:.0f} for "
            "real time).",
            "v1: the provider call inline in the request, behind one sequential OpenAI queue (Unilingo v1's design).",
            "v2: 202 with a job id; five AI workers with the policy's five calls in flight.",
            "",
            "| | first answer s | last answer s | mean wait s | all results ready s |",
            "|---|---:|---:|---:|---:|",
            f"| v1 inline | {v1_waits[0]:.2f} | {v1_waits[-1]:.2f} | {statistics.mean(v1_waits):.2f} | "
            f"{v1_waits[-1]:.2f} |",
            f"| v2 job id | {ours_waits[0]:.3f} | {ours_waits[-1]:.3f} | {statistics.mean(ours_waits):.3f} | "
            f"{all_done:.2f} |",
            "",
        ]

        # 3. Queue overhead for a one-page PDF, and 4. memory.
        worker = Service.python(
            "worker", "workers", env={**env, "WORKER_QUEUES": "pdf", "WORKER_CONCURRENCY": "1"}, log_dir=work
        ).start()
        time.sleep(3)
        pdf = pdf_with_text(["Eine Seite Text."])
        overheads, peak_rss_worker = [], 0.0
        pubsub = client.pubsub()
        pubsub.psubscribe("unilingo:job:*:events")
        pubsub.get_message(timeout=1)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"}
        ) as http:
            for _ in range(200):
                start = time.perf_counter()
                job_id = http.post("/api/process-pdf", files={"file": ("a.pdf", pdf, "application/pdf")}).json()[
                    "job_id"
                ]
                channel = f"unilingo:job:{job_id}:events".encode()
                while True:
                    msg = pubsub.get_message(timeout=5)
                    if msg and msg["type"] == "pmessage" and msg["channel"] == channel and msg["data"] == b"succeeded":
                        break
                total = time.perf_counter() - start
                record = client.hmget(f"unilingo:job:{job_id}", "started_at", "finished_at")
                run = float(record[1]) - float(record[0])
                overheads.append((total - run) * 1000)
                peak_rss_worker = max(peak_rss_worker, rss_mb(worker.process.pid, with_children=True))
        worker_pids = 1 + int(
            subprocess.run(
                ["pgrep", "-c", "-P", str(worker.process.pid)], capture_output=True, text=True
            ).stdout.strip()
            or 0
        )
        worker.stop()
        lines += [
            "## 3. Queue overhead: submit → succeeded for a one-page PDF, minus extraction time",
            "",
            "Sequential submissions through the API, completion seen on the job's pub/sub channel (what SSE follows).",
            "",
            "| jobs | p50 ms | p99 ms | target p99 |",
            "|---:|---:|---:|---:|",
            f"| {len(overheads)} | {pct(overheads, 0.5):.1f} | {pct(overheads, 0.99):.1f} | ≤ 50 ms |",
            "",
            "## 4. Resident memory under load",
            "",
            "| process | peak RSS MB | target |",
            "|---|---:|---:|",
            f"| API (one uvicorn process) | {peak_rss_api:.0f} | ≤ 150 |",
            f"| worker (largest of Celery main + {worker_pids - 1} pool child) | {peak_rss_worker:.0f} | ≤ 150 |",
            "",
            *script_lines,
        ]
    finally:
        for service in (v1, api, sandbox):
            service.stop()
        redis_server.stop()
    (RESULTS / "submit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
