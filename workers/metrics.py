"""The worker's ``/metrics`` endpoint: its exposition under Celery's prefork pool.

What a worker records (every metric is defined once, in ``unilingo.metrics``) is recorded
where it happens: the runner (runs, provider calls, permits, cache) and the housekeeping loop
(recovered jobs). This module makes those values visible to a scrape.

A Celery worker is a main process that forks ``WORKER_CONCURRENCY`` pool children; the jobs
run in the children. A Prometheus counter held in one child's memory would be seen by no
scrape, so the worker uses prometheus-client's multiprocess mode:

* ``worker_init`` (main process, before the pool forks): every metric value from now on is
  kept in memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` (default: a fresh folder
  under the temp dir, named after the main process; folders of killed workers are removed),
  one file per process and kind. The folder is emptied first, so a restarted worker never
  adds an earlier run's counts.
  The series the worker can produce are created at 0, so rates and ratios exist from the
  first scrape.
* ``worker_ready``: the main process serves the sum of every file on
  ``WORKER_METRICS_HOST``:``WORKER_METRICS_PORT`` (default 127.0.0.1:9808; port ``0`` turns
  the endpoint and multiprocess mode off) at ``/metrics``. A port that is taken is logged, not
  fatal: the jobs matter more.
* ``worker_process_shutdown`` (a child leaving) marks the process dead, so its live gauges
  (``unilingo_jobs_running``) leave the sum; a child that was SIGKILLed cannot, so the
  housekeeping loop sweeps dead processes' files every few seconds (``sweep``).
  Counters and histograms of dead children stay in the sum: a counter must not go back.

The alternative, adding every worker's counters up in Redis, would make each event a Redis
write and lose Prometheus's per-pod view; it is used only for the small set of cluster totals
the JSON endpoints show (``unilingo.metrics.TOTALS``), written once per job.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import time

from celery import signals

from unilingo import metrics
from unilingo.settings import get_settings

log = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0

_state: dict = {"port": 0, "dir": None, "owned_dir": False, "server": None, "last_sweep": 0.0}


_OWN_PREFIX = "unilingo-worker-metrics-"


def _remove_orphans() -> None:
    """Folders this module made for workers that died without cleaning up (SIGKILL)."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"{_OWN_PREFIX}*")):
        try:
            pid = int(folder.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


def prepare(queues: list[str] | None = None) -> str | None:
    """Multiprocess mode for this worker (main process, before the pool forks)."""
    port = get_settings().worker_metrics_port
    _state["port"] = port
    queues = queues if queues is not None else get_settings().queues()
    if port <= 0:
        metrics.init_worker_series(queues)
        return None
    path = metrics.multiprocess_dir()
    if not path:
        _remove_orphans()
        path = os.path.join(tempfile.gettempdir(), f"{_OWN_PREFIX}{os.getpid()}")
        _state["owned_dir"] = True
    metrics.enable_multiprocess(path, clean=True)
    _state["dir"] = path
    metrics.init_worker_series(queues)
    return path


def serve(host: str | None = None) -> None:
    """Serve ``/metrics`` from the main process (a thread); a taken port is logged, not fatal."""
    port = _state["port"]
    if port <= 0 or _state["server"] is not None:
        return
    from prometheus_client import start_http_server

    host = host or get_settings().worker_metrics_host

    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.exposition_registry())
    except OSError as exc:
        log.error("worker metrics: cannot listen on port %s (%s); /metrics is off for this worker", port, exc)
        return
    _state["server"] = server
    log.info("worker metrics on :%s/metrics (%s)", port, _state["dir"])


def sweep(force: bool = False) -> None:
    """Forget the live gauges of pool children that died without saying so (housekeeping)."""
    now = time.monotonic()
    if not _state["dir"] or (not force and now - _state["last_sweep"] < SWEEP_SECONDS):
        return
    _state["last_sweep"] = now
    try:
        dead = metrics.sweep_dead_processes(_state["dir"])
    except OSError:
        return
    if dead:
        log.info("worker metrics: swept the files of dead processes %s", dead)


@signals.worker_init.connect
def _on_worker_init(**_):
    prepare()


@signals.worker_ready.connect
def _on_worker_ready(**_):
    serve()


@signals.worker_process_init.connect
def _on_child_start(**_):
    server = _state["server"]
    if server is not None:  # the child inherited the listening socket: only the main process serves
        try:
            server.socket.close()
        except OSError:
            pass
        _state["server"] = None


@signals.worker_process_shutdown.connect
def _on_child_exit(**_):
    if _state["dir"]:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), _state["dir"])


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_):
    server = _state["server"]
    if server is not None:
        server.shutdown()
        _state["server"] = None
    if _state["owned_dir"] and _state["dir"]:
        shutil.rmtree(_state["dir"], ignore_errors=True)
