"""Celery task messages built without a broker round trip.

The API's submit path records the job and pushes its Celery message to the queue's Redis
list in one Lua script (``jobs.JobStore.create``). For that it needs the exact bytes that
kombu's Redis transport would LPUSH; Celery's own ``amqp.as_task_v2`` builds the protocol-2
headers and body, and this module wraps them the way ``kombu.transport.redis`` does. The
stored bytes are pushed again unchanged when a job is requeued, so a job keeps one task id,
and one trace: the headers carry the W3C ``traceparent`` of the span current when the message
is built (``unilingo.tracing``; nothing is added when tracing is off).
"""

from __future__ import annotations

import base64
import uuid
from functools import lru_cache

import orjson
from celery import Celery

from unilingo import tracing


@lru_cache
def _protocol() -> Celery:
    # A bare app: as_task_v2 only formats, it never connects.
    return Celery("unilingo-messages", set_as_current=False)


def task_message(task_name: str, queue: str, args: list, task_id: str | None = None) -> bytes:
    task_id = task_id or uuid.uuid4().hex
    headers, properties, body, _ = _protocol().amqp.as_task_v2(task_id, task_name, args=args, kwargs={})
    tracing.inject(headers)  # Celery copies message headers onto task.request
    properties = dict(properties)
    properties.update(
        delivery_mode=2,
        priority=0,
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
        delivery_info={"exchange": queue, "routing_key": queue},
    )
    message = {
        "body": base64.b64encode(orjson.dumps(body)).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return orjson.dumps(message, default=str)
