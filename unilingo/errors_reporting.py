"""Error reports to Sentry (Unilingo v1's APM), tagged with the job they concern.

Off unless ``SENTRY_DSN`` is set, and then free: sentry-sdk is never imported and every
function here returns at once. On: ``sentry_sdk.init`` with the FastAPI/Starlette
integrations in the API and the Celery integration in workers (plus sentry-sdk's defaults:
logging, threading, excepthook, dedupe...), no auto-enabled integrations (the OpenAI one
would report every provider ``429``, which is flow control here, not an error), no
performance tracing (OpenTelemetry does traces) and no personal data: no request bodies,
no frame locals, credentials filtered from headers.

Events carry ``job_id`` and ``job_type`` tags: set by ``job_scope`` around a job's run in a
worker and by ``tag_job`` on the submit path; otherwise recovered from the Celery task
(whose id is the job id) or from a ``/api/jobs/{id}`` URL. With tracing
on they carry ``trace_id`` too, to jump from the error to its trace.

sentry-sdk reads ``SENTRY_ENVIRONMENT``, ``SENTRY_RELEASE`` and ``SENTRY_DEBUG`` itself;
``SENTRY_SAMPLE_RATE`` (0-1, default 1) samples error events.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, cast

from unilingo import tracing

if TYPE_CHECKING:
    from sentry_sdk.integrations import Integration
    from sentry_sdk.types import Event

ENABLED = False
_NOOP = nullcontext()
_JOB_URL = re.compile(r"/api/jobs/([0-9a-fA-F-]{8,64})(?:/|$|\?)")
_TASK_TYPES = {
    "unilingo.flashcards": "flashcards",
    "unilingo.lesson": "lesson",
    "unilingo.pronunciation": "pronunciation",
    "unilingo.ocr": "ocr",
    "unilingo.pdf": "pdf",
    "unilingo.tts": "tts",
}


def configured() -> bool:
    return bool(os.environ.get("SENTRY_DSN", "").strip())


def setup(component: str) -> bool:
    """Start error reporting for this process (``component``: ``api`` or ``worker``)."""
    global ENABLED
    if ENABLED:
        return True
    if not configured():
        return False
    import sentry_sdk

    if component == "api":
        from sentry_sdk.integrations.fastapi import FastApiIntegration
        from sentry_sdk.integrations.starlette import StarletteIntegration

        integrations: list[Integration] = [StarletteIntegration(), FastApiIntegration()]
    else:
        from sentry_sdk.integrations.celery import CeleryIntegration

        # Our messages are built by hand (unilingo.messages) and carry W3C trace context.
        integrations = [CeleryIntegration(propagate_traces=False)]
    sentry_sdk.init(
        dsn=os.environ["SENTRY_DSN"].strip(),
        integrations=integrations,
        auto_enabling_integrations=False,
        # No personal data: no user details or cookies, no request bodies (learners' texts),
        # no frame locals (they hold raw ASGI headers: bearer tokens). Tracebacks stay whole.
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        sample_rate=float(os.environ.get("SENTRY_SAMPLE_RATE") or 1.0),
        traces_sample_rate=None,
        before_send=before_send,
    )
    sentry_sdk.get_global_scope().set_tag("component", component)
    ENABLED = True
    return True


def before_send(event: Event, hint: dict[str, Any]) -> Event:
    """Fill ``job_id``/``job_type`` from what the event already says, and the trace id."""
    fields = cast(dict[str, Any], event)  # sentry's Event types its free-form parts as object
    tags = fields.setdefault("tags", {})
    if "job_id" not in tags:
        task_name = ((fields.get("extra") or {}).get("celery-job") or {}).get("task_name")
        if task_name in _TASK_TYPES and tags.get("celery_task_id"):
            tags["job_id"] = tags["celery_task_id"]  # a job's task id is its job id
            tags.setdefault("job_type", _TASK_TYPES[task_name])
        else:
            url = (fields.get("request") or {}).get("url") or ""
            if match := _JOB_URL.search(url):
                tags["job_id"] = match.group(1)
    trace_id = tracing.current_trace_id()
    if trace_id and "trace_id" not in tags:
        tags["trace_id"] = trace_id
    return event


def tag_job(job_id: str, job_type: str) -> None:
    """Tag what the current request or task reports from now on with its job."""
    if not ENABLED:
        return
    import sentry_sdk

    sentry_sdk.set_tags({"job_id": job_id, "job_type": job_type})


def job_scope(job_id: str, job_type: str):
    """A scope whose reports carry the job's tags: around a job's run."""
    if not ENABLED:
        return _NOOP
    return _job_scope(job_id, job_type)


@contextmanager
def _job_scope(job_id: str, job_type: str) -> Iterator[None]:
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tags({"job_id": job_id, "job_type": job_type})
        yield


def capture(exc: BaseException) -> None:
    """Report an exception that is handled (a job's internal error is recorded, not raised)."""
    if not ENABLED:
        return
    import sentry_sdk

    sentry_sdk.capture_exception(exc)


def flush(timeout: float = 2.0) -> None:
    if ENABLED:
        import sentry_sdk

        sentry_sdk.flush(timeout)
