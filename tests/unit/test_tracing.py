"""Tracing and error reporting without I/O: what is configured from the environment, what a
message carries, how spans nest and what they say, and that both are inert when off.

Spans go to an in-memory exporter through a local tracer provider (never the global one, so
no other test in this process is traced).
"""

from __future__ import annotations

import base64
import subprocess
import sys

import orjson
import pytest
from celery.app.task import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from unilingo import errors_reporting, tracing
from unilingo.messages import task_message

JOB = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def spans():
    """Tracing on, for this test only, with finished spans collected in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing._reset_for_tests()
    tracing.ENABLED, tracing._decided, tracing._TRACER = True, True, provider.get_tracer("test")
    yield exporter
    tracing._reset_for_tests()


def headers_of(message: bytes) -> dict:
    return orjson.loads(message)["headers"]


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, on",
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "console,otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ],
)
def test_tracing_is_on_only_with_an_otlp_endpoint(env, on):
    assert tracing.configured(env) is on


def test_the_service_is_named_unless_the_environment_names_it():
    assert tracing.resource_attributes("unilingo-api", {}) == {"service.name": "unilingo-api"}
    assert tracing.resource_attributes("unilingo-api", {"OTEL_SERVICE_NAME": "edge-api"}) == {}
    assert tracing.resource_attributes("unilingo-worker", {"OTEL_RESOURCE_ATTRIBUTES": "a=b, service.name=w"}) == {}
    assert tracing.resource_attributes(
        "unilingo-worker", {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"}
    ) == {"service.name": "unilingo-worker"}


# --- off -------------------------------------------------------------------------------------


def test_off_everything_is_the_shared_no_op():
    tracing._reset_for_tests()
    assert not tracing.ENABLED
    assert tracing.enqueueing(JOB, "flashcards", "ai") is tracing._NOOP
    assert (
        tracing.processing(Context(traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"), JOB, "flashcards", "ai")
        is tracing._NOOP
    )
    assert tracing.span("x") is tracing._NOOP
    assert tracing.inject({}) == {}
    assert tracing.carried({"traceparent": "x"}) is None
    assert tracing.current_trace_id() is None
    tracing.set_attributes(None, {"a": 1})
    tracing.record_error(RuntimeError("x"))
    headers = headers_of(task_message("unilingo.flashcards", "ai", [JOB], task_id=JOB))
    assert not set(headers) & set(tracing.CARRIED_HEADERS)


def test_off_nothing_is_imported_or_configured():
    """The API app and the submit path's helpers, without OTEL_*/SENTRY_DSN: no tracing SDK,
    exporter, instrumentation or sentry-sdk loaded. (redis-py imports the SDK's metrics part
    when it is installed, for its own opt-in metrics: not ours.)"""
    code = (
        "import os, sys\n"
        "for k in list(os.environ):\n"
        "    if k.startswith(('OTEL_', 'SENTRY_')): del os.environ[k]\n"
        "from api.main import create_app\n"
        "from unilingo import tracing, errors_reporting\n"
        "from unilingo.messages import task_message\n"
        "create_app()\n"
        "with tracing.enqueueing('j', 'flashcards', 'ai'):\n"
        "    task_message('unilingo.flashcards', 'ai', ['j'], task_id='j')\n"
        "errors_reporting.tag_job('j', 'flashcards')\n"
        "from opentelemetry import trace\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', "
        "'opentelemetry.exporter', 'opentelemetry.instrumentation', 'sentry_sdk')))\n"
        "print(type(trace.get_tracer_provider()).__name__, tracing.ENABLED, errors_reporting.ENABLED, loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "ProxyTracerProvider False False []"


# --- on: one trace through the message ----------------------------------------------------------


def test_the_message_carries_the_enqueueing_span_and_the_run_is_its_child(spans):
    with tracing.enqueueing(JOB, "flashcards", "ai") as send:
        message = task_message("unilingo.flashcards", "ai", [JOB], task_id=JOB)
    headers = headers_of(message)
    context = send.get_span_context()
    assert headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert headers["id"] == JOB and headers["task"] == "unilingo.flashcards"  # Celery's own headers kept
    body = orjson.loads(base64.b64decode(orjson.loads(message)["body"]))
    assert body[0] == [JOB]

    # Celery copies message headers onto task.request: the worker reads them there.
    request = Context(headers)
    assert tracing.carried(request) == {"traceparent": headers["traceparent"]}
    with tracing.processing(request, JOB, "flashcards", "ai") as run:
        tracing.set_attributes(run, {"unilingo.job.outcome": "succeeded"})

    send_span, run_span = spans.get_finished_spans()
    assert (send_span.name, send_span.kind) == ("send ai", SpanKind.PRODUCER)
    assert (run_span.name, run_span.kind) == ("process ai", SpanKind.CONSUMER)
    assert run_span.context.trace_id == send_span.context.trace_id
    assert run_span.parent.span_id == send_span.context.span_id
    assert run_span.attributes["unilingo.job.id"] == JOB
    assert run_span.attributes["unilingo.job.type"] == "flashcards"
    assert run_span.attributes["messaging.destination.name"] == "ai"
    assert run_span.attributes["unilingo.job.outcome"] == "succeeded"


def test_a_message_without_context_starts_a_new_trace(spans):
    with tracing.processing(Context({"id": JOB}), JOB, "pdf", "pdf"):
        pass
    (run_span,) = spans.get_finished_spans()
    assert run_span.parent is None


# --- on: handled errors (provider call spans: test_outcomes.py) ---------------------------------


def test_a_handled_error_marks_the_current_span(spans):
    with tracing.processing(None, JOB, "flashcards", "ai"):
        tracing.record_error(ValueError("handler bug"))
        assert tracing.current_trace_id() is not None
    (run_span,) = spans.get_finished_spans()
    assert run_span.status.status_code == StatusCode.ERROR
    assert run_span.events[0].attributes["exception.type"] == "ValueError"


# --- Sentry events -------------------------------------------------------------------------------


def test_error_reporting_is_off_without_a_dsn(monkeypatch):
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    assert not errors_reporting.configured()
    assert errors_reporting.setup("worker") is False
    assert errors_reporting.job_scope(JOB, "flashcards") is errors_reporting._NOOP
    errors_reporting.tag_job(JOB, "flashcards")
    errors_reporting.capture(RuntimeError("x"))


def test_events_get_the_job_from_the_celery_task_or_the_url():
    celery_event = {
        "tags": {"celery_task_id": JOB},
        "extra": {"celery-job": {"task_name": "unilingo.ocr", "args": "[Filtered]"}},
    }
    assert errors_reporting.before_send(celery_event, {})["tags"] == {
        "celery_task_id": JOB,
        "job_id": JOB,
        "job_type": "ocr",
    }
    url_event = {"request": {"url": f"http://api/api/jobs/{JOB}/events"}}
    assert errors_reporting.before_send(url_event, {})["tags"] == {"job_id": JOB}
    tagged = {"tags": {"job_id": "mine", "job_type": "tts"}, "request": {"url": f"http://api/api/jobs/{JOB}"}}
    assert errors_reporting.before_send(tagged, {})["tags"] == {"job_id": "mine", "job_type": "tts"}
    assert errors_reporting.before_send({"request": {"url": "http://api/api/health"}}, {})["tags"] == {}


def test_events_carry_the_trace_id_when_tracing_is_on(spans):
    with tracing.processing(None, JOB, "flashcards", "ai") as run:
        event = errors_reporting.before_send({}, {})
    assert event["tags"]["trace_id"] == f"{run.get_span_context().trace_id:032x}"
