"""``python -m workers`` (``make worker``): a Celery worker for WORKER_QUEUES, in the foreground.

In a container the worker is PID 1, and the kernel ignores a signal PID 1 has no handler for:
a SIGTERM that arrives while Celery is still starting (KEDA scaling a new Deployment back to
zero, a rollout superseding a pod) would be lost, and the pod would wait out its whole
termination grace (the job timeout) before the kubelet's SIGKILL. So a handler is installed
first thing when the worker is PID 1; a SIGTERM it catches becomes Celery's warm shutdown as
soon as the worker is ready.
"""

import os
import signal

_term_before_ready = False


def _remember_term(signum, frame) -> None:
    global _term_before_ready
    _term_before_ready = True


if os.getpid() == 1:  # elsewhere SIGTERM's default (exit at once) is right before Celery is up
    signal.signal(signal.SIGTERM, _remember_term)

import socket  # noqa: E402 - after the handler: these imports take seconds on a busy node

from celery import signals  # noqa: E402

from unilingo.settings import get_settings  # noqa: E402
from workers.app import app  # noqa: E402


@signals.worker_ready.connect
def _honour_early_term(**_) -> None:
    if _term_before_ready:
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's own handler now: a warm shutdown


def main() -> None:
    settings = get_settings()
    queues = ",".join(settings.queues())
    app.worker_main(
        [
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(settings.worker_concurrency),
            "--hostname",
            f"{queues.replace(',', '-')}@{socket.gethostname()}-{os.getpid()}",
            "--loglevel",
            settings.worker_log_level,
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
