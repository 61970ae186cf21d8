"""Celery tasks: one per job type, each routed to its workload's queue. Thin by design."""

from __future__ import annotations

from unilingo.jobs import WORKLOADS, JobType
from workers.app import app
from workers.handlers import ai, pdf
from workers.runner import run

HANDLERS = {
    JobType.FLASHCARDS: ai.flashcards,
    JobType.LESSON: ai.lesson,
    JobType.PDF: pdf.extract,
}


def _register(job_type: JobType, handler) -> None:
    workload = WORKLOADS[job_type]

    @app.task(name=workload.task, queue=workload.queue, acks_late=True)
    def task(job_id: str) -> str:
        return run(job_id, handler)


for _type, _handler in HANDLERS.items():
    _register(_type, _handler)
