"""Celery tasks: one per job type, each routed to its workload's queue. Thin by design."""

from __future__ import annotations

from celery import signals

from unilingo import errors_reporting, tracing
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

    @app.task(name=workload.task, queue=workload.queue, acks_late=True, bind=True)
    def task(self, job_id: str) -> str:
        # The run is a child of the submit's span (traceparent in the message headers);
        # what it reports to Sentry carries its job. Both no-ops when not configured.
        with (
            tracing.processing(self.request, job_id, job_type.value, workload.queue) as span,
            errors_reporting.job_scope(job_id, job_type.value),
        ):
            outcome = str(run(job_id, handler))
            tracing.set_attributes(span, {"unilingo.job.outcome": outcome})
            return outcome


for _type, _handler in HANDLERS.items():
    _register(_type, _handler)


@signals.worker_process_init.connect
def _warm_up(**_):
    """Build SDK clients before the first job, so a granted permit is spent at once.

    The provider counts a call when it arrives; seconds spent importing and connecting
    between our grant and the arrival would eat into the limiter's window margin.
    """
    tracing.setup(tracing.WORKER_SERVICE)  # per pool child: no exporter thread crosses the fork
    openai_chat.client()


@signals.worker_process_shutdown.connect
def _flush_telemetry(**_):
    tracing.shutdown()  # a pool child leaves by os._exit: no atexit flush
    errors_reporting.flush()
