"""Response cache and persistence, in one run.

1. Cache: the same stream of flashcards jobs, 30 % of them repeating an earlier request (with
   other whitespace and case, as users retype), through a real worker with the cache on and
   with it off. Provider calls and tokens are the sandbox's own counts.
2. Persistence: generated lessons (one ``esp_lessons`` row and its ``lesson_vocab`` rows per
   job) written through the direct PostgreSQL connection, rows per second.

Writes ``bench/results/cache.md``.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis

from devstack.ports import free_port
from devstack.postgres import PostgresServer
from devstack.processes import Service, wait_until
from devstack.redis import RedisServer
from tests.support.jobs import finished, submit
from unilingo import persistence
from unilingo.jobs import Job, JobStatus, JobStore, JobType

RESULTS = Path(__file__).parent / "results"
JOBS = 120
REPEAT_SHARE = 0.30
# gpt-4o-mini list prices (USD per million tokens), to turn tokens into money.
PRICE_INPUT, PRICE_OUTPUT = 0.15, 0.60


def workload(seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    texts: list[str] = []
    for i in range(JOBS):
        if texts and rng.random() < REPEAT_SHARE:
            original = rng.choice(texts)
            texts.append("  " + original.upper().replace(" ", "  ") + " ")  # the same request, retyped
        else:
            texts.append(
                f"Lesson {i}: the {rng.choice(['dog', 'cat', 'bird'])} sleeps on the "
                f"{rng.choice(['sofa', 'bed', 'roof'])}."
            )
    return texts


def run_side(cache_enabled: bool, work: Path) -> dict:
    redis_server = RedisServer(workdir=work / f"redis-{cache_enabled}", appendonly=False).start()
    sandbox_port = free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "SANDBOX_PORT": str(sandbox_port),
        "SANDBOX_AWS_PORT": str(free_port()),
        "SANDBOX_LATENCY_SCALE": "0.01",
        "CACHE_ENABLED": str(cache_enabled).lower(),
        "WORKER_QUEUES": "ai",
        "WORKER_CONCURRENCY": "4",
        "WORKER_LOG_LEVEL": "WARNING",
    }
    sandbox = Service.python("sandbox", "sandbox", env=env, port=sandbox_port, log_dir=work).start()
    worker = Service.python("worker", "workers", env=env, log_dir=work).start()
    client = redis.Redis.from_url(redis_server.url)
    store = JobStore(client)
    try:
        time.sleep(3)
        ids = []
        for text in workload():
            ids.append(submit(store, JobType.FLASHCARDS, {"content": text, "count": 3}))
            time.sleep(0.02)
        jobs: list[Job] = wait_until(lambda: finished(store, ids), timeout=600, interval=0.5)
        stats = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats").json()["openai"]
        tokens = sum(v.get("tokens", 0) for v in stats["per_second"].values())
        return {
            "succeeded": sum(j.status is JobStatus.SUCCEEDED for j in jobs),
            "hits": sum(j.cache_hit for j in jobs),
            "calls": stats["requests"],
            "tokens": tokens,
            "usage": sum(sum((j.result or {}).get("usage", {}).values()) for j in jobs),
        }
    finally:
        worker.stop()
        sandbox.stop()
        redis_server.stop()


def persistence_rate(work: Path) -> tuple[float, int]:
    server = PostgresServer(workdir=Path(tempfile.mkdtemp(prefix="unilingo-bench-pg-")), port=free_port(), fsync=True)
    server.start()
    try:
        conn = persistence.connect(server.url)
        persistence.migrate(conn)
        now = time.time()
        lesson = {
            "title": "Im Restaurant",
            "objectives": ["bestellen"],
            "sections": ["Dialog"],
            "vocabulary": [
                {"term": f"Wort {k}", "translation": f"word {k}", "example": "Ein Beispiel."} for k in range(8)
            ],
            "exercises": [{"prompt": "?", "answer": "!"}],
        }
        rates = []
        for _ in range(3):
            jobs = [
                Job(
                    job_id=f"bench-{random.getrandbits(64):x}",
                    type=JobType.LESSON,
                    status=JobStatus.SUCCEEDED,
                    owner=f"user-{i % 20}",
                    params={"topic": "food"},
                    created_at=now,
                    updated_at=now,
                )
                for i in range(300)
            ]
            start = time.perf_counter()
            for job in jobs:
                persistence.write(conn, job, lesson, {"openai": 1200})
            elapsed = time.perf_counter() - start
            rates.append(len(jobs) * (1 + len(lesson["vocabulary"])) / elapsed)
        conn.close()
        return statistics.median(rates), 1 + len(lesson["vocabulary"])
    finally:
        server.stop()


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="unilingo-bench-cache-"))
    off = run_side(False, work)
    on = run_side(True, work)
    rows_per_s, rows_per_job = persistence_rate(work)
    saved_calls = 1 - on["calls"] / off["calls"] if off["calls"] else 0.0
    saved_tokens = 1 - on["tokens"] / off["tokens"] if off["tokens"] else 0.0

    def cost(side: dict) -> float:
        # The sandbox's charge is prompt + output cap; price it all as output for an upper bound,
        # and as input for a lower one: the ratio, not the cents, is the point.
        return side["tokens"] / 1e6 * (PRICE_INPUT + PRICE_OUTPUT) / 2

    lines = [
        "# Response cache and persistence",
        "",
        f"## Cache: {JOBS} flashcards jobs, {REPEAT_SHARE:.0%} of them repeating an earlier request (retyped: other "
        "case and spacing)",
        "",
        "One worker (concurrency 4), the sandbox at Unilingo v1's quota; calls and tokens as the sandbox counted them.",
        "",
        "| cache | jobs succeeded | cache hits | provider calls | tokens charged | est. cost USD |",
        "|---|---:|---:|---:|---:|---:|",
        f"| off | {off['succeeded']}/{JOBS} | {off['hits']} | {off['calls']} | {off['tokens']:,} | {cost(off):.4f} |",
        f"| on | {on['succeeded']}/{JOBS} | {on['hits']} | {on['calls']} | {on['tokens']:,} | {cost(on):.4f} |",
        "",
        f"**Saved: {saved_calls:.0%} of provider calls, {saved_tokens:.0%} of tokens** (cost at gpt-4o-mini's list "
        "prices, "
        f"${PRICE_INPUT}/M input and ${PRICE_OUTPUT}/M output, averaged).",
        "",
        "## Persistence: generated lessons through the direct connection",
        "",
        f"One `esp_lessons` row and {rows_per_job - 1} `lesson_vocab` rows per job, one transaction per job, "
        "idempotent on the job id (`ON CONFLICT DO NOTHING`); Debian's PostgreSQL 15 with fsync on; median of 3 × "
        "300 jobs.",
        "",
        "| rows/s | jobs/s |",
        "|---:|---:|",
        f"| {rows_per_s:,.0f} | {rows_per_s / rows_per_job:,.0f} |",
        "",
    ]
    (RESULTS / "cache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
