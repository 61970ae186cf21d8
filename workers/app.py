"""The Celery application: one app, one queue per workload class.

Reliability settings, and why:
- ``task_acks_late`` + ``worker_prefetch_multiplier=1``: a message is acknowledged only after
  its job ran, and a worker holds one job per process, so a dead worker loses nothing and
  hoards nothing.
- ``task_reject_on_worker_lost``: a child killed mid-job puts its message back at once.
- Our own lease (``unilingo.jobs``) recovers jobs whose whole worker died, in seconds rather
  than after the broker's visibility timeout; the visibility timeout stays long so that a
  long job is never delivered twice while it is healthy.
- Results live in the job record, so Celery's result backend is off.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from unilingo import errors_reporting
from unilingo.connections import celery_broker
from unilingo.jobs import QUEUES
from unilingo.settings import get_settings

settings = get_settings()

broker_url, broker_options = celery_broker(settings)
app = Celery("unilingo", broker=broker_url, include=["workers.tasks"])
app.conf.update(
    task_queues=[Queue(name, routing_key=name) for name in QUEUES],
    task_default_queue="ai",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_soft_time_limit=settings.job_timeout_seconds,
    task_time_limit=settings.job_timeout_seconds + 30,
    broker_transport_options={"visibility_timeout": 2 * settings.job_timeout_seconds + 600, **broker_options},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    worker_enable_remote_control=True,
)

# Sentry (when SENTRY_DSN is set) before any task tracer is built, in the main process.
errors_reporting.setup("worker")

# The housekeeping loop runs in every worker's main process.
# Past WORKER_DRAIN_SECONDS of a warm shutdown, running jobs are handed back.
import workers.drain  # noqa: E402
import workers.housekeeping  # noqa: E402,F401
