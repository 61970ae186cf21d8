"""The job: its model, its lifecycle, and its record in Redis.

A job is a Redis hash. Every change of state is one Lua script, so that two processes never
disagree about a job: the API creates it and enqueues its message in the same script, a
worker claims it with a lease and a fencing token (``run_token``), and only the holder of
the current token may finish it. A worker that died leaves a lease that lapses; the job is
then queued again (``requeue_stalled``) and the dead worker's late answer, if it ever comes,
is refused. That is what makes a result land exactly once, whatever the job's duration.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson
from pydantic import BaseModel

from unilingo import fairness, keys, results
from unilingo.scripts import LuaScript, lua


class JobType(str, enum.Enum):
    FLASHCARDS = "flashcards"
    LESSON = "lesson"
    PRONUNCIATION = "pronunciation"
    OCR = "ocr"
    PDF = "pdf"
    TTS = "tts"


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


TERMINAL = {s.value for s in JobStatus if s.terminal}


@dataclass(frozen=True)
class Workload:
    """Where a job type runs: its Celery queue, task name and the provider it pays."""

    queue: str
    task: str
    provider: str | None
    available: bool = True  # False: the API answers 501 rather than accept a job no worker can do
    upload: bool = False  # the job comes with a user's file, archived to storage before it runs


WORKLOADS: dict[JobType, Workload] = {
    JobType.FLASHCARDS: Workload("ai", "unilingo.flashcards", "openai"),
    JobType.LESSON: Workload("ai", "unilingo.lesson", "openai"),
    JobType.PRONUNCIATION: Workload("speech", "unilingo.pronunciation", "azure-speech", upload=True),
    JobType.OCR: Workload("ocr", "unilingo.ocr", "azure-vision", upload=True),
    JobType.PDF: Workload("pdf", "unilingo.pdf", None, upload=True),
    JobType.TTS: Workload("tts", "unilingo.tts", "aws-polly"),
}

QUEUES = sorted({w.queue for w in WORKLOADS.values()})


class JobError(BaseModel):
    code: str
    message: str


class Waiting(BaseModel):
    """Why a queued job is not running yet: it waits for its provider, holding no worker slot.

    ``reason``: ``rate``, ``tokens``, ``in_flight``, ``breaker_open``, ``suspended``, ``budget`` (the
    provider's policy refused a permit: ``unilingo.limiter.DenyReason``), ``paused`` (the
    provider itself answered ``429`` with ``Retry-After``) or ``retry`` (a transient failure's
    backoff). ``until``: when the job is due to be tried again (epoch seconds).
    """

    reason: str
    provider: str | None = None
    until: float


class Job(BaseModel):
    """A job as clients see it (``GET /api/jobs/{id}``) plus the fields workers need."""

    job_id: str
    type: JobType
    status: JobStatus
    owner: str
    params: dict[str, Any] = {}
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None
    waiting: Waiting | None = None
    attempts: int = 0
    cache_hit: bool = False
    webhook_url: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    run_token: int = 0

    @property
    def workload(self) -> Workload:
        return WORKLOADS[self.type]

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "type": self.type.value,
            "status": self.status.value,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }
        # Typed per job type (unilingo.results): one stable shape, nothing internal.
        if self.progress is not None:
            body["progress"] = results.progress_view(self.type.value, self.progress)
        if self.result is not None:
            body["result"] = results.result_view(self.type.value, self.result)
        if self.error is not None:
            body["error"] = self.error.model_dump()
        if self.waiting is not None and self.status is JobStatus.QUEUED:
            body["waiting"] = {
                "reason": self.waiting.reason,
                "provider": self.waiting.provider,
                "until": _iso(self.waiting.until),
            }
        body["cache_hit"] = self.cache_hit
        return body

    def summary(self) -> dict[str, Any]:
        """The public view without result and progress: what a list shows."""
        return self.model_copy(update={"result": None, "progress": None}).public()


def _iso(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def uuid4_bytes() -> bytearray:
    """The 16 bytes of a random (version 4) UUID: ``uuid.uuid4().bytes`` without building a UUID."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw


def new_job_id() -> str:
    """A random UUID's 32 hex digits (``uuid.uuid4().hex``, a third of its cost)."""
    return uuid4_bytes().hex()


_JSON_FIELDS = ("params", "progress", "result", "error", "waiting")


def decode_job(raw: dict[bytes, bytes] | dict[str, str]) -> Job | None:
    if not raw:
        return None
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()
    }
    data: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _JSON_FIELDS:
            data[name] = orjson.loads(value) if value else None
        elif name in ("created_at", "updated_at", "started_at", "finished_at"):
            data[name] = float(value) if value else None
        elif name in ("attempts", "run_token"):
            data[name] = int(value)
        elif name == "cache_hit":
            data[name] = value == "1"
        elif name in ("message", "idem", "lease_until", "fair_tag", "fair_offset", "queue"):
            continue
        else:
            data[name] = value or None
    if data.get("params") is None:
        data["params"] = {}
    return Job.model_validate(data)


def _flatten(fields: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for name, value in fields.items():
        if value is None:
            continue
        if name in _JSON_FIELDS:
            value = orjson.dumps(value)
        elif isinstance(value, bool):
            value = "1" if value else "0"
        elif isinstance(value, enum.Enum):
            value = value.value
        out.extend((name, value))
    return out


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed | terminal | busy | missing
    run_token: int = 0
    attempts: int = 0

    @property
    def claimed(self) -> bool:
        return self.outcome == "claimed"


@dataclass(frozen=True)
class NewJob:
    """What the API hands to ``create``: the record, its queue message and its upload."""

    job: Job
    message: bytes
    upload: bytes | None = None
    idempotency_key: str | None = None
    # The owner's share of the queue (``unilingo.fairness``); 0 queues first come, first served.
    fair_weight: float = 1.0
    # How much later than its turn the job is placed: its priority (``fairness.priority_offset``).
    fair_offset: float = 0.0


def _job_script(name: str, fair: bool = False) -> LuaScript:
    return lua(f"jobs/{name}", include=("fairness",) if fair else ())


_CREATE = _job_script("create", fair=True)
_CLAIM = _job_script("claim", fair=True)
_HAND_BACK = _job_script("hand_back")
_HEARTBEAT = _job_script("heartbeat")
_FINISH = _job_script("finish")
_PROGRESS = _job_script("progress")
_PARK = _job_script("park")
_CANCEL = _job_script("cancel")
_PROMOTE = _job_script("promote", fair=True)
_REQUEUE_STALLED = _job_script("requeue_stalled", fair=True)
_RESCUE_LOST = _job_script("rescue_lost", fair=True)


class _Scripts:
    """The job scripts (``unilingo/lua/jobs/``) on one client; sync and asyncio clients alike."""

    def __init__(self, client):
        self.create = _CREATE.bind(client)
        self.claim = _CLAIM.bind(client)
        self.hand_back = _HAND_BACK.bind(client)
        self.heartbeat = _HEARTBEAT.bind(client)
        self.finish = _FINISH.bind(client)
        self.progress = _PROGRESS.bind(client)
        self.park = _PARK.bind(client)
        self.cancel = _CANCEL.bind(client)
        self.promote = _PROMOTE.bind(client)
        self.requeue_stalled = _REQUEUE_STALLED.bind(client)
        self.rescue_lost = _RESCUE_LOST.bind(client)


# What a new job's record holds (the fields that a run fills in come later), in model order.
_NOT_AT_CREATION = frozenset({"error", "progress", "result", "waiting", "started_at", "finished_at"})
_CREATION_FIELDS = tuple(name for name in Job.model_fields if name not in _NOT_AT_CREATION)


def _creation_fields(job: Job) -> list[Any]:
    """``_flatten(job.model_dump(exclude=_NOT_AT_CREATION))``, read straight from the attributes
    (a fifth of the cost: this runs on every submission). Values pydantic would have to
    convert first (a model inside ``params``, say) take the ``model_dump`` way."""
    try:
        return _flatten({name: getattr(job, name) for name in _CREATION_FIELDS})
    except TypeError:
        return _flatten(job.model_dump(exclude=set(_NOT_AT_CREATION)))


def _create_call(new: NewJob, ttl: int, index_size: int):
    job = new.job
    fields = _creation_fields(job)
    fields.extend(("queue", job.workload.queue))
    keys_ = [
        keys.job(job.job_id),
        keys.user_jobs(job.owner),
        keys.idempotency(job.owner, new.idempotency_key) if new.idempotency_key else "",
        keys.queue_list(job.workload.queue),
        keys.job_input(job.job_id) if new.upload is not None else "",
        *keys.fair_keys(job.workload.queue),
    ]
    args = [
        job.job_id,
        job.created_at,
        ttl,
        index_size,
        new.message,
        new.upload or b"",
        new.fair_weight,
        job.owner,
        fairness.STATE_TTL_SECONDS,
        new.fair_offset,
        *fields,
    ]
    return keys_, args


WEBHOOK_DELIVERY_TTL = 7 * 24 * 3600  # a pending delivery is kept this long at most
ACTIVITY_TTL_SECONDS = 24 * 3600  # a user's activity record expires a day after their last activity


def _finish_args(job_id: str, run_token: int, status: JobStatus, owner: str | None = None, **fields: Any):
    """``owner``: the job's, when it failed (its failure share of the activity record)."""
    return (
        [
            keys.job(job_id),
            keys.leases(),
            keys.job_events(job_id),
            keys.stats("counters"),
            keys.webhook_outbox(),
            keys.webhook(job_id),
            keys.activity(owner) if owner else "",
        ],
        [
            job_id,
            run_token,
            time.time(),
            status.value,
            WEBHOOK_DELIVERY_TTL,
            ACTIVITY_TTL_SECONDS,
            *_flatten(fields),
        ],
    )


def _park_call(job_id: str, run_token: int, delayed_key: str, due: float, uncount: bool, waiting: Waiting):
    now = time.time()
    return (
        [keys.job(job_id), keys.leases(), delayed_key, keys.delayed_sets(), keys.job_events(job_id)],
        [job_id, run_token, now, due, "1" if uncount else "0", delayed_key, waiting.model_dump_json()],
    )


def _decode_claim(raw) -> Claim:
    outcome = raw[0].decode() if isinstance(raw[0], bytes) else raw[0]
    return Claim(outcome, int(raw[1]), int(raw[2]))


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class JobStore:
    """Job records on a synchronous redis client (workers, CLI)."""

    def __init__(self, client, ttl: int = 7 * 24 * 3600, index_size: int = 200):
        self.client = client
        self.ttl = ttl
        self.index_size = index_size
        self._s = _Scripts(client)

    def create(self, new: NewJob) -> tuple[bool, str]:
        created, job_id = self._s.create(*_create_call(new, self.ttl, self.index_size))
        return bool(created), _str(job_id)

    def get(self, job_id: str) -> Job | None:
        return decode_job(self.client.hgetall(keys.job(job_id)))

    def upload(self, job_id: str) -> bytes | None:
        return self.client.get(keys.job_input(job_id))

    def _queues(self, job_ids: list[str]) -> list[str]:
        """The queue of each job (a record's ``queue`` never changes; "" for a job gone)."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "queue")
        return [_str(queue) or "" for queue in pipe.execute()] if job_ids else []

    def claim(self, job_id: str, lease_seconds: float, queue: str | None = None) -> Claim:
        """Take the job for a run. ``queue``: the job's (read from its record when not given)."""
        if queue is None:
            queue = _str(self.client.hget(keys.job(job_id), "queue")) or ""
        now = time.time()
        raw = self._s.claim(
            keys=[keys.job(job_id), keys.leases(), keys.job_events(job_id), *keys.fair_keys(queue)],
            args=[job_id, now, now + lease_seconds],
        )
        return _decode_claim(raw)

    def heartbeat(self, job_id: str, run_token: int, lease_seconds: float) -> bool:
        return bool(
            self._s.heartbeat(
                keys=[keys.job(job_id), keys.leases()], args=[job_id, run_token, time.time() + lease_seconds]
            )
        )

    def update_progress(self, job_id: str, run_token: int, progress: dict[str, Any]) -> bool:
        """Record progress; False (nothing written) when ``run_token`` is no longer the job's."""
        return bool(
            self._s.progress(
                keys=[keys.job(job_id), keys.job_events(job_id)], args=[run_token, orjson.dumps(progress), time.time()]
            )
        )

    def succeed(self, job_id: str, run_token: int, result: dict[str, Any], cache_hit: bool = False) -> bool:
        """Complete the job (``_FINISH``): False when the run was fenced out, and nothing written."""
        k, a = _finish_args(job_id, run_token, JobStatus.SUCCEEDED, result=result, cache_hit=cache_hit)
        return bool(self._s.finish(keys=k, args=a))

    def fail(self, job_id: str, run_token: int, code: str, message: str) -> bool:
        owner = _str(self.client.hget(keys.job(job_id), "owner"))  # it never changes
        k, a = _finish_args(job_id, run_token, JobStatus.FAILED, owner, error={"code": code, "message": message})
        return bool(self._s.finish(keys=k, args=a))

    def defer(
        self, job_id: str, run_token: int, provider: str, due: float, reason: str = "rate", until: float | None = None
    ) -> bool:
        """No permit: back to the provider's waiting set until ``due``; the attempt does not count.

        The job says why it waits (``Waiting``) and until when (``until``, by default ``due``)
        until a worker claims it again."""
        waiting = Waiting(reason=reason, provider=provider, until=until or due)
        return bool(self._s.park(*_park_call(job_id, run_token, keys.deferred(provider), due, True, waiting)))

    def retry_later(self, job_id: str, run_token: int, due: float, provider: str | None = None) -> bool:
        """A transient failure: the attempt counts; the job runs again at ``due``."""
        waiting = Waiting(reason="retry", provider=provider, until=due)
        return bool(self._s.park(*_park_call(job_id, run_token, keys.retries(), due, False, waiting)))

    def hand_back(self, job_id: str, run_token: int) -> bool:
        """The worker is leaving: the job goes back to the head of its queue, attempt uncounted."""
        queue = _str(self.client.hget(keys.job(job_id), "queue")) or ""
        return bool(
            self._s.hand_back(
                keys=[keys.job(job_id), keys.leases(), keys.job_events(job_id), keys.queue_list(queue)],
                args=[job_id, run_token, time.time()],
            )
        )

    def cancel(self, job_id: str) -> str:
        return _str(
            self._s.cancel(keys=[keys.job(job_id), keys.leases(), keys.job_events(job_id)], args=[job_id, time.time()])
        )

    def promote_due(self, limit: int = 100, now: float | None = None) -> int:
        """Queue again the delayed jobs (deferred or retrying) that are due."""
        now = time.time() if now is None else now
        moved = 0
        for member in self.client.smembers(keys.delayed_sets()):
            delayed_key = _str(member)
            due = [_str(m) for m in self.client.zrangebyscore(delayed_key, "-inf", now, start=0, num=limit)]
            if not due:
                continue
            script_keys = [delayed_key]
            for job_id, queue in zip(due, self._queues(due), strict=True):
                script_keys += (keys.job(job_id), keys.queue_list(queue), *keys.fair_keys(queue)[1:])
            moved += int(self._s.promote(keys=script_keys, args=[now, *due]))
        return moved

    def rescue_lost(self, queue: str, grace_seconds: float = 60.0, limit: int = 20, now: float | None = None) -> int:
        """Queue again the jobs whose message was taken off ``queue`` but never claimed."""
        now = time.time() if now is None else now
        indexed = [_str(m) for m in self.client.zrange(keys.fair_index(queue), 0, limit - 1)]
        if not indexed:
            return 0
        return int(
            self._s.rescue_lost(
                keys=[keys.queue_list(queue), *keys.fair_keys(queue)[1:], *(keys.job(job_id) for job_id in indexed)],
                args=[now, grace_seconds, *indexed],
            )
        )

    def requeue_stalled(self, limit: int = 100, now: float | None = None) -> int:
        now = time.time() if now is None else now
        stalled = [_str(m) for m in self.client.zrangebyscore(keys.leases(), "-inf", now, start=0, num=limit)]
        if not stalled:
            return 0
        script_keys = [keys.leases()]
        for job_id, queue in zip(stalled, self._queues(stalled), strict=True):
            script_keys += (
                keys.job(job_id),
                keys.job_events(job_id),
                keys.queue_list(queue),
                *keys.fair_keys(queue)[1:],
            )
        return int(self._s.requeue_stalled(keys=script_keys, args=[now, *stalled]))


class AsyncJobStore:
    """Job records on an asyncio redis client (the API tier).

    ``scripts``: what runs the Lua scripts, if not ``client`` (anything with redis-py's
    ``register_script``; the API passes ``unilingo.scripts.PipelinedScripts``).
    """

    def __init__(self, client, ttl: int = 7 * 24 * 3600, index_size: int = 200, scripts=None):
        self.client = client
        self.ttl = ttl
        self.index_size = index_size
        self._s = _Scripts(scripts if scripts is not None else client)

    async def create(self, new: NewJob) -> tuple[bool, str]:
        created, job_id = await self._s.create(*_create_call(new, self.ttl, self.index_size))
        return bool(created), _str(job_id)

    async def get(self, job_id: str) -> Job | None:
        return decode_job(await self.client.hgetall(keys.job(job_id)))

    async def idempotent_job(self, owner: str, key: str) -> str | None:
        """The job ``owner`` already submitted under ``Idempotency-Key: key``, if any."""
        job_id = await self.client.get(keys.idempotency(owner, key))
        return _str(job_id) if job_id else None

    async def cancel(self, job_id: str) -> str:
        return _str(
            await self._s.cancel(
                keys=[keys.job(job_id), keys.leases(), keys.job_events(job_id)], args=[job_id, time.time()]
            )
        )

    async def page(
        self,
        owner: str,
        limit: int,
        after: tuple[float, str] | None = None,
        accept: Callable[[Job], bool] | None = None,
    ) -> tuple[list[Job], tuple[float, str] | None]:
        """The owner's jobs newest first, after ``after`` (created at, job id), that ``accept``
        takes; and the position to continue from, None when the index has nothing further.

        The owner's index orders by creation time, ties by id (Redis's order for equal scores),
        so a position is unambiguous; expired jobs still in the index are passed over.
        """
        key = keys.user_jobs(owner)
        top: float | str = "+inf" if after is None else after[0]
        batch = max(2 * limit, 20)
        found: list[Job] = []
        offset = 0
        while True:
            entries = await self.client.zrevrangebyscore(key, top, "-inf", start=offset, num=batch, withscores=True)
            fresh = [(_str(member), float(score)) for member, score in entries]
            if after is not None:
                fresh = [(m, s) for m, s in fresh if s < after[0] or m < after[1]]
            pipe = self.client.pipeline(transaction=False)
            for job_id, _ in fresh:
                pipe.hgetall(keys.job(job_id))
            records = await pipe.execute() if fresh else []
            for index, ((job_id, score), raw) in enumerate(zip(fresh, records, strict=True)):
                job = decode_job(raw)
                if job is None or job.owner != owner or (accept is not None and not accept(job)):
                    continue
                found.append(job)
                if len(found) == limit:
                    more = index < len(fresh) - 1 or len(entries) == batch
                    return found, (score, job_id) if more else None
            if len(entries) < batch:
                return found, None
            offset += batch
