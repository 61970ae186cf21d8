"""Celery tasks: one per job type, each routed to its workload's queue. Thin by design."""

from __future__ import annotations

from celery import signals

from unilingo.jobs import WORKLOADS, JobType
from workers.app import app
from workers.handlers import ai, ocr, pdf, speech, tts
from workers.providers import openai_chat
from workers.runner import run

HANDLERS = {
    JobType.FLASHCARDS: ai.flashcards,
    JobType.LESSON: ai.lesson,
    JobType.PDF: pdf.extract,
    JobType.PRONUNCIATION: speech.pronunciation,
    JobType.OCR: ocr.read_image,
    JobType.TTS: tts.synthesize,
}


def _register(job_type: JobType, handler) -> None:
    workload = WORKLOADS[job_type]

    @app.task(name=workload.task, queue=workload.queue, acks_late=True)
    def task(job_id: str) -> str:
        return run(job_id, handler)


for _type, _handler in HANDLERS.items():
    _register(_type, _handler)


@signals.worker_process_init.connect
def _warm_up(**_):
    """Build SDK clients before the first job, so a granted permit is spent at once.

    The provider counts a call when it arrives; seconds spent importing and connecting
    between our grant and the arrival would eat into the limiter's window margin.
    """
    openai_chat.client()
