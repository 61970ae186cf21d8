"""Limits learned from the provider against a fixed policy at the wrong figure, in one run.

The sandbox plays an OpenAI account allowed 30 requests a minute (``POST /_sandbox/quotas``)
while the policy says 50, Unilingo v1's figure: what a platform engineer types for an account
on a lower usage tier, or for a key another system also spends. Four worker processes (two
pool processes each) work through a backlog of flashcards jobs for ``BENCH_MINUTES`` minutes
(default 3), latencies at ×0.05 so that the quota binds. Sides, each on a freshly reset
sandbox and an empty Redis:

- **adaptive**: the policy at 50 with ``adaptive: true``: the workers read the account's
  ``x-ratelimit-limit-requests`` (30) from the answers and hold every permit to it;
- **fixed**: the same policy without ``adaptive``: permits at 50 a minute, so the account
  answers 429 past 30, each 429 pauses the provider for everyone (its ``Retry-After``) and
  feeds the breaker.

Measured from the sandbox's per-second timeline over [backlog queued, + N min): requests it
accepted ÷ (30 × N), 429s it sent, the most accepted in any rolling 60 s, the breaker's trips,
and jobs completed within the window. Figures, never assertions.

    BENCH_MINUTES=3 python -m bench.adaptive_bench

Writes ``bench/results/adaptive.md``.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.quota_use_bench import CONCURRENCY, LATENCY_SCALE, MINUTES, WORKERS, Bench, job_params, rolling_max, submit
from bench.quota_use_bench import window_counts as per_second_counts
from unilingo import keys
from unilingo.jobs import JobStore
from unilingo.limiter import Limiter
from unilingo.policy import PolicyStore, ProviderPolicy

RESULTS = Path(__file__).parent / "results"
ACCOUNT_RPM = 30  # what the played account allows
POLICY_RPM = 50  # what the policy says: Unilingo v1's figure


@dataclass
class SideResult:
    side: str
    accepted: int
    rejected_429: int
    max_accepted_60s: int
    breaker_trips: int
    completed: int
    failed: int
    backlog: int
    effective_rpm: int


def run_side(bench: Bench, adaptive: bool) -> SideResult:
    bench.fresh()
    httpx.post(
        f"{bench.sandbox_url}/_sandbox/quotas", json={"provider": "openai", "requests_per_minute": ACCOUNT_RPM}
    ).raise_for_status()
    PolicyStore(bench.client).write(
        ProviderPolicy(provider="openai", requests_per_minute=POLICY_RPM, adaptive=adaptive)
    )
    backlog = math.ceil(ACCOUNT_RPM * MINUTES * 1.3) + 20
    window = round(MINUTES * 60)
    services = bench.start_workers(WORKERS, "workers", WORKER_QUEUES="ai")
    store = JobStore(bench.client)
    start = time.time()
    ids = [submit(store, job_params(i)) for i in range(backlog)]
    end = start + window
    time.sleep(max(0.0, end - time.time()) + 1.5)  # +1.5 s: the last second is complete in the stats
    stats = bench.stats()
    status = Limiter(bench.client).status("openai")
    pipe = bench.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), "status", "finished_at")
    rows = pipe.execute()
    bench.kill(services)
    first = int(start)
    sent, accepted = per_second_counts(stats, first, first + window)
    return SideResult(
        side="adaptive" if adaptive else "fixed",
        accepted=sum(accepted.values()),
        rejected_429=sum(sent.values()) - sum(accepted.values()),
        max_accepted_60s=rolling_max(accepted, first, first + window),
        breaker_trips=status.breaker_trips,
        completed=sum(1 for state, finished in rows if state == b"succeeded" and float(finished) < end),
        failed=sum(1 for state, _ in rows if state == b"failed"),
        backlog=backlog,
        effective_rpm=status.effective.requests_per_minute,
    )


def table(results: list[SideResult], elapsed: float) -> list[str]:
    quota = ACCOUNT_RPM * MINUTES
    lines = [
        "# Limits learned from the provider against a fixed policy at the wrong figure",
        "",
        f"The sandbox plays an OpenAI account allowed {ACCOUNT_RPM} requests a minute; the policy says {POLICY_RPM}. "
        f"{WORKERS} × `python -m workers` (concurrency {CONCURRENCY}), latencies ×{LATENCY_SCALE}, a backlog of "
        f"flashcards jobs, {MINUTES:g} min per side, each on a reset sandbox and an empty Redis. Counted from the "
        f"sandbox's per-second timeline over [backlog queued, +{MINUTES:g} min); the account allows {quota:g} "
        "requests in it.",
        "",
        "| side | permits held to | accepted by the provider | share of the account's quota | 429s received "
        "| max accepted in any 60 s | breaker trips | jobs completed | jobs failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.side} | {r.effective_rpm}/min | {r.accepted} | {100 * r.accepted / quota:.1f} % | {r.rejected_429} "
            f"| {r.max_accepted_60s} | {r.breaker_trips} | {r.completed}/{r.backlog} | {r.failed} |"
        )
    lines += [
        "",
        "Notes:",
        "",
        "- adaptive: the first answer's `x-ratelimit-limit-requests: 30` reaches Redis before that call's permit "
        "is released, so only the calls already granted before it (at most `maxInFlight`, 5) were granted under "
        "the policy's 50; every later permit of every worker is held to 30 (and the burst to at most 30). The "
        "limiter keeps each call in its window 2 s longer than 60 s, so a long run uses about 30 per 62 s.",
        "- fixed: past 30 in the account's minute every call is a 429. Each 429 pauses the provider for everyone "
        "until its `Retry-After`, and five failures in a row (429s count) open the breaker for 60 s: the quota "
        "goes unused while the breaker is open, and calls released at once when a pause ends meet 429s again.",
        "- No job fails on either side: a 429 defers the job, its attempt kept.",
        "- 2 shared cores; one run per side: read the figures as indicative.",
        "",
        f"Total benchmark time: {elapsed / 60:.1f} min.",
    ]
    return lines


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    bench = Bench(Path(tempfile.mkdtemp(prefix="unilingo-adaptive-bench-")))
    results = []
    try:
        for adaptive in (True, False):
            print(f"-- {'adaptive' if adaptive else 'fixed'}: {MINUTES:g} min", flush=True)
            results.append(run_side(bench, adaptive))
            r = results[-1]
            print(f"   accepted {r.accepted}, 429s {r.rejected_429}, completed {r.completed}", flush=True)
    finally:
        bench.close()
    lines = table(results, time.monotonic() - began)
    (RESULTS / "adaptive.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
