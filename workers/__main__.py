"""``python -m workers`` (``make worker``): a Celery worker for WORKER_QUEUES, in the foreground."""

import os
import socket

from unilingo.settings import get_settings
from workers.app import app


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
