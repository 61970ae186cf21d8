"""Recovery after a worker is SIGKILLed: how long until its jobs run again, and what is lost.

A backlog of PDF and flashcards jobs, OpenAI slowed down in the sandbox (a ``slow`` fault,
``SLOW_S`` seconds on every call) so that a kill lands in the middle of calls; two worker
processes. When all four pool slots run flashcards, one worker is SIGKILLed, main process
and pool children at once (``Service.kill``: the whole process group, as an OOM kill or a
lost node would), at a random moment of the calls. Measured from outside:

- recovery: from the kill until every interrupted job is ``running`` again on the other
  worker (its lease lapses; any worker's housekeeping loop queues it again), per the job
  events on Redis pub/sub;
- jobs lost: submitted jobs that never succeed;
- result writes per job: ``succeeded``/``failed`` announcements, which only a write by the
  current fencing token makes.

Beside it, Celery alone (``bench.celery_rate_limit``: acks_late, prefetch 1, no lease): the
killed worker's unacknowledged messages come back only once the broker's
``visibility_timeout`` has passed since their delivery, when kombu next sweeps for them.
The workers' app configures it in ``workers.app.app.conf.broker_transport_options``; the
visibility timeout must exceed the longest job, or a healthy job is delivered again while
it runs. Celery alone is measured with a short one (``CELERY_VISIBILITY_S``), with kombu's
default sweep (every ~100 s) and with a 1 s sweep; and one healthy job longer than the
visibility timeout runs on each side.

The three sides run at the same time, each with its own sandbox and Redis database, so the
benchmark takes as long as the slowest of them.

    BENCH_RECOVERY_REPEATS=5 python -m bench.recovery_bench

Writes ``bench/results/recovery.md``.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from celery import Celery

from devstack.ports import free_port
from devstack.processes import Service
from devstack.redis import RedisServer
from tests.samples import pdf_with_text
from unilingo import keys
from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message
from unilingo.settings import Settings

RESULTS = Path(__file__).parent / "results"
REPEATS = int(os.environ.get("BENCH_RECOVERY_REPEATS", "5"))
CELERY_REPEATS = int(os.environ.get("BENCH_RECOVERY_CELERY_REPEATS", "3"))
SLOW_S = 8.0  # added to every OpenAI call: a flashcards call takes ~8.5 s
LATENCY_SCALE = 0.05
CELERY_VISIBILITY_S = 30.0
LONG_PARTS = 6  # the long job: flashcards over six content parts, six calls: ~50 s
OBSERVE_S = 95.0  # how long the long job is watched: its run, and a redelivery's run
FLASHCARDS, PDFS = 4, 8
DEFAULTS = Settings(_env_file=None)
LEASE_S, HEARTBEAT_S = DEFAULTS.job_lease_seconds, DEFAULTS.job_heartbeat_seconds


def submit(store: JobStore, job_type: JobType, params: dict | None = None, upload: bytes | None = None) -> str:
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        type=job_type,
        status=JobStatus.QUEUED,
        owner="recovery-bench",
        params=params or {},
        created_at=now,
        updated_at=now,
    )
    message = task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id)
    store.create(NewJob(job=job, message=message, upload=upload))
    return job.job_id


def wait(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(p) for p in out}


class EventLog(threading.Thread):
    """Every job event (running, queued, succeeded, ...) with the time it was seen."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(keys.job_events("*"))
        self.pubsub.get_message(timeout=1)
        self.events: list[tuple[float, str, str]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                job_id = message["channel"].decode().split(":")[2]
                self.events.append((time.time(), job_id, message["data"].decode()))

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.pubsub.close()

    def of(self, job_id: str) -> list[tuple[float, str]]:
        return [(t, e) for t, j, e in self.events if j == job_id]


@dataclass
class Rep:
    interrupted: int
    recovery_s: float  # kill → the last interrupted job running again
    lost: int
    multi_writes: int
    per_job: list[float] = field(default_factory=list)


@dataclass
class LongJob:
    first_run_s: float
    executions: int
    writes: int


@dataclass
class Track:
    """One side: its own sandbox and Redis database, its runs one after the other."""

    name: str
    kind: str  # ours | celery
    db: int
    redis_url: str
    work: Path
    repeats: int
    sweep_s: float | None = None  # Celery: kombu's restore sweep; None = its default
    long_job: bool = True
    reps: list[Rep] = field(default_factory=list)
    long: LongJob | None = None
    error: str | None = None

    def __post_init__(self):
        self.url = self.redis_url.rsplit("/", 1)[0] + f"/{self.db}"
        self.client = redis.Redis.from_url(self.url)
        port = free_port()
        self.sandbox = Service.python(
            f"sandbox-{self.name}",
            "sandbox",
            port=port,
            log_dir=self.work,
            env={
                "SANDBOX_PORT": str(port),
                "SANDBOX_AWS_PORT": str(free_port()),
                "SANDBOX_LATENCY_SCALE": str(LATENCY_SCALE),
                "SANDBOX_LOG_LEVEL": "warning",
            },
        ).start()
        sandbox_url = f"http://127.0.0.1:{port}"
        httpx.post(
            f"{sandbox_url}/_sandbox/faults",
            json={"provider": "openai", "mode": "slow", "delay_s": SLOW_S, "duration_s": 7200},
        ).raise_for_status()
        self.env = {
            "REDIS_URL": self.url,
            "SANDBOX_PORT": str(port),
            "WORKER_LOG_LEVEL": "WARNING",
            "CACHE_ENABLED": "false",
            "WORKER_CONCURRENCY": "2",
        }
        self.pdf = pdf_with_text([f"Seite {n}: Der Hund schläft, die Katze spielt." for n in range(30)])
        self.seq = 0
        self.sender = Celery(f"sender-{self.name}", broker=self.url, set_as_current=False)

    def close(self) -> None:
        self.sandbox.stop()

    def cards(self, parts: int = 1) -> dict:
        self.seq += 1
        if parts == 1:
            return {"content": f"Recovery fact {self.seq}: the Danube flows through ten countries.", "count": 3}
        # Each part just under the handler's 6,000-character chunk: one call per part.
        paragraph = " ".join(
            f"Sentence {n} of part {{p}} in job {self.seq}: rivers carry water to the sea." for n in range(75)
        )
        return {"content": "\n".join(paragraph.format(p=p)[:5900] for p in range(parts)), "count": parts}

    # ------------------------------------------------------------------ processes

    def start_workers(self, n: int) -> list[Service]:
        if self.kind == "ours":
            module, env = "workers", {"WORKER_QUEUES": "ai,pdf"}
            ready = lambda: self.client.zcard(keys.workers_alive()) >= n  # noqa: E731
        else:
            from bench import celery_rate_limit as baseline

            module = "bench.celery_rate_limit"
            env = {"BENCH_VISIBILITY_TIMEOUT": str(CELERY_VISIBILITY_S)}
            if self.sweep_s:
                env["BENCH_RESTORE_SWEEP_S"] = str(self.sweep_s)
            ready = lambda: self.client.scard(baseline.READY) >= n  # noqa: E731
        services = [
            Service.python(f"{self.name}-{i}", module, env={**self.env, **env}, log_dir=self.work).start()
            for i in range(n)
        ]
        if not wait(ready, 120, 0.2):
            raise RuntimeError(
                f"{self.name}: workers did not become ready:\n" + "\n".join(s.log()[-2000:] for s in services)
            )
        time.sleep(1.0)
        return services

    def celery_send(self, count: int, parts: int = 1) -> list[str]:
        from bench import celery_rate_limit as baseline

        ids = [f"{self.name}-{self.seq}-{i}" for i in range(count)]
        for job_id in ids:
            self.sender.send_task("bench.flashcards", args=(job_id, self.cards(parts)), queue=baseline.QUEUE)
        return ids

    def entries(self, key: str) -> list[tuple[float, str, int]]:
        return [(float(t), j, int(p)) for t, j, p in (e.decode().split() for e in self.client.lrange(key, 0, -1))]

    # ------------------------------------------------------------------ one kill

    def once(self) -> Rep:
        self.client.flushdb()
        survivor, doomed = self.start_workers(2)
        try:
            return self._ours(doomed) if self.kind == "ours" else self._celery(doomed)
        finally:
            for service in (survivor, doomed):
                service.kill()
                service.process.wait()

    def _kill(self, doomed: Service) -> float:
        time.sleep(random.uniform(1.0, SLOW_S - 2.0))  # somewhere in the middle of the calls
        killed_at = time.time()
        doomed.kill()
        doomed.process.wait()
        return killed_at

    def _ours(self, doomed: Service) -> Rep:
        log = EventLog(self.url)
        log.start()
        store = JobStore(self.client)
        ids = [submit(store, JobType.PDF, upload=self.pdf) for _ in range(2)]
        cards = [submit(store, JobType.FLASHCARDS, self.cards()) for _ in range(FLASHCARDS)]
        ids += cards + [submit(store, JobType.PDF, upload=self.pdf) for _ in range(PDFS - 2)]
        if not wait(lambda: all(self.client.hget(keys.job(j), "status") == b"running" for j in cards), 60):
            raise RuntimeError("the flashcards jobs never all ran at once")
        killed_at = self._kill(doomed)
        wait(
            lambda: all(self.client.hget(keys.job(j), "status") in (b"succeeded", b"failed") for j in ids),
            LEASE_S + 120,
            0.2,
        )
        time.sleep(0.5)
        log.stop()
        per_job, lost, multi = [], 0, 0
        for job_id in ids:
            events = log.of(job_id)
            before = [e for t, e in events if t < killed_at]
            after = [(t, e) for t, e in events if t >= killed_at]
            # Interrupted: running at the kill, and what came next was a requeue, not a result.
            if before and before[-1] == "running" and after and after[0][1] == "queued":
                again = next((t for t, e in after if e == "running"), None)
                per_job.append((again - killed_at) if again else float("inf"))
            multi += sum(1 for _, e in events if e in ("succeeded", "failed")) > 1
            lost += self.client.hget(keys.job(job_id), "status") != b"succeeded"
        return Rep(len(per_job), max(per_job, default=float("nan")), lost, multi, per_job)

    def _celery(self, doomed: Service) -> Rep:
        from bench import celery_rate_limit as baseline

        doomed_pids = children(doomed.process.pid) | {doomed.process.pid}
        ids = self.celery_send(FLASHCARDS + 2)
        if not wait(lambda: len(self.entries(baseline.STARTS)) >= FLASHCARDS, 60):
            raise RuntimeError("the Celery tasks never all ran at once")
        killed_at = self._kill(doomed)
        starts = self.entries(baseline.STARTS)
        done_before = {j for t, j, _ in self.entries(baseline.DONE) if t < killed_at}
        interrupted = {j for t, j, p in starts if t < killed_at and p in doomed_pids and j not in done_before}
        wait(lambda: {j for _, j, _ in self.entries(baseline.DONE)} >= set(ids), CELERY_VISIBILITY_S + 180, 0.2)
        starts = self.entries(baseline.STARTS)
        per_job = [
            min((t for t, j, _ in starts if j == job_id and t >= killed_at), default=float("inf")) - killed_at
            for job_id in interrupted
        ]
        done = defaultdict(int)
        for _, j, _ in self.entries(baseline.DONE):
            done[j] += 1
        return Rep(
            len(per_job),
            max(per_job, default=float("nan")),
            sum(1 for j in ids if done[j] == 0),
            sum(1 for j in ids if done[j] > 1),
            per_job,
        )

    # ------------------------------------------------------------------ a long healthy job

    def long_run(self) -> LongJob:
        """One healthy job of LONG_PARTS calls (~50 s), watched for OBSERVE_S."""
        self.client.flushdb()
        (worker,) = self.start_workers(1)
        try:
            if self.kind == "ours":
                log = EventLog(self.url)
                log.start()
                job_id = submit(JobStore(self.client), JobType.FLASHCARDS, self.cards(LONG_PARTS))
                time.sleep(OBSERVE_S)
                log.stop()
                events = [e for _, e in log.of(job_id)]
                started, finished = self.client.hmget(keys.job(job_id), "started_at", "finished_at")
                ran = float(finished) - float(started) if finished else float("nan")
                return LongJob(ran, events.count("running"), events.count("succeeded") + events.count("failed"))
            from bench import celery_rate_limit as baseline

            self.celery_send(1, parts=LONG_PARTS)
            time.sleep(OBSERVE_S)
            starts, done = self.entries(baseline.STARTS), self.entries(baseline.DONE)
            return LongJob(done[0][0] - starts[0][0] if done else float("nan"), len(starts), len(done))
        finally:
            worker.kill()
            worker.process.wait()

    def run(self) -> None:
        try:
            for n in range(self.repeats):
                self.reps.append(self.once())
                r = self.reps[-1]
                print(
                    f"{self.name} {n + 1}: interrupted {r.interrupted}, recovery {r.recovery_s:.1f} s, lost {r.lost}, "
                    f"more than one write {r.multi_writes}",
                    flush=True,
                )
            if self.long_job:
                self.long = self.long_run()
                print(f"{self.name} long job: {self.long}", flush=True)
        except Exception:
            self.error = traceback.format_exc()
            print(f"{self.name} failed:\n{self.error}", flush=True)


def cells(track: Track) -> str:
    times = [r.recovery_s for r in track.reps if r.interrupted]
    median = f"{statistics.median(times):.1f}" if times else "—"
    worst = f"{max(times):.1f}" if times else "—"
    return (
        f"{len(track.reps)} | {sum(r.interrupted for r in track.reps)} | {median} | {worst} "
        f"| {sum(r.lost for r in track.reps)} | {sum(r.multi_writes for r in track.reps)}"
    )


def main() -> None:
    from workers.app import app as worker_app

    RESULTS.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    configured_visibility = worker_app.conf.broker_transport_options.get("visibility_timeout")
    work = Path(tempfile.mkdtemp(prefix="unilingo-recovery-"))
    server = RedisServer(workdir=work / "redis", fsync="everysec").start()
    tracks: list[Track] = []
    try:
        tracks = [
            Track("ours", "ours", 0, server.url, work, REPEATS),
            Track("celery", "celery", 1, server.url, work, CELERY_REPEATS, long_job=False),
            Track("celery-swept", "celery", 2, server.url, work, CELERY_REPEATS, sweep_s=1.0),
        ]
        threads = [threading.Thread(target=t.run) for t in tracks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for track in tracks:
            track.close()
        server.stop()
    failed = [t for t in tracks if t.error]
    if failed:
        raise RuntimeError(
            "recovery benchmark failed: " + "; ".join(f"{t.name}: {t.error.splitlines()[-1]}" for t in failed)
        )
    ours, celery, swept = tracks

    def runs(track: Track) -> str:
        return ", ".join(f"{r.recovery_s:.1f}" for r in track.reps)

    def long_row(label: str, track: Track) -> str:
        j = track.long
        return f"| {label} | {j.first_run_s:.1f} | {j.executions} | {j.writes} |"

    lines = [
        "# Recovery after a worker is SIGKILLed",
        "",
        f"Two worker processes (concurrency 2), a backlog of {PDFS} PDF jobs (30 pages, pypdf) and {FLASHCARDS} "
        "flashcards "
        f"jobs, OpenAI slowed by a sandbox fault (+{SLOW_S:g} s a call). When all four pool slots run flashcards "
        "calls, "
        "one worker is SIGKILLed with its pool children (the whole process group) at a random moment 1–6 s into the "
        "calls. Recovery: from the kill until every interrupted job is running again on the other worker (ours: job "
        "events on Redis pub/sub; Celery: task starts it records). Lost: jobs that never succeed. Result writes: "
        "ours, `succeeded`/`failed` announcements per job, which only the holder of the current fencing token can "
        "make; Celery, completed executions per task. The three sides run at the same time, each on its own sandbox "
        "and Redis database.",
        "",
        "| side | redelivery | runs | jobs interrupted (all runs) | recovery median s | recovery worst s "
        "| jobs lost | jobs with > 1 result write |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| ours | job lease {LEASE_S:g} s renewed every {HEARTBEAT_S:g} s (the defaults); any worker's housekeeping "
        f"loop requeues a lapsed job | {cells(ours)} |",
        f"| Celery alone, `visibility_timeout` {CELERY_VISIBILITY_S:g} s, kombu's default sweep | unacked messages "
        "restored "
        f"{CELERY_VISIBILITY_S:g} s after delivery, found by a sweep every ~100 s | {cells(celery)} |",
        f"| Celery alone, `visibility_timeout` {CELERY_VISIBILITY_S:g} s, sweep every 1 s | the same, found within 1 s "
        f"| {cells(swept)} |",
        f"| Celery alone, `visibility_timeout` as the workers' app sets it ({configured_visibility:g} s) | the same "
        f"| not run | | ≥ {configured_visibility:g} − time already run | | | |",
        "",
        f"Per run, seconds from the kill to the last interrupted job running again: ours {runs(ours)}; Celery, default "
        f"sweep {runs(celery)}; Celery, 1 s sweep {runs(swept)}.",
        "",
        "## A healthy job longer than Celery's visibility timeout",
        "",
        f"One flashcards job over {LONG_PARTS} content parts ({LONG_PARTS} calls of ~{SLOW_S + 0.5:g} s), one worker, "
        f"no kill, watched for {OBSERVE_S:g} s.",
        "",
        "| side | first execution took s | executions started | result writes |",
        "|---|---:|---:|---:|",
        long_row(
            f"ours (lease {LEASE_S:g} s renewed every {HEARTBEAT_S:g} s; visibility {configured_visibility:g} s)", ours
        ),
        long_row(f"Celery alone, `visibility_timeout` {CELERY_VISIBILITY_S:g} s, sweep every 1 s", swept),
        "",
        "Notes:",
        "",
        f"- Our recovery is bounded by the lease: it runs {LEASE_S:g} s from the job's last heartbeat (every "
        f"{HEARTBEAT_S:g} s), so the wait after a kill lies between {LEASE_S - HEARTBEAT_S:g} and {LEASE_S:g} s, "
        "plus the "
        "housekeeping tick (0.25 s) and the redelivery. `JOB_LEASE_SECONDS` and `JOB_HEARTBEAT_SECONDS` trade recovery "
        "time against heartbeat traffic; how long jobs run does not enter into it.",
        "- Celery alone can only recover through `visibility_timeout`, counted from delivery whatever the job is "
        "doing. "
        "Short, it redelivers healthy jobs that run longer (the second table: the job runs again while it is still "
        f"running, and writes its result twice). So it must exceed the longest job: the workers' app sets "
        f"{configured_visibility:g} s (`workers.app.app.conf.broker_transport_options`, 2 × `JOB_TIMEOUT_SECONDS` + "
        f"600), with which a killed worker's jobs would wait ~{configured_visibility / 60:g} min. In ours that "
        f"message also comes back after {configured_visibility:g} s; its delivery finds the job finished and does "
        "nothing. "
        "kombu also only looks for expired messages every `unacked_restore_interval` (10 s) × "
        "`unacked_restore_throttle` (10), unless tuned.",
        "- The workers' own claim refuses a job whose record says `running` under a live lease, so \"our app with the "
        'lease disabled" cannot be measured without code changes outside the benchmark; the baseline is the plain '
        "Celery app in `bench/celery_rate_limit.py`, which runs the same flashcards handler (acks_late, prefetch 1).",
        "- 2 shared cores; read the figures as indicative.",
        "",
        f"Benchmark time: {(time.monotonic() - began) / 60:.1f} min.",
    ]
    (RESULTS / "recovery.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
