"""The baseline for the benchmarks: a plain Celery app, the way a Celery user would build it.

No provider permits, no job lease: Celery's own mechanisms only.

- ``rate_limit`` on the task (``BENCH_RATE_LIMIT``, e.g. ``"12.5/m"``). Celery applies it per
  worker *instance*: the consumer in each worker's main process keeps a token bucket
  (capacity 1) per task type and holds messages back until the bucket has a token. Its
  docs: "this is a per worker instance rate limit, and not a global rate limit", so a user
  with N workers sets quota / N.
- The task runs the platform's own flashcards handler (``workers.handlers.ai.flashcards``:
  same prompt, same output cap, the ``openai`` SDK with ``max_retries=0``) with a context
  whose ``provider_call`` grants everything. A 429 (``RateLimitError``, which the provider
  adapter raises as ``Throttled``) or a 5xx retries through Celery's ``autoretry_for`` with
  exponential backoff and full jitter, five retries, as Celery's docs show.
- Redelivery of a dead worker's messages is the broker's ``visibility_timeout``
  (``BENCH_VISIBILITY_TIMEOUT`` seconds) with ``acks_late`` and a prefetch of one; kombu
  looks for such messages every ~100 s unless ``BENCH_RESTORE_SWEEP_S`` says otherwise.

What happened is written to Redis for the benchmark to read (``STARTS``, ``DONE``,
``FAILED``: one ``"<unix time> <job id> <pid>"`` entry each).

    REDIS_URL=... SANDBOX_PORT=... BENCH_RATE_LIMIT=12.5/m python -m bench.celery_rate_limit
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery, signals

from unilingo.errors import Throttled, TransientError

QUEUE = "bench-celery"
STARTS, DONE, FAILED, READY = "bench:celery:starts", "bench:celery:done", "bench:celery:failed", "bench:celery:ready"

RATE_LIMIT = os.environ.get("BENCH_RATE_LIMIT") or None
VISIBILITY_TIMEOUT = float(os.environ.get("BENCH_VISIBILITY_TIMEOUT", "3600"))
# kombu sweeps for messages past their visibility timeout every ``unacked_restore_interval``
# (10 s) × ``unacked_restore_throttle`` (10) ≈ 100 s by default; set to sweep every N s.
RESTORE_SWEEP_S = os.environ.get("BENCH_RESTORE_SWEEP_S")
TRANSPORT_OPTIONS = {"visibility_timeout": VISIBILITY_TIMEOUT}
if RESTORE_SWEEP_S:
    TRANSPORT_OPTIONS.update(unacked_restore_interval=float(RESTORE_SWEEP_S), unacked_restore_throttle=1)

app = Celery("bench-celery", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0"), set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_transport_options=TRANSPORT_OPTIONS,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)

_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(app.conf.broker_url)
    return _redis


def _record(key: str, job_id: str) -> None:
    _client().rpush(key, f"{time.time():.6f} {job_id} {os.getpid()}")


@dataclass
class _Handle:
    tokens_used: int | None = None


@dataclass
class _NoPermits:
    """The handler's context with no limiter: every provider call goes straight out."""

    params: dict[str, Any]
    usage: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def provider_call(self, provider: str, tokens: int = 0):
        yield _Handle()

    def progress(self, **_: Any) -> None:
        pass


class _Recorded(app.Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):  # retries exhausted, or a bug
        _record(FAILED, args[0] if args else task_id)


@app.task(
    name="bench.flashcards",
    base=_Recorded,
    bind=True,
    rate_limit=RATE_LIMIT,
    acks_late=True,
    autoretry_for=(Throttled, TransientError),
    retry_backoff=True,  # 1 s, 2 s, 4 s ... with full jitter (retry_jitter defaults to True)
    retry_backoff_max=60,
    retry_kwargs={"max_retries": 5},
)
def flashcards(self, job_id: str, params: dict) -> None:
    from workers.handlers import ai

    _record(STARTS, job_id)
    ai.flashcards(_NoPermits(params))
    _record(DONE, job_id)


@signals.worker_ready.connect
def _ready(sender=None, **_):
    _client().sadd(READY, getattr(sender, "hostname", "") or str(os.getpid()))


@signals.worker_process_init.connect
def _warm_up(**_):
    from workers.providers import openai_chat

    openai_chat.client()


def main() -> None:
    app.worker_main(
        [
            "worker",
            "--queues",
            QUEUE,
            "--concurrency",
            os.environ.get("WORKER_CONCURRENCY", "2"),
            "--hostname",
            f"bench-celery@{socket.gethostname()}-{os.getpid()}",
            "--loglevel",
            os.environ.get("WORKER_LOG_LEVEL", "WARNING"),
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
