"""Turning a validated request into a queued job: the lean path behind every submit route.

One Redis round trip: ``AsyncJobStore.create`` records the job, its upload, the user's index
entry and the idempotency key, and pushes the Celery message, atomically.

``Idempotency-Key`` (1-255 visible ASCII characters, scoped to the caller, remembered 24 h):
the same key with the same request returns the same job (``200`` and the same body shape,
``status`` being the job's current one, plus ``Idempotent-Replayed: true``); the same key
with a different request (another endpoint, other fields, another file) is
``422 idempotency_key_reused``, as the IETF Idempotency-Key draft recommends.
"""

from __future__ import annotations

import re
import time
from typing import Any

import anyio.to_thread
from starlette.requests import Request

from api.config import ApiConfig
from api.deps import Caller, response_headers
from api.errors import ApiError
from api.responses import JSON
from api.validation import check_file, file_params, parse_form, read_form, read_upload
from unilingo import errors_reporting, fairness, metrics, tracing, webhooks
from unilingo.jobs import WORKLOADS, Job, JobStatus, JobType, NewJob, new_job_id
from unilingo.messages import task_message

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.match(value):
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters")
    return value


PRIORITY_HEADER = "Job-Priority"


def job_priority(request: Request, tier: str, config: ApiConfig) -> int:
    """The priority the caller asks for (``Job-Priority``), at most its tier's; the tier's by default.

    Raising a job above the tier's priority is refused, not silently lowered: a client that
    asks for more than it may have learns so at once."""
    allowed = fairness.tier_priority(tier, config.settings.tier_priorities)
    value = request.headers.get(PRIORITY_HEADER.lower())
    if value is None:
        return allowed
    if not value.strip().isdigit() or not 0 <= int(value) <= fairness.MAX_PRIORITY:
        raise ApiError(
            422, "invalid_priority", f"{PRIORITY_HEADER} must be an integer from 0 to {fairness.MAX_PRIORITY}"
        )
    if int(value) > allowed:
        raise ApiError(
            403,
            "priority_above_tier",
            f"{PRIORITY_HEADER} {int(value)} is above the {tier} tier's priority {allowed}; "
            "a job's priority may only be lowered",
        )
    return int(value)


def not_available(job_type: JobType) -> None:
    if not WORKLOADS[job_type].available:
        raise ApiError(
            501,
            "not_implemented",
            f"{job_type.value} jobs are not available yet on this deployment; nothing was queued",
        )


async def check_webhook(url: str | None, config: ApiConfig) -> None:
    if url is None:
        return
    try:
        # DNS resolution blocks: off the event loop.
        await anyio.to_thread.run_sync(webhooks.check_target, url, config.settings.webhook_allow_private)
    except webhooks.WebhookTargetError as exc:
        raise ApiError(
            422, exc.code, exc.message, details=[{"field": "webhook_url", "message": exc.message, "type": exc.code}]
        ) from None


# Every field is already validated: no pydantic pass. ``Job.model_construct`` with these
# fields, made by copying one constructed with the same ones (a fifth of the cost).
_NEW_JOB = Job.model_construct(
    job_id="",
    type=JobType.FLASHCARDS,
    status=JobStatus.QUEUED,
    owner="",
    params={},
    webhook_url=None,
    created_at=0.0,
    updated_at=0.0,
)


def new_job(
    job_id: str, job_type: JobType, owner: str, params: dict[str, Any], webhook_url: str | None, now: float
) -> Job:
    return _NEW_JOB.model_copy(
        update={
            "job_id": job_id,
            "type": job_type,
            "status": JobStatus.QUEUED,
            "owner": owner,
            "params": params,
            "webhook_url": webhook_url,
            "created_at": now,
            "updated_at": now,
        }
    )


def accepted_body(config: ApiConfig, job_id: str, status: str) -> dict[str, Any]:
    status_url = config.url(f"/api/jobs/{job_id}")
    return {"job_id": job_id, "status": status, "status_url": status_url, "events_url": f"{status_url}/events"}


async def submit(
    request: Request,
    caller: Caller,
    job_type: JobType,
    params: dict[str, Any],
    webhook_url: str | None = None,
    upload: bytes | None = None,
) -> JSON:
    """Validated input in, ``202 {job_id, status, status_url, events_url}`` out."""
    svc, user = caller.services, caller.user
    config = svc.config
    key = idempotency_key(request)
    priority = job_priority(request, user.tier, config)
    await check_webhook(webhook_url, config)
    not_available(job_type)  # after auth, quota and validation: never a fake success

    workload = WORKLOADS[job_type]
    job_id = new_job_id()
    now = time.time()
    job = new_job(job_id, job_type, user.user_id, params, webhook_url, now)
    errors_reporting.tag_job(job_id, job_type.value)
    with tracing.enqueueing(job_id, job_type.value, workload.queue):
        message = task_message(workload.task, workload.queue, [job_id], task_id=job_id)  # carries this span's context
        weight = fairness.weight(user.tier, config.settings.tier_weights) if config.settings.fair_share else 0.0
        created, stored_id = await svc.store.create(
            NewJob(
                job=job,
                message=message,
                upload=upload,
                idempotency_key=key,
                fair_weight=weight,
                fair_offset=fairness.priority_offset(priority),
            )
        )
    if created:
        metrics.job_submitted(job_type.value, user.user_id)
        body = accepted_body(config, job_id, JobStatus.QUEUED.value)
        return JSON(body, status_code=202, headers=response_headers(request, {"Location": body["status_url"]}))

    # The key was used before by this user: the same request gets the same job back.
    existing = await svc.store.get(stored_id)
    if existing is None or existing.owner != user.user_id:
        raise ApiError(409, "idempotency_key_expired", "this Idempotency-Key was used for a job that no longer exists")
    if existing.type != job_type or existing.params != params or existing.webhook_url != webhook_url:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request; use a new key",
        )
    body = accepted_body(config, existing.job_id, existing.status.value)
    return JSON(
        body,
        status_code=200,
        headers=response_headers(request, {"Location": body["status_url"], "Idempotent-Replayed": "true"}),
    )


def job_params(fields) -> dict[str, Any]:
    """A request's fields as the job records them (its webhook URL is kept apart)."""
    return fields.model_dump(exclude_none=True, exclude={"webhook_url"})


async def submit_upload(
    request: Request,
    caller: Caller,
    job_type: JobType,
    fields_model,
    file_field: str,
    category: str,
    limit: int,
    check_fields=None,
) -> JSON:
    """A multipart submission: its fields validated, its one file recognised by its bytes.

    ``check_fields`` adds checks the model cannot express (lengths in characters, say).
    """
    async with read_form(request) as form:
        fields, upload = parse_form(form, fields_model, file_field)
        if check_fields:
            check_fields(fields)
        data = await read_upload(upload, limit, file_field)
        kind = check_file(file_field, data, category, limit)
        params = {**job_params(fields), **file_params(data, kind, upload.filename)}
    return await submit(request, caller, job_type, params, webhook_url=fields.webhook_url, upload=data)
