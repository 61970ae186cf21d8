"""Graceful drain: finish the running jobs within ``WORKER_DRAIN_SECONDS``, else hand them back.

SIGTERM starts Celery's warm shutdown in the main process: it stops taking messages and waits
for the jobs its pool processes run. Most finish in time. One still running when the drain
time is up would be killed by the kubelet soon after and sit out its lease before anyone ran it
again; instead the main process signals each pool process, whose running job then raises
``HandBack`` and is put back at the head of its queue, attempt uncounted, for another worker
to take at once. Its late answer, should the handler still produce one, is fenced out by the
job's run token.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import signals

from unilingo.errors import HandBack
from unilingo.settings import get_settings

log = logging.getLogger(__name__)

HAND_BACK_SIGNAL = signal.SIGUSR2  # free in Celery's pool processes (its rdb uses it only on request)

_pool = None  # main process: the worker's pool, once it is ready
_clock: threading.Timer | None = None  # main process: the drain clock, once started
_in_job = False  # pool process: a job's handler is running


@signals.worker_ready.connect
def _remember_pool(sender=None, **_) -> None:
    global _pool
    _pool = getattr(sender, "pool", None)


@signals.worker_shutting_down.connect
def _start_drain_clock(how: str = "", **_) -> None:
    """On the first warm-shutdown signal only: preStop's SIGTERM and the kubelet's both arrive."""
    global _clock
    if how != "Warm" or _clock is not None:
        return
    _clock = threading.Timer(get_settings().worker_drain_seconds, hand_back_running_jobs)
    _clock.daemon = True
    _clock.start()


def hand_back_running_jobs() -> None:
    pids = list((_pool.info if _pool is not None else {}).get("processes", []))
    log.warning(
        "drain time (%ss) is up: handing back the jobs still running in %d pool processes",
        get_settings().worker_drain_seconds,
        len(pids),
    )
    for pid in pids:
        try:
            os.kill(pid, HAND_BACK_SIGNAL)
        except ProcessLookupError:
            pass


@signals.worker_process_init.connect
def _listen_for_hand_back(**_) -> None:
    signal.signal(HAND_BACK_SIGNAL, _on_hand_back)


def _on_hand_back(signum, frame) -> None:
    if _in_job:
        raise HandBack()


@contextmanager
def handing_back_allowed() -> Iterator[None]:
    """Where a running job may be interrupted and handed back: while its handler works."""
    global _in_job
    _in_job = True
    try:
        yield
    finally:
        _in_job = False
