"""The caller's jobs: status, live events (SSE), cancellation, recent list.

A job that is unknown and a job that belongs to someone else get the same ``404``: the API
never reveals that another user's job exists.

SSE (``GET /api/jobs/{id}/events``): the stream subscribes to the job's pub/sub channel
*before* reading its state, so no change can fall between the two; it sends the state, then
one event per change, and ends after a terminal state. Every event is an unnamed SSE event
(``onmessage`` in a browser) whose ``data`` is the job as ``GET /api/jobs/{id}`` shows it,
with an increasing ``id``. A comment ping every 15 s keeps proxies from closing the stream;
the state is re-read every few seconds as well, so a lost pub/sub message only delays an
event. If the job expires or Redis fails, an ``event: error`` with ``{"code", "message"}``
ends the stream.
"""

from __future__ import annotations

import re
import time
from typing import Literal

import orjson
import redis.exceptions
from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import schemas
from api.config import JOB_LIST_MAX
from api.deps import Caller, Services, read_guard, response_headers
from api.errors import JOB_RESPONSES, ApiError, _responses
from api.responses import JSON
from api.validation import cursor_position
from unilingo import keys, metrics, paging
from unilingo.jobs import Job

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=JOB_RESPONSES)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RESYNC_SECONDS = 5.0  # re-read the state this often even without a pub/sub message
STREAM_MAX_SECONDS = 3600.0  # a client following longer reconnects (EventSource does so itself)
PING_SECONDS = 15


def _not_found() -> ApiError:
    return ApiError(404, "job_not_found", "no such job")


async def own_job(caller: Caller, job_id: str) -> Job:
    if not JOB_ID.match(job_id):
        raise _not_found()
    job = await caller.services.store.get(job_id)
    if job is None or job.owner != caller.user.user_id:
        raise _not_found()
    return job


JobTypeName = Literal["flashcards", "lesson", "pronunciation", "ocr", "pdf", "tts"]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.get(
    "",
    response_model=schemas.JobList,
    summary="The caller's jobs, newest first, a page at a time",
    description="Summaries (no `result`, no `progress`) unless `include=result`. Pass `next_cursor` as `cursor` "
    "for the next page; it is null on the last one (with filters, the last page may come back empty). "
    "Jobs are kept for 7 days; what they made stays readable under `/api/lessons`, "
    "`/api/flashcard-sets` and `/api/audio-lessons`.",
)
async def list_jobs(
    request: Request,
    limit: int = Query(20, ge=1, le=JOB_LIST_MAX, description="Jobs per page (at most 200)"),
    cursor: str | None = Query(None, max_length=512, description="`next_cursor` of the previous page"),
    type: list[JobTypeName] | None = Query(None, description="Only jobs of these types (repeatable)"),
    status: list[JobStatusName] | None = Query(None, description="Only jobs in these states (repeatable)"),
    include: Literal["result"] | None = Query(None, description="`result`: each job with its result and progress"),
    caller: Caller = Depends(read_guard),
) -> JSON:
    svc, user = caller.services, caller.user
    after = cursor_position("jobs", cursor)
    types, statuses = set(type or ()), set(status or ())

    def wanted(job: Job) -> bool:
        return (not types or job.type.value in types) and (not statuses or job.status.value in statuses)

    jobs, position = await svc.store.page(user.user_id, limit, after, wanted if types or statuses else None)
    views = [job.public() if include else job.summary() for job in jobs]
    next_cursor = paging.encode("jobs", position) if position else None
    return JSON({"jobs": views, "next_cursor": next_cursor}, headers=response_headers(request))


@router.get("/{job_id}", response_model=schemas.JobView, summary="A job's status, progress and result")
async def get_job(job_id: str, request: Request, caller: Caller = Depends(read_guard)) -> JSON:
    job = await own_job(caller, job_id)
    return JSON(job.public(), headers=response_headers(request))


@router.delete(
    "/{job_id}",
    response_model=schemas.JobView,
    responses=_responses(409),
    summary="Cancel a job that has not ended (409 when it has)",
)
async def cancel_job(job_id: str, request: Request, caller: Caller = Depends(read_guard)) -> JSON:
    svc = caller.services
    await own_job(caller, job_id)
    outcome = await svc.store.cancel(job_id)
    job = await svc.store.get(job_id)
    if outcome == "missing" or job is None:
        raise _not_found()
    if outcome == "terminal":
        raise ApiError(409, "job_terminal", f"the job has already ended ({job.status.value}); it cannot be cancelled")
    metrics.job_cancelled(job.type.value)
    return JSON(job.public(), headers=response_headers(request))


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: the job's state, then each change until it ends",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "An SSE stream"}},
)
async def job_events(job_id: str, request: Request, caller: Caller = Depends(read_guard)) -> EventSourceResponse:
    await own_job(caller, job_id)
    return EventSourceResponse(
        _stream(caller.services, job_id),
        ping=PING_SECONDS,
        send_timeout=30,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(response_headers(request) or {})},
    )


def _error_event(code: str, message: str) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps({"code": code, "message": message}).decode(), event="error")


async def _stream(svc: Services, job_id: str):
    deadline = time.monotonic() + STREAM_MAX_SECONDS
    assert svc.events is not None
    try:
        # Subscribed (on the process's one shared subscription) before the first read: no gap.
        async with svc.events.watch(keys.job_events(job_id)) as changes:
            async for event in _events(svc, job_id, changes, deadline):
                yield event
    except redis.exceptions.RedisError:
        yield _error_event("service_unavailable", "the job store is unreachable; reconnect shortly")


async def _events(svc: Services, job_id: str, changes, deadline: float):
    sequence = 0
    last: bytes | None = None
    while True:
        job = await svc.store.get(job_id)
        if job is None:
            yield _error_event("job_not_found", "the job no longer exists")
            return
        snapshot = orjson.dumps(job.public())
        if snapshot != last:
            last = snapshot
            sequence += 1
            yield ServerSentEvent(data=snapshot.decode(), id=str(sequence), retry=2000)
        if job.status.terminal:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        # Any message (or the resync timeout) means: read the state again.
        await changes.changed(min(RESYNC_SECONDS, remaining))
