"""Unilingo v1's failure scenarios 1 and 3: what a user sees with v1 and with v2, in one run.

Scenario 1, "OpenAI rate limit hit" (Unilingo v1: 50 requests in 1 minute → 429; the circuit
breaker opens after 5 failures; all AI requests blocked for 60 s; users see "Rate limit
exceeded"). Load: 75 flashcards requests spread evenly over the first minute (1.5× the
quota), then 10 more over the next 40 s, when the provider's minute has room again.

- v1: Unilingo v1's design, a copy of ``bench/v1_inline.py`` extended with Unilingo v1's in-memory
  circuit breaker (5 consecutive failures, open 60 s, then one trial call): the provider call
  inline in the request behind one sequential OpenAI queue, no retry.
- v2: the real API (202 with a job id) and two real worker processes taking the shared
  permits (the policy's defaults: 50/min, burst 10, 5 in flight, breaker 5 failures / 60 s);
  a job without a permit waits in Redis.

Scenario 3, "Azure Speech overload" (Unilingo v1: 25 pronunciation requests at once, 20 processed,
5 wait). Azure Speech in the sandbox at its real latency (2-10 s) and cap (20 concurrent,
429 beyond). 25 requests at t = 0.

- v1: the provider call inline behind an in-memory semaphore of 20, as Unilingo v1's Azure
  queue; also two such instances behind a load balancer (each with its own 20).
- v2, permits alone: the sandbox's Azure Speech REST endpoint called directly through the
  permits (``unilingo.limiter.Limiter``, the ``azure-speech`` policy: 20 in flight) from a
  small pool of processes; a caller refused a permit waits the ``retry_after`` it is given.
- v2, the job path, when pronunciation jobs are available
  (``WORKLOADS[PRONUNCIATION].available``; ``BENCH_SPEECH_VIA=jobs|permits`` forces either):
  through the API and speech workers (the Speech SDK) under the same 20 in flight. The
  table says which ran.

Reported per side: failed requests, time to answer (v1) / to the 202 (v2), time to the
result, the provider's 429s. Figures only, never assertions.

    python -m bench.scenarios_bench            # the benchmark
    python -m bench.scenarios_bench serve-v1   # (internal) the v1 server, V1_PORT

Writes ``bench/results/scenarios.md``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from devstack.ports import free_port
from devstack.processes import Service
from devstack.redis import RedisServer
from unilingo import keys
from unilingo.jobs import WORKLOADS, JobType
from unilingo.policy import default_policy

RESULTS = Path(__file__).parent / "results"
AI_LATENCY_SCALE = 0.02  # OpenAI's 5-30 s become 0.1-0.6 s: a sequential v1 can outrun the quota
SPEECH_LATENCY_SCALE = 1.0  # Azure Speech at its real 2-10 s (Unilingo v1's figure): the cap is what matters
SPEECH_PATH = "/speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed"
REFERENCE = "good morning my friend thank you for the water"
S1_FIRST_MINUTE, S1_AFTER, S1_AFTER_SPAN = 75, 10, 40.0
S3_REQUESTS = 25
PERMIT_PROCESSES = 3
PERMIT_CONNECTIONS = 16  # per process: above its share of the requests


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def fmt(value: float) -> str:
    return "—" if value != value else f"{value:.2f}"  # NaN → dash


# ============================================================================ the v1 server
# A copy of bench/v1_inline.py (Unilingo v1's design), extended with Unilingo v1's in-memory
# circuit breaker and its Azure Speech queue (parallel, max 20 concurrent).


class V1Breaker:
    """Unilingo v1's breaker: 5 consecutive failures open it for 60 s, then one trial call."""

    def __init__(self, threshold: int = 5, open_seconds: float = 60.0):
        self.threshold, self.open_seconds = threshold, open_seconds
        self.failures, self.opened_at, self.trial = 0, None, False
        self.events: list[tuple[str, float]] = []  # ("open"|"close", unix time)

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.open_seconds and not self.trial:
            self.trial = True  # half-open: this call is the trial
            return True
        return False

    def success(self) -> None:
        if self.opened_at is not None:
            self.events.append(("close", time.time()))
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.threshold:
            self.failures, self.opened_at, self.trial = 0, time.monotonic(), False
            self.events.append(("open", time.time()))


class FlashcardsRequest(BaseModel):
    content: str
    count: int = 10


def create_v1_app() -> FastAPI:
    import openai

    from unilingo.settings import get_settings
    from workers.handlers.ai import CardSet
    from workers.providers.openai_chat import _strict_schema

    app = FastAPI()
    openai_queue = asyncio.Lock()  # Unilingo v1: "OpenAI: Sequential (1 at a time)"
    openai_breaker = V1Breaker()
    speech_slots = asyncio.Semaphore(20)  # Unilingo v1: Azure Speech "Parallel (max 20 concurrent)"
    speech_breaker = V1Breaker()
    ai = openai.AsyncOpenAI(base_url=get_settings().openai_endpoint(), api_key="sandbox", max_retries=0)
    speech_url = os.environ["V1_SPEECH_URL"] + SPEECH_PATH
    speech = httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200))

    def refused(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.post("/v1/generate-flashcards")
    async def generate(body: FlashcardsRequest):
        async with openai_queue:
            if not openai_breaker.allow():
                return refused(503, "AI service temporarily unavailable (circuit open). Try again later.")
            try:
                response = await ai.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[
                        {"role": "user", "content": f"Write exactly {body.count} flashcards from:\n\n{body.content}"}
                    ],
                    max_tokens=800,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "flashcards", "schema": _strict_schema(CardSet), "strict": True},
                    },
                )
            except openai.RateLimitError:
                openai_breaker.failure()
                return refused(429, "Rate limit exceeded. Try again later.")
            except openai.APIError as exc:
                openai_breaker.failure()
                return refused(502, f"AI provider error: {exc}")
            openai_breaker.success()
        return CardSet.model_validate_json(response.choices[0].message.content).model_dump()

    @app.post("/v1/pronunciation")
    async def pronunciation(request: Request):
        audio = await request.body()
        header = base64.b64encode(
            json.dumps(
                {
                    "ReferenceText": request.headers["x-reference-text"],
                    "GradingSystem": "HundredMark",
                    "Granularity": "Phoneme",
                }
            ).encode()
        ).decode()
        async with speech_slots:
            if not speech_breaker.allow():
                return refused(503, "Speech service temporarily unavailable (circuit open). Try again later.")
            try:
                r = await speech.post(
                    speech_url,
                    content=audio,
                    headers={
                        "Ocp-Apim-Subscription-Key": "sandbox",
                        "Pronunciation-Assessment": header,
                        "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
                    },
                )
            except httpx.HTTPError as exc:
                speech_breaker.failure()
                return refused(502, f"Speech provider unreachable: {exc}")
        if r.status_code == 429:
            speech_breaker.failure()
            return refused(429, "Too many requests. Try again later.")
        if r.status_code >= 500:
            speech_breaker.failure()
            return refused(502, "Speech provider error")
        speech_breaker.success()
        return JSONResponse(r.json(), status_code=r.status_code)

    @app.get("/v1/status")
    async def status():
        return {"openai_breaker": openai_breaker.events, "speech_breaker": speech_breaker.events}

    return app


def serve_v1() -> None:
    import uvicorn

    uvicorn.run(create_v1_app(), host="127.0.0.1", port=int(os.environ["V1_PORT"]), log_level="warning")


# ============================================================================ inputs


def speech_wav(seconds: float, rate: int = 16_000) -> bytes:
    """Tone bursts with short gaps: voice to the sandbox's loudness meter."""
    samples = array("h", [0] * int(0.2 * rate))
    t = 0.0
    while t < seconds:
        freq = 180 + 40 * (len(samples) % 7)
        samples.extend(int(6000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(int(0.25 * rate)))
        samples.extend([0] * int(0.06 * rate))
        t += 0.31
    samples.extend([0] * int(0.2 * rate))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def recordings() -> list[bytes]:
    # 2.5-4.5 s each: Azure's latency in the sandbox is ~2 s + half the audio, so 3.3-4.8 s.
    return [speech_wav(2.5 + 2.0 * (i % 9) / 8) for i in range(S3_REQUESTS)]


def flashcards_body(i: int) -> dict:
    return {"content": f"Scenario fact {i}: the Rhine is {1200 + i} km long and flows into the North Sea.", "count": 5}


def scenario1_offsets() -> list[float]:
    first = [60.0 * i / S1_FIRST_MINUTE for i in range(S1_FIRST_MINUTE)]
    after = [60.0 + S1_AFTER_SPAN * i / S1_AFTER for i in range(S1_AFTER)]
    return first + after


# ============================================================================ load


@dataclass
class Outcome:
    index: int
    offset: float  # scheduled arrival, seconds from the start
    sent_at: float  # unix time
    status: int
    answered_s: float  # time to the HTTP answer
    job_id: str | None = None
    result_s: float | None = None  # time to the result (None: no result)
    run_s: float | None = None  # v2 jobs: from the (last) claim to the result


async def fire(url: str, offsets: list[float], body_for, headers_for=None) -> list[Outcome]:
    start = time.time() + 0.5
    async with httpx.AsyncClient(
        timeout=600, limits=httpx.Limits(max_connections=500, max_keepalive_connections=100)
    ) as client:

        async def one(i: int, offset: float) -> Outcome:
            await asyncio.sleep(max(0.0, start + offset - time.time()))
            sent = time.time()
            r = await client.post(url, json=body_for(i), headers=headers_for(i) if headers_for else None)
            answered = time.time() - sent
            job_id = r.json().get("job_id") if r.status_code == 202 else None
            result = answered if r.status_code == 200 else None
            return Outcome(i, offset, sent, r.status_code, answered, job_id, result)

        return list(await asyncio.gather(*(one(i, o) for i, o in enumerate(offsets))))


def wait_for_jobs(client: redis.Redis, outcomes: list[Outcome], timeout: float = 400) -> None:
    """Fill in ``result_s`` of accepted jobs from their records (finished_at − sent)."""
    pending = [o for o in outcomes if o.job_id]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for o in pending:
            pipe.hmget(keys.job(o.job_id), "status", "finished_at", "started_at")
        still = []
        for o, (status, finished, started) in zip(pending, pipe.execute(), strict=True):
            if status == b"succeeded":
                o.result_s = float(finished) - o.sent_at
                o.run_s = float(finished) - float(started)
            elif status in (b"failed", b"cancelled"):
                o.status = -1  # accepted, then failed
            else:
                still.append(o)
        pending = still
        if pending:
            time.sleep(0.2)
    for o in pending:
        o.status = -2  # not finished within the timeout


def sandbox_stats(url: str, provider: str) -> dict:
    return httpx.get(f"{url}/_sandbox/stats").json()[provider]


def reset(url: str) -> None:
    httpx.post(f"{url}/_sandbox/reset").raise_for_status()


# ============================================================================ v2 speech through permits


def _permit_caller(redis_url: str, speech_url: str, indexes: list[int], start: float, out) -> None:
    """One process of the pool: a thread per request, each takes a permit before calling."""
    from unilingo.limiter import Limiter

    limiter = Limiter(redis.Redis.from_url(redis_url, max_connections=PERMIT_CONNECTIONS))
    audio = recordings()
    http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=PERMIT_CONNECTIONS))
    header = base64.b64encode(
        json.dumps({"ReferenceText": REFERENCE, "GradingSystem": "HundredMark", "Granularity": "Phoneme"}).encode()
    ).decode()

    def one(i: int) -> None:
        time.sleep(max(0.0, start - time.time()))
        deferrals = 0
        while True:
            decision = limiter.acquire("azure-speech", holder=f"speech-{i}")
            if not decision.granted:
                deferrals += 1
                time.sleep(decision.retry_after)  # the job would wait in Redis this long
                continue
            try:
                r = http.post(
                    speech_url + SPEECH_PATH,
                    content=audio[i],
                    headers={
                        "Ocp-Apim-Subscription-Key": "sandbox",
                        "Pronunciation-Assessment": header,
                        "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
                    },
                )
            except httpx.HTTPError:
                limiter.release("azure-speech", decision.lease_id, "error")
                continue
            if r.status_code == 429:
                limiter.release(
                    "azure-speech", decision.lease_id, "throttled", retry_after=float(r.headers.get("retry-after", 1))
                )
                continue
            limiter.release("azure-speech", decision.lease_id, "error" if r.status_code >= 500 else "success")
            if r.status_code >= 500:
                continue
            out.put((i, time.time() - start, r.status_code, deferrals))
            return

    threads = [threading.Thread(target=one, args=(i,)) for i in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def speech_via_permits(redis_url: str, speech_url: str) -> list[Outcome]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 4.0  # the pool imports and connects first
    shares = [list(range(p, S3_REQUESTS, PERMIT_PROCESSES)) for p in range(PERMIT_PROCESSES)]
    procs = [ctx.Process(target=_permit_caller, args=(redis_url, speech_url, share, start, out)) for share in shares]
    for p in procs:
        p.start()
    rows = [out.get(timeout=300) for _ in range(S3_REQUESTS)]
    for p in procs:
        p.join()
    return [
        Outcome(i, 0.0, start, status, float("nan"), None, elapsed if status == 200 else None)
        for i, elapsed, status, _ in sorted(rows)
    ]


def speech_via_jobs(api_url: str, client: redis.Redis) -> list[Outcome]:
    from unilingo.tokens import mint

    audio = recordings()
    tokens = [mint(f"speech-user-{i}") for i in range(S3_REQUESTS)]

    async def go() -> list[Outcome]:
        start = time.time() + 0.5
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as http:

            async def one(i: int) -> Outcome:
                await asyncio.sleep(max(0.0, start - time.time()))
                sent = time.time()
                r = await http.post(
                    f"{api_url}/api/pronunciation-assess",
                    headers={"Authorization": f"Bearer {tokens[i]}"},
                    data={"reference_text": REFERENCE, "language": "en-US"},
                    files={"audio": (f"r{i}.wav", audio[i], "audio/wav")},
                )
                job_id = r.json().get("job_id") if r.status_code == 202 else None
                return Outcome(i, 0.0, sent, r.status_code, time.time() - sent, job_id)

            return list(await asyncio.gather(*(one(i) for i in range(S3_REQUESTS))))

    outcomes = asyncio.run(go())
    wait_for_jobs(client, outcomes, timeout=180)
    broken(outcomes, "speech jobs")
    return outcomes


def broken(outcomes: list[Outcome], what: str) -> None:
    """Not one result: the run is broken (a crashed worker), not slow; fail loudly."""
    if outcomes and not any(o.result_s is not None for o in outcomes):
        raise RuntimeError(
            f"{what}: not one of {len(outcomes)} requests got a result (statuses "
            f"{sorted({o.status for o in outcomes})}); see the service logs"
        )


# ============================================================================ the benchmark


@dataclass
class Row:
    side: str
    outcomes: list[Outcome]
    provider: dict

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.result_s is None)

    def answers(self) -> list[float]:
        return [o.answered_s for o in self.outcomes if o.answered_s == o.answered_s]

    def results(self) -> list[float]:
        return [o.result_s for o in self.outcomes if o.result_s is not None]


def row_line(row: Row) -> str:
    answers, results = row.answers(), row.results()
    return (
        f"| {row.side} | {len(row.outcomes)} | {row.failed} | {fmt(pct(answers, 0.5))} | {fmt(pct(answers, 0.95))} "
        f"| {fmt(pct(results, 0.5))} | {fmt(pct(results, 0.95))} | {fmt(max(results) if results else float('nan'))} "
        f"| {row.provider['rejected_429']} | {row.provider['peak_concurrency']} |"
    )


HEADER = [
    "| side | requests | failed (user saw an error) | answer p50 s | answer p95 s | result p50 s | result p95 s "
    "| last result s | provider 429s | provider peak concurrency |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def breaker_story(events: list, start: float) -> str:
    if not events:
        return "never opened"
    return ", ".join(f"{kind} at t={t - start:.0f} s" for kind, t in events)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="unilingo-scenarios-"))
    redis_server = RedisServer(workdir=work / "redis", fsync="everysec").start()
    client = redis.Redis.from_url(redis_server.url)
    ai_port, speech_port, api_port = free_port(), free_port(), free_port()
    ai_url, speech_url, api_url = (f"http://127.0.0.1:{p}" for p in (ai_port, speech_port, api_port))
    services: list[Service] = []

    def start(service: Service) -> Service:
        services.append(service.start())
        return service

    sandbox_env = {"SANDBOX_AWS_PORT": str(free_port()), "SANDBOX_LOG_LEVEL": "warning"}
    start(
        Service.python(
            "sandbox-ai",
            "sandbox",
            port=ai_port,
            log_dir=work,
            env={**sandbox_env, "SANDBOX_PORT": str(ai_port), "SANDBOX_LATENCY_SCALE": str(AI_LATENCY_SCALE)},
        )
    )
    start(
        Service.python(
            "sandbox-speech",
            "sandbox",
            port=speech_port,
            log_dir=work,
            env={
                "SANDBOX_AWS_PORT": str(free_port()),
                "SANDBOX_LOG_LEVEL": "warning",
                "SANDBOX_PORT": str(speech_port),
                "SANDBOX_LATENCY_SCALE": str(SPEECH_LATENCY_SCALE),
            },
        )
    )
    v1_ports = [free_port(), free_port()]
    v1_env = {"SANDBOX_PORT": str(ai_port), "V1_SPEECH_URL": speech_url}
    for n, port in enumerate(v1_ports):
        start(
            Service.python(
                f"v1-{n}",
                "bench.scenarios_bench",
                "serve-v1",
                port=port,
                log_dir=work,
                env={**v1_env, "V1_PORT": str(port)},
            )
        )
    v1_urls = [f"http://127.0.0.1:{p}" for p in v1_ports]
    common = {"REDIS_URL": redis_server.url, "WORKER_LOG_LEVEL": "WARNING", "CACHE_ENABLED": "false"}
    # Generous client quotas: the scenarios are about the provider, not the API's own limits.
    start(
        Service.python(
            "api",
            "api",
            port=api_port,
            log_dir=work,
            env={
                **common,
                "API_PORT": str(api_port),
                "SANDBOX_PORT": str(ai_port),
                "QUOTA_IP": "100000/1m",
                "QUOTA_USER_AI": "100000/1h",
                "QUOTA_USER_PRONUNCIATION": "100000/1h",
            },
        )
    )
    from unilingo.tokens import mint

    ai_policy = default_policy("openai")
    lines = ["# Unilingo v1's failure scenarios, v1 against v2", ""]
    try:
        # ---------------------------------------------------------------- scenario 1, v1
        offsets = scenario1_offsets()
        reset(ai_url)
        v1 = asyncio.run(fire(f"{v1_urls[0]}/v1/generate-flashcards", offsets, flashcards_body))
        v1_row = Row(
            "v1: inline, one sequential queue, in-memory breaker (5 failures → open 60 s)",
            v1,
            sandbox_stats(ai_url, "openai"),
        )
        v1_events = httpx.get(f"{v1_urls[0]}/v1/status").json()["openai_breaker"]
        v1_start = min(o.sent_at for o in v1)
        print(f"scenario 1 v1: failed {v1_row.failed}/{len(v1)}", flush=True)

        # ---------------------------------------------------------------- scenario 1, v2
        reset(ai_url)
        alive_before = client.zcard(keys.workers_alive())
        for n in range(2):
            start(
                Service.python(
                    f"ai-worker-{n}",
                    "workers",
                    log_dir=work,
                    env={**common, "SANDBOX_PORT": str(ai_port), "WORKER_QUEUES": "ai", "WORKER_CONCURRENCY": "3"},
                )
            )
        deadline = time.monotonic() + 90
        while client.zcard(keys.workers_alive()) < alive_before + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        reset(ai_url)
        tokens = [mint(f"s1-user-{i}") for i in range(len(offsets))]
        v2 = asyncio.run(
            fire(
                f"{api_url}/api/ai/generate-flashcards",
                offsets,
                lambda i: flashcards_body(1000 + i),
                headers_for=lambda i: {"Authorization": f"Bearer {tokens[i]}"},
            )
        )
        wait_for_jobs(client, v2)
        broken(v2, "scenario 1, v2")
        from unilingo.limiter import Limiter

        v2_status = Limiter(client).status("openai")
        v2_row = Row("v2: 202 + job; 2 workers × 3, shared permits", v2, sandbox_stats(ai_url, "openai"))
        print(f"scenario 1 v2: failed {v2_row.failed}/{len(v2)}", flush=True)
        for service in services[-2:]:
            service.stop()

        def late_failed(row: Row) -> str:
            late = [o for o in row.outcomes if o.offset >= 60.0]
            return f"{sum(1 for o in late if o.result_s is None)}/{len(late)}"

        lines += [
            "## Scenario 1: OpenAI rate limit hit",
            "",
            f"{S1_FIRST_MINUTE} flashcards requests spread evenly over the first minute (the quota is "
            f"{ai_policy.requests_per_minute}), "
            f"then {S1_AFTER} more over the next {S1_AFTER_SPAN:.0f} s, when the provider's rolling minute has room "
            "again. "
            f"OpenAI in the sandbox at Unilingo v1's quota, latencies ×{AI_LATENCY_SCALE} (0.1–0.6 s a call), "
            "so that a sequential v1 can outrun the quota as Unilingo v1's report describes. "
            "Answer: the HTTP response (v1: the cards or an error; v2: the 202). Result: the cards "
            "(v1: the same response; v2: the job's `finished_at` minus the moment the request was sent). "
            "Failed: no cards, ever (v1: 429/503 to the user; v2: a job ending `failed`).",
            "",
            *HEADER,
            row_line(v1_row),
            row_line(v2_row),
            "",
            f"- v1's breaker: {breaker_story(v1_events, v1_start)}. Requests arriving after t = 60 s, when the "
            f"provider had room again, that still failed: v1 {late_failed(v1_row)}, v2 {late_failed(v2_row)}.",
            f"- v2's shared breaker opened {v2_status.breaker_trips} times; jobs over the quota waited in Redis "
            "(deferred, their attempts not spent) and ran when a permit was due. The policy's burst "
            f"({ai_policy.burst} calls in any {60 * ai_policy.burst / ai_policy.requests_per_minute:g} s) paces "
            "calls at "
            f"{ai_policy.requests_per_minute}/min from the first second, so with arrivals at 75/min results lag "
            "arrivals from the start: that, not failures, is v2's price here (result p50/p95).",
            "",
        ]

        # ---------------------------------------------------------------- scenario 3
        audio = recordings()

        def speech_fire(urls: list[str]) -> list[Outcome]:
            reset(speech_url)
            return _fire_split(urls, audio)

        v1_one = Row(
            "v1: inline, semaphore of 20 (one instance)",
            speech_fire(v1_urls[:1]),
            sandbox_stats(speech_url, "azure-speech"),
        )
        v1_two = Row(
            "v1: two instances, each its own semaphore of 20 (requests alternate)",
            speech_fire(v1_urls),
            sandbox_stats(speech_url, "azure-speech"),
        )
        print(f"scenario 3 v1: failed {v1_one.failed} / two instances {v1_two.failed}", flush=True)
        reset(speech_url)
        speech_policy = default_policy("azure-speech")
        via = os.environ.get("BENCH_SPEECH_VIA", "auto")  # auto | jobs | permits
        available = WORKLOADS[JobType.PRONUNCIATION].available
        v2_rows = []
        v2_rows.append(
            Row(
                f"v2 permits alone, no job queue: {PERMIT_PROCESSES} processes (a thread per request) call the REST "
                f"endpoint through `Limiter` (cap {speech_policy.max_in_flight} in flight)",
                speech_via_permits(redis_server.url, speech_url),
                sandbox_stats(speech_url, "azure-speech"),
            )
        )
        permits_note = (
            '"v2 permits alone" calls the sandbox\'s Azure Speech REST endpoint directly through the shared permits '
            f"(`unilingo.limiter.Limiter`, the `azure-speech` policy: {speech_policy.max_in_flight} in flight) from "
            f"{PERMIT_PROCESSES} processes; a caller refused a permit sleeps the `retry_after` it is given, as a "
            "deferred "
            "job would wait. It has no 202 (answer: —); its result times run from t = 0."
        )
        if via == "jobs" or (via == "auto" and available):
            alive_before = client.zcard(keys.workers_alive())
            for n in range(2):
                start(
                    Service.python(
                        f"speech-worker-{n}",
                        "workers",
                        log_dir=work,
                        env={
                            **common,
                            "SANDBOX_PORT": str(speech_port),
                            "WORKER_QUEUES": "speech",
                            "WORKER_CONCURRENCY": "13",
                        },
                    )
                )
            deadline = time.monotonic() + 120
            while client.zcard(keys.workers_alive()) < alive_before + 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.0)
            reset(speech_url)
            v2_rows.append(
                Row(
                    "v2: 202 + job through the API; 2 speech workers × 13 (Speech SDK), shared cap of "
                    f"{speech_policy.max_in_flight} in flight",
                    speech_via_jobs(api_url, client),
                    sandbox_stats(speech_url, "azure-speech"),
                )
            )
            how = (
                "v2 is measured both through the API and speech workers (the real job path) and with the permits "
                "alone. " + permits_note
            )
        else:
            why = (
                "**Pronunciation jobs are not available yet** (`WORKLOADS[PRONUNCIATION].available` is False), so v2 "
                "is measured with the permits alone. "
                if not available
                else "Permits alone (`BENCH_SPEECH_VIA=permits`). "
            )
            how = why + permits_note
        v2_speech = v2_rows[-1]
        rest_calls = sorted(v1_one.results())[:20]  # the first 20 did not wait for a slot
        run_times = [o.run_s for o in v2_speech.outcomes if o.run_s is not None]
        call_note = (
            (
                "- One call, as the provider serves it: a REST call took a median "
                f"{statistics.median(rest_calls):.2f} s "
                "(v1's first 20, which did not wait)"
                + (
                    "; a speech job, from its claim to its result through the Speech SDK's websocket session (what "
                    "the "
                    f"speech workers use), a median {statistics.median(run_times):.2f} s. The difference between the "
                    "v2 job "
                    "row and the others is mostly that path, not the queue."
                    if run_times
                    else "."
                )
            )
            if rest_calls
            else ""
        )
        print(f"scenario 3 v2: failed {v2_speech.failed}", flush=True)
        lines += [
            "## Scenario 3: Azure Speech overload",
            "",
            f"{S3_REQUESTS} pronunciation requests at t = 0 (WAV recordings of 2.5–4.5 s) against Azure Speech's cap "
            "of 20 "
            "concurrent calls (the sandbox answers 429 beyond it), at its real latency (~2 s + half the audio, "
            "Unilingo v1's figure). " + how,
            "",
            *HEADER,
            row_line(v1_one),
            row_line(v1_two),
            *(row_line(r) for r in v2_rows),
            "",
            '- Unilingo v1\'s report: "User 1-20: average 5 seconds; user 21-25: wait 5 s + their processing time". '
            "One v1 "
            "instance keeps the cap; two instances (any autoscaling) each count only their own calls, so the provider "
            "sees up to 25 at once and refuses the excess. v2's cap is one counter in Redis for every process.",
            call_note,
            "",
            "Machine: 2 shared cores; one run: read the figures as indicative. Benchmark time: "
            f"{(time.monotonic() - began) / 60:.1f} min.",
        ]
    finally:
        for service in reversed(services):
            service.stop()
        redis_server.stop()
    (RESULTS / "scenarios.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _fire_split(urls: list[str], audio: list[bytes]) -> list[Outcome]:
    """All requests at once, alternating between the given v1 instances."""

    async def go() -> list[Outcome]:
        start = time.time() + 0.5
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as http:

            async def one(i: int) -> Outcome:
                await asyncio.sleep(max(0.0, start - time.time()))
                sent = time.time()
                r = await http.post(
                    f"{urls[i % len(urls)]}/v1/pronunciation",
                    content=audio[i],
                    headers={"x-reference-text": REFERENCE, "content-type": "audio/wav"},
                )
                answered = time.time() - sent
                return Outcome(i, 0.0, sent, r.status_code, answered, None, answered if r.status_code == 200 else None)

            return list(await asyncio.gather(*(one(i) for i in range(len(audio)))))

    return asyncio.run(go())


if __name__ == "__main__":
    if sys.argv[1:] == ["serve-v1"]:
        serve_v1()
    else:
        main()
