"""OpenTelemetry tracing: one trace follows a job from its HTTP request to its provider calls.

The shape of a job's trace::

    POST /api/ai/generate-flashcards      unilingo-api     SERVER    (FastAPI's own span)
    └─ send ai                            unilingo-api     PRODUCER  (api.submission)
       └─ process ai                      unilingo-worker  CONSUMER  (workers.tasks)
          └─ provider_call openai         unilingo-worker  INTERNAL  (JobContext.provider_call)
             └─ POST                      unilingo-worker  CLIENT    (httpx instrumentation)

The W3C ``traceparent`` (and ``tracestate``) of the ``send`` span travel in the Celery
message headers that ``unilingo.messages.task_message`` builds. The job record keeps those
bytes and pushes them again on every requeue (deferred, retried, recovered), so every run of
a job lands in the trace of the request that created it. Celery copies message headers onto
``task.request``, where ``consume`` reads them.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``), and then free: the SDK is never imported, ``span`` and
``consume`` hand back one shared no-op context manager and ``inject`` returns at once.
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off too.

On: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and the OTLP/HTTP (protobuf)
exporter. The service name is ``unilingo-api`` or ``unilingo-worker`` unless
``OTEL_SERVICE_NAME`` or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES`` says otherwise;
every other standard variable (``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_*_HEADERS``/``_TIMEOUT``/``_COMPRESSION``/certificates,
``OTEL_PROPAGATORS``, ``OTEL_RESOURCE_ATTRIBUTES``) is read by the SDK itself. FastAPI
(0.163+) traces requests natively once a tracer provider is set; the ``httpx`` client
instrumentation, when installed, adds a span per SDK HTTP call.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

log = logging.getLogger(__name__)

API_SERVICE = "unilingo-api"
WORKER_SERVICE = "unilingo-worker"

# The W3C headers carried in a Celery message (``baggage`` too, when a propagator sets it).
CARRIED_HEADERS = ("traceparent", "tracestate", "baggage")

ENABLED = False  # read on every hot path: a module global, nothing else
_NOOP = nullcontext()
_lock = threading.Lock()
_provider: Any = None
_decided = False


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for trace export (the standard ``OTEL_*`` variables)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()}
    if exporters and "otlp" not in exporters:
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def resource_attributes(service_name: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our default ``service.name``, unless the standard variables name the service."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SERVICE_NAME"):
        return {}
    declared = [pair.split("=", 1)[0].strip() for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")]
    if "service.name" in declared:
        return {}
    return {"service.name": service_name}


def setup(service_name: str) -> bool:
    """Configure tracing for this process once; ``False`` (and nothing imported) when off.

    Call it in the process that makes the spans: the API process, and each Celery pool
    child (``worker_process_init``), so that no exporter thread crosses a fork.
    """
    global ENABLED, _provider, _decided
    if _decided:
        return ENABLED
    with _lock:
        if _decided:
            return ENABLED
        if not configured():
            _decided = True
            return False
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol != "http/protobuf":
            log.warning("OTLP protocol %r is not installed here; exporting over http/protobuf", protocol)
        current = trace.get_tracer_provider()
        if type(current).__name__ != "ProxyTracerProvider":
            # Someone (opentelemetry-instrument, a test) configured tracing already: use theirs.
            _provider = None
        else:
            provider = TracerProvider(resource=Resource.create(resource_attributes(service_name)))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
            _provider = provider
        _instrument_httpx()
        ENABLED = True
        _decided = True
        log.info("tracing on: %s exports OTLP/HTTP spans", service_name)
        return True


def _instrument_httpx() -> None:
    """A child span per HTTP call of the SDKs that use httpx or httpx2 (OpenAI's); optional."""
    try:
        from opentelemetry.instrumentation import httpx as instrumentation
    except ImportError:  # pragma: no cover - the instrumentation is an optional extra
        return
    # The stable HTTP conventions (``http.response.status_code``, ``url.full``), as FastAPI's
    # server spans use, unless the standard variable chooses otherwise.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    for name in ("HTTPXClientInstrumentor", "HTTPX2ClientInstrumentor"):
        instrumentor_class = getattr(instrumentation, name, None)
        if instrumentor_class is None or instrumentor_class._module is None:  # that client is not installed
            continue
        instrumentor = instrumentor_class()
        if not instrumentor.is_instrumented_by_opentelemetry:
            try:
                instrumentor.instrument()
            except Exception:  # pragma: no cover - a version mismatch must not stop the service
                log.warning("could not instrument %s", name, exc_info=True)


def shutdown() -> None:
    """Export what is buffered and stop (a pool child's exit skips ``atexit``)."""
    if _provider is not None:
        try:
            _provider.shutdown()
        except Exception:  # pragma: no cover - never fail a shutdown over telemetry
            log.exception("tracing shutdown failed")


def force_flush(timeout_millis: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def _reset_for_tests() -> None:
    global ENABLED, _provider, _decided, _TRACER
    ENABLED, _provider, _decided, _TRACER = False, None, False, None


# --- spans -------------------------------------------------------------------------------


_TRACER: Any = None


def _tracer():
    global _TRACER
    if _TRACER is None:
        from opentelemetry import trace

        _TRACER = trace.get_tracer("unilingo")
    return _TRACER


def _kind(name: str):
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


def span(name: str, kind: str = "internal", attributes: dict[str, Any] | None = None):
    """A context manager for a child span of the current one; yields the span, or None when off.

    An exception leaving the block is recorded on the span and sets its status to error.
    """
    if not ENABLED:
        return _NOOP
    return _tracer().start_as_current_span(name, kind=_kind(kind), attributes=_clean(attributes))


def inject(headers: dict[str, Any]) -> dict[str, Any]:
    """Add the current trace context (``traceparent``...) to message headers, in place."""
    if ENABLED:
        from opentelemetry import propagate

        propagate.inject(headers)
    return headers


def carried(request: Any) -> dict[str, str] | None:
    """The trace headers of a Celery task request (or any mapping), or None."""
    if not ENABLED or request is None:
        return None
    if isinstance(request, Mapping):
        found = {k: request[k] for k in CARRIED_HEADERS if isinstance(request.get(k), str)}
    else:
        found = {k: v for k in CARRIED_HEADERS if isinstance(v := getattr(request, k, None), str)}
    return found or None


def _job_attributes(job_id: str, job_type: str, queue: str, operation: str) -> dict[str, Any]:
    return {
        "unilingo.job.id": job_id,
        "unilingo.job.type": job_type,
        "messaging.system": "celery",
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "messaging.operation.type": operation,
    }


def enqueueing(job_id: str, job_type: str, queue: str):
    """The span (PRODUCER) current while a job's message is built and pushed: the job's parent."""
    if not ENABLED:
        return _NOOP
    return _tracer().start_as_current_span(
        f"send {queue}", kind=_kind("producer"), attributes=_job_attributes(job_id, job_type, queue, "send")
    )


@contextmanager
def _processing(carrier: dict[str, str] | None, job_id: str, job_type: str, queue: str) -> Iterator[Any]:
    from opentelemetry import propagate

    parent = propagate.extract(carrier or {})
    attributes = _job_attributes(job_id, job_type, queue, "process")
    with _tracer().start_as_current_span(
        f"process {queue}", context=parent, kind=_kind("consumer"), attributes=attributes
    ) as current:
        yield current


def processing(request: Any, job_id: str, job_type: str, queue: str):
    """The span (CONSUMER) of one run of a job, a child of ``enqueueing``'s span whose context
    the message headers carry (``request``: Celery's ``task.request``, or a mapping)."""
    if not ENABLED:
        return _NOOP
    return _processing(carried(request), job_id, job_type, queue)


def provider_span(provider: str, tokens: int):
    """The span (INTERNAL) of one provider call (``JobContext.provider_call``); yields None when off.

    It carries what the call's observers saw: ``unilingo.provider``,
    ``unilingo.provider.tokens_requested`` (the limiter's estimate), ``unilingo.permit``
    (``granted`` or why not: the values of ``unilingo_permits_total{outcome}``) and, once the
    call ran, ``call_ended``'s. An exception leaving the span is not judged by the span: a
    refused permit is flow control, not an error, and a call's error is ``call_ended``'s.
    """
    if not ENABLED:
        return _NOOP
    return _tracer().start_as_current_span(
        f"provider_call {provider}",
        kind=_kind("internal"),
        attributes={"unilingo.provider": provider, "unilingo.provider.tokens_requested": tokens},
        record_exception=False,
        set_status_on_exception=False,
    )


def call_ended(current: Any, outcome: str, exc: BaseException | None, tokens_used: int | None) -> None:
    """Record a provider call's outcome (``unilingo.outcomes.CallOutcome``) on its span:
    ``unilingo.provider.outcome``, ``unilingo.provider.tokens_used`` (what the provider
    reported), and the exception as the span's error when the call raised one."""
    if current is None:
        return
    current.set_attribute("unilingo.provider.outcome", str(outcome))
    if tokens_used:
        current.set_attribute("unilingo.provider.tokens_used", tokens_used)
    if exc is not None:
        from opentelemetry.trace import Status, StatusCode

        current.record_exception(exc)
        current.set_status(Status(StatusCode.ERROR, str(outcome)))


def set_attributes(current: Any, attributes: dict[str, Any]) -> None:
    """Set attributes on a span that ``enqueueing``/``processing``/``span`` yielded (None when off)."""
    if current is not None:
        current.set_attributes(_clean(attributes))


def record_error(exc: BaseException) -> None:
    """Mark the current span failed by ``exc`` (for errors that are handled, not raised)."""
    if not ENABLED:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    current = trace.get_current_span()
    current.record_exception(exc)
    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def current_trace_id() -> str | None:
    """The current trace id in hex (to tie an error report to its trace), or None."""
    if not ENABLED:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _clean(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return attributes
    return {k: v for k, v in attributes.items() if v is not None}
