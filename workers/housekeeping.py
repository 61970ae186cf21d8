"""The loop every worker's main process runs beside Celery's consumer.

It queues again the jobs whose wait is over (deferred for a permit, or backing off after a
transient error), recovers jobs whose worker died (lapsed lease) or whose message a dying
consumer took off the queue before claiming the job, and announces this worker as alive (in a
pod, with its count of running jobs: ``unilingo.scaling``). Every step is an atomic script, so
any number of workers can run the loop at once without doing a thing twice.

Webhooks go out from a loop of their own (``WebhookLoop``): a receiver that answers slowly
must never delay this one, whose announcements tell the cluster the worker is alive.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import redis
from celery import signals
from celery.worker import state as worker_state

from unilingo import keys, metrics, scaling, webhooks
from unilingo.connections import redis_client
from unilingo.jobs import JobStore
from unilingo.settings import get_settings
from workers import metrics as metrics_endpoint  # also connects the worker's /metrics signals

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.25
RESCUE_SECONDS = 10.0  # how often the queues are checked for messages taken but never claimed
ANNOUNCE_SECONDS = 1.0  # how often this worker says it consumes its queues (alive: keys.WORKER_ALIVE_SECONDS)
FORGET_SECONDS = 300.0  # a queue's workers silent this long leave its set


class Housekeeper(threading.Thread):
    def __init__(self, name: str):
        super().__init__(daemon=True, name="unilingo-housekeeping")
        self.worker_name = name
        self.stopped = threading.Event()
        settings = get_settings()
        self.settings = settings
        self.client = redis_client(settings)
        self.store = JobStore(self.client, ttl=settings.job_ttl_seconds)
        self.queues = settings.queues()
        self._announced = 0.0
        self._rescued = 0.0
        self._busy: tuple[int, float] | None = None  # the count last published, and when

    def tick(self) -> None:
        self.store.promote_due()
        # Recovered: a job whose worker died (its lease lapsed), or whose message a dying
        # consumer took off the queue before the job was claimed.
        metrics.jobs_recovered("lease_expired", self.store.requeue_stalled())
        now = time.time()
        if now - self._rescued >= RESCUE_SECONDS:
            for queue in self.queues:
                metrics.jobs_recovered("message_lost", self.store.rescue_lost(queue))
            self._rescued = now
        self.client.zadd(keys.workers_alive(), {self.worker_name: now})
        if now - self._announced >= ANNOUNCE_SECONDS:
            self.announce(now)
            self._announced = now
        self.publish_busy(now)
        metrics_endpoint.sweep()

    def announce(self, now: float) -> None:
        """This worker consumes each of its queues (``unilingo_workers_alive{queue}``)."""
        pipe = self.client.pipeline(transaction=False)
        for queue in self.queues:
            key = keys.workers_of_queue(queue)
            pipe.zadd(key, {self.worker_name: now})
            pipe.zremrangebyscore(key, "-inf", now - FORGET_SECONDS)
        pipe.execute()

    def leave(self) -> None:
        """This worker is gone: no longer alive for any of its queues."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(keys.workers_alive(), self.worker_name)
        for queue in self.queues:
            pipe.zrem(keys.workers_of_queue(queue), self.worker_name)
        pipe.execute()

    def publish_busy(self, now: float) -> None:
        """In a pod: how many jobs this worker runs, when it changes and every few seconds."""
        pod, namespace = self.settings.pod_name, self.settings.pod_namespace
        if not (pod and namespace):
            return
        busy = len(worker_state.active_requests)
        if self._busy is None or self._busy[0] != busy or now - self._busy[1] >= scaling.BUSY_REFRESH_SECONDS:
            scaling.publish_busy(self.client, namespace, pod, busy)
            self._busy = (busy, now)

    def run(self) -> None:
        while not self.stopped.wait(INTERVAL_SECONDS):
            try:
                self.tick()
            except redis.RedisError as exc:
                log.warning("housekeeping: redis unavailable (%s); retrying", exc)
            except Exception:
                log.exception("housekeeping step failed")

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.leave()
        except redis.RedisError:
            pass


class WebhookLoop(threading.Thread):
    """Sends due webhooks (``unilingo.webhooks.deliver_due_async``) on an asyncio loop of its
    own: at most ``webhook_concurrency`` at once, each attempt within its total deadline."""

    def __init__(self):
        super().__init__(daemon=True, name="unilingo-webhooks")
        self.stopped = threading.Event()
        self.settings = get_settings()
        self.client = redis_client(self.settings)

    def run(self) -> None:
        asyncio.run(self._deliver())

    async def _deliver(self) -> None:
        while not self.stopped.is_set():
            try:
                sent = await webhooks.deliver_due_async(self.client, self.settings)
            except redis.RedisError as exc:
                log.warning("webhooks: redis unavailable (%s); retrying", exc)
                sent = 0
            except Exception:
                log.exception("webhook delivery round failed")
                sent = 0
            if not sent:
                await asyncio.sleep(INTERVAL_SECONDS)

    def stop(self) -> None:
        self.stopped.set()


_housekeeper: Housekeeper | None = None
_webhook_loop: WebhookLoop | None = None


@signals.worker_ready.connect
def _start(sender=None, **_):
    global _housekeeper, _webhook_loop
    name = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}"
    _housekeeper = Housekeeper(name)
    _housekeeper.start()
    _webhook_loop = WebhookLoop()
    _webhook_loop.start()


@signals.worker_shutting_down.connect
def _stop(**_):
    if _housekeeper is not None:
        _housekeeper.stop()
    if _webhook_loop is not None:
        _webhook_loop.stop()
