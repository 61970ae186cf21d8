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

    ``reason``: ``rate``, ``tokens``, ``in_flight``, ``breaker_open``, ``suspended`` (the
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
        elif name in ("message", "idem", "lease_until", "fair_tag", "queue"):
            continue
        else:
            data[name] = value or None
    if data.get("params") is None:
        data["params"] = {}
    return Job.model_validate(data)


# --- Lua: each state change is atomic --------------------------------------------------

# KEYS: job, user_jobs, idem (or ""), queue list, input key (or ""), queue's fairness hash,
#       queue's tag index
# ARGV: job_id, created_at, ttl, index_size, message, input bytes, fair-share weight (0: first
#       come, first served), owner, job key prefix, fairness state ttl, then field/value pairs
_CREATE = (
    fairness.LUA
    + """
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
redis.call('HSET', KEYS[1], 'message', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[1], 'EX', 86400) end
local weight = tonumber(ARGV[7])
if weight > 0 then
  local tag = fair_tag(KEYS[6], ARGV[8], weight)
  redis.call('HSET', KEYS[1], 'fair_tag', tag)
  fair_push(KEYS[4], KEYS[7], ARGV[9], ARGV[1], ARGV[5], tag)
  redis.call('EXPIRE', KEYS[6], ARGV[10])
  redis.call('EXPIRE', KEYS[7], ARGV[10])
else
  redis.call('LPUSH', KEYS[4], ARGV[5])
end
return {1, ARGV[1]}
"""
)

# KEYS: job, leases, events channel. ARGV: job_id, now, lease_until, fairness key prefix
# Returns {outcome, run_token, attempts}; outcome: 'claimed' | 'terminal' | 'busy' | 'missing'
# (The queue's fairness keys are named from the job's queue: like promote's queue lists, they
# are not declared in KEYS.)
_CLAIM = (
    fairness.LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0, 0} end
local fair = redis.call('HMGET', KEYS[1], 'fair_tag', 'queue')
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  fair_claimed(ARGV[4], ARGV[1], fair[2], fair[1])
  return {'terminal', 0, 0}
end
if status == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > tonumber(ARGV[2]) then return {'busy', 0, 0} end
end
local token = redis.call('HINCRBY', KEYS[1], 'run_token', 1)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'updated_at', ARGV[2],
  'lease_until', ARGV[3])
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
fair_claimed(ARGV[4], ARGV[1], fair[2], fair[1])
redis.call('PUBLISH', KEYS[3], 'running')
return {'claimed', token, attempts}
"""
)

# KEYS: job, events channel. ARGV: run_token, progress JSON, now
_PROGRESS = """
local f = redis.call('HMGET', KEYS[1], 'status', 'run_token')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'updated_at', ARGV[3])
redis.call('PUBLISH', KEYS[2], 'progress')
return 1
"""

# KEYS: job, leases. ARGV: job_id, run_token, lease_until
_HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# The completion: the job's terminal state, its outcome in the cluster totals and its webhook
# in the outbox, all or nothing, and only for the holder of the current run token. A worker
# that dies at any point leaves either a finished job whose webhook is queued, or a running
# job whose lease lapses and which runs again; a refused (stale) completion writes nothing.
# KEYS: job, leases, events channel, cluster counters, webhook outbox, webhook delivery
# ARGV: job_id, run_token, now, status, delivery ttl, activity key prefix, activity ttl, then
#       field/value pairs
_FINISH = """
local f = redis.call('HMGET', KEYS[1], 'status', 'run_token', 'type', 'owner', 'webhook_url')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'updated_at', ARGV[3], 'finished_at', ARGV[3],
  'lease_until', '0')
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBYFLOAT', KEYS[4], 'jobs:' .. f[3] .. ':' .. ARGV[4], 1)
if ARGV[4] == 'failed' and f[4] then
  -- the owner's failure share (risk score); the API's activity flush may not have made the
  -- record yet, so a new one gets the activity records' lifetime here
  local activity = ARGV[6] .. f[4]
  redis.call('HINCRBY', activity, 'failed', 1)
  if redis.call('TTL', activity) < 0 then redis.call('EXPIRE', activity, ARGV[7]) end
end
if f[5] and f[5] ~= '' then
  redis.call('HSET', KEYS[6], 'job_id', ARGV[1], 'url', f[5], 'attempts', 0, 'created_at', ARGV[3])
  redis.call('EXPIRE', KEYS[6], ARGV[5])
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
end
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
"""

# Gives a claimed job back without counting the attempt (deferral) or counting it (retry),
# and parks it in a delayed set until it is due.
# KEYS: job, leases, delayed zset, delayed index, events channel
# ARGV: job_id, run_token, now, score, uncount (1|0), index member, waiting (JSON)
_PARK = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[2] then return 0 end
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[3], 'lease_until', '0', 'waiting', ARGV[7])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('PUBLISH', KEYS[5], 'queued')
return 1
"""

# KEYS: job, leases, events channel. ARGV: job_id, now
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'terminal' end
redis.call('HINCRBY', KEYS[1], 'run_token', 1)
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated_at', ARGV[2], 'finished_at', ARGV[2],
  'lease_until', '0', 'error', '{"code":"cancelled","message":"cancelled by the user"}')
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], 'cancelled')
return 'cancelled'
"""

# Moves due members of a delayed set back to their queue, oldest first, at most ARGV[2].
# A member whose job is gone or no longer queued is dropped. The stored message is pushed
# again as it was, so the job keeps its Celery task id.
# KEYS: delayed zset. ARGV: now, limit, job key prefix, fairness key prefix
_PROMOTE = (
    fairness.LUA
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[3] .. id
  local fields = redis.call('HMGET', job, 'status', 'message', 'queue', 'fair_tag')
  if fields[1] == 'queued' and fields[2] then
    requeue(ARGV[4], ARGV[3], id, fields[3], fields[2], fields[4])
    moved = moved + 1
  end
end
return moved
"""
)

# Running jobs whose lease lapsed: their worker died. Queue them again.
# KEYS: leases. ARGV: now, limit, job key prefix, fairness key prefix
_REQUEUE_STALLED = (
    fairness.LUA
    + """
local stalled = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(stalled) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[3] .. id
  local fields = redis.call('HMGET', job, 'status', 'message', 'queue', 'lease_until', 'fair_tag')
  if fields[1] == 'running' and tonumber(fields[4] or '0') <= tonumber(ARGV[1]) and fields[2] then
    redis.call('HSET', job, 'status', 'queued', 'updated_at', ARGV[1], 'lease_until', '0')
    redis.call('HINCRBY', job, 'run_token', 1)
    requeue(ARGV[4], ARGV[3], id, fields[3], fields[2], fields[5])
    redis.call('PUBLISH', job .. ':events', 'queued')
    moved = moved + 1
  end
end
return moved
"""
)


# Queued jobs whose message left the list without the job being claimed: a consumer that died
# between popping the message and recording it (kombu's Redis transport does the two apart).
# The queue's tag index names the jobs whose message should be in the list; the lowest tags
# are the ones popped first. Such a job, queued for over the grace period and no longer in the
# list, is queued again with its turn. A message still held by a live worker is delivered twice
# at worst, and the claim lets only one run through. Index entries of jobs no longer queued go.
# KEYS: queue list, queue's tag index. ARGV: job key prefix, now, grace seconds, how many
_RESCUE_LOST = (
    fairness.LUA
    + """
local moved = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[4]) - 1)) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'status', 'message', 'updated_at', 'fair_tag')
  if f[1] ~= 'queued' or not f[2] then
    redis.call('ZREM', KEYS[2], id)
  elseif tonumber(f[3] or '0') < tonumber(ARGV[2]) - tonumber(ARGV[3])
      and not redis.call('LPOS', KEYS[1], f[2]) then
    redis.call('ZREM', KEYS[2], id)
    fair_push(KEYS[1], KEYS[2], ARGV[1], id, f[2], tonumber(f[4] or '0'))
    moved = moved + 1
  end
end
return moved
"""
)


# A running job given back unfinished by a worker that is leaving: queued again at the head of
# its queue, its attempt not counted, and the leaving run fenced out (new run token).
# KEYS: job, leases, events channel. ARGV: job_id, run_token, now
_HAND_BACK = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[2] then return 0 end
local fields = redis.call('HMGET', KEYS[1], 'message', 'queue')
if not fields[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HINCRBY', KEYS[1], 'run_token', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[3], 'lease_until', '0')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', fields[2], fields[1])  -- consumers pop from the right: next in line
redis.call('PUBLISH', KEYS[3], 'queued')
return 1
"""


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


class _Scripts:
    """The job scripts registered on one client; works for sync and asyncio clients alike."""

    def __init__(self, client):
        self.create = client.register_script(_CREATE)
        self.claim = client.register_script(_CLAIM)
        self.hand_back = client.register_script(_HAND_BACK)
        self.heartbeat = client.register_script(_HEARTBEAT)
        self.finish = client.register_script(_FINISH)
        self.progress = client.register_script(_PROGRESS)
        self.park = client.register_script(_PARK)
        self.cancel = client.register_script(_CANCEL)
        self.promote = client.register_script(_PROMOTE)
        self.requeue_stalled = client.register_script(_REQUEUE_STALLED)
        self.rescue_lost = client.register_script(_RESCUE_LOST)


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
        keys.fair_queue(job.workload.queue),
        keys.fair_index(job.workload.queue),
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
        keys.job(""),
        fairness.STATE_TTL_SECONDS,
        *fields,
    ]
    return keys_, args


WEBHOOK_DELIVERY_TTL = 7 * 24 * 3600  # a pending delivery is kept this long at most
ACTIVITY_TTL_SECONDS = 24 * 3600  # a user's activity record expires a day after their last activity


def _finish_args(job_id: str, run_token: int, status: JobStatus, **fields: Any):
    return (
        [
            keys.job(job_id),
            keys.leases(),
            keys.job_events(job_id),
            keys.stats("counters"),
            keys.webhook_outbox(),
            keys.webhook(job_id),
        ],
        [
            job_id,
            run_token,
            time.time(),
            status.value,
            WEBHOOK_DELIVERY_TTL,
            keys.activity(""),
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

    def claim(self, job_id: str, lease_seconds: float) -> Claim:
        now = time.time()
        raw = self._s.claim(
            keys=[keys.job(job_id), keys.leases(), keys.job_events(job_id)],
            args=[job_id, now, now + lease_seconds, keys.fair_queue("")],
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
        k, a = _finish_args(job_id, run_token, JobStatus.FAILED, error={"code": code, "message": message})
        return bool(self._s.finish(keys=k, args=a))

    def defer(self, job_id: str, run_token: int, provider: str, due: float, reason: str = "rate") -> bool:
        """No permit: back to the provider's waiting set; the attempt does not count.

        The job says why it waits (``Waiting``) until a worker claims it again."""
        waiting = Waiting(reason=reason, provider=provider, until=due)
        return bool(self._s.park(*_park_call(job_id, run_token, keys.deferred(provider), due, True, waiting)))

    def retry_later(self, job_id: str, run_token: int, due: float, provider: str | None = None) -> bool:
        """A transient failure: the attempt counts; the job runs again at ``due``."""
        waiting = Waiting(reason="retry", provider=provider, until=due)
        return bool(self._s.park(*_park_call(job_id, run_token, keys.retries(), due, False, waiting)))

    def hand_back(self, job_id: str, run_token: int) -> bool:
        """The worker is leaving: the job goes back to the head of its queue, attempt uncounted."""
        return bool(
            self._s.hand_back(
                keys=[keys.job(job_id), keys.leases(), keys.job_events(job_id)], args=[job_id, run_token, time.time()]
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
        for delayed_key in self.client.smembers(keys.delayed_sets()):
            moved += int(
                self._s.promote(keys=[_str(delayed_key)], args=[now, limit, keys.job(""), keys.fair_queue("")])
            )
        return moved

    def rescue_lost(self, queue: str, grace_seconds: float = 60.0, limit: int = 20, now: float | None = None) -> int:
        """Queue again the jobs whose message was taken off ``queue`` but never claimed."""
        now = time.time() if now is None else now
        return int(
            self._s.rescue_lost(
                keys=[keys.queue_list(queue), keys.fair_index(queue)], args=[keys.job(""), now, grace_seconds, limit]
            )
        )

    def requeue_stalled(self, limit: int = 100, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return int(self._s.requeue_stalled(keys=[keys.leases()], args=[now, limit, keys.job(""), keys.fair_queue("")]))


class AsyncJobStore:
    """Job records on an asyncio redis client (the API tier).

    ``scripts``: what runs the Lua scripts, if not ``client`` (anything with redis-py's
    ``register_script``; the API passes its pipelined ``api.redis_conn.ScriptChannel``).
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
