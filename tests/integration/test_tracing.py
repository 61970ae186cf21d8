"""Traces and error reports from real processes: ``python -m api`` and ``python -m workers``.

- OpenTelemetry: both processes export OTLP/HTTP to a receiver in this test, which decodes
  the ``ExportTraceServiceRequest`` protobufs. One job submitted over HTTP yields one trace
  holding the API's request and enqueue spans and the worker's run, provider-call and HTTP
  client spans, each linked to its parent.
- Sentry: both processes report to an ingest endpoint in this test (``SENTRY_DSN`` naming
  it); a job that crashes in its handler, and a submit that crashes in the API, each produce
  one event tagged with the job's id and type.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from devstack.processes import wait_until
from tests.support.api import ApiProcess, auth
from unilingo import keys
from unilingo.jobs import Job, JobStatus, JobStore, JobType, NewJob, new_job_id
from unilingo.messages import task_message


class Collector:
    """A tiny HTTP server: an OTLP/HTTP trace receiver, or a Sentry envelope endpoint."""

    def __init__(self):
        self.bodies: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding:
                    raise AssertionError(f"unexpected content encoding {encoding}")
                with collector.lock:
                    collector.bodies.append((self.path, body))
                if self.path == "/v1/traces":
                    reply, kind = ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
                else:
                    reply, kind = b"{}", "application/json"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posted(self, path: str) -> list[bytes]:
        with self.lock:
            return [body for p, body in self.bodies if p == path]

    # --- OTLP -------------------------------------------------------------------------------

    def spans(self) -> list[dict]:
        found = []
        for body in self.posted("/v1/traces"):
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            {
                                "service": resource.get("service.name"),
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex() or None,
                                "name": span.name,
                                "kind": Span.SpanKind.Name(span.kind),
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "status": span.status.code,
                            }
                        )
        return found

    # --- Sentry -----------------------------------------------------------------------------

    def events(self) -> list[dict]:
        """Error events from the envelopes posted to ``/api/<project>/envelope/``."""
        events = []
        for body in self.posted("/api/1/envelope/"):
            cursor = body.index(b"\n") + 1  # past the envelope header
            while cursor < len(body):
                end = body.find(b"\n", cursor)
                header_line = body[cursor : end if end >= 0 else len(body)]
                if not header_line.strip():
                    break
                item = json.loads(header_line)
                cursor = end + 1
                if item.get("length") is not None:
                    payload = body[cursor : cursor + item["length"]]
                    cursor += item["length"] + 1
                else:
                    end = body.find(b"\n", cursor)
                    end = len(body) if end < 0 else end
                    payload, cursor = body[cursor:end], end + 1
                if item.get("type") == "event":
                    events.append(json.loads(payload))
        return events


def _value(any_value):
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


@pytest.fixture
def clean_env(monkeypatch):
    """Processes started here inherit this environment: no stray OTEL_*/SENTRY_* from outside."""
    import os

    for name in list(os.environ):
        if name.startswith(("OTEL_", "SENTRY_")):
            monkeypatch.delenv(name)


@pytest.fixture
def collector(clean_env):
    with Collector() as running:
        yield running


def wait_for_job(http: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    def terminal():
        body = http.get(f"/api/jobs/{job_id}", headers=auth()).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    try:
        return wait_until(terminal, timeout=timeout, interval=0.1)
    except AssertionError:
        return http.get(f"/api/jobs/{job_id}", headers=auth()).json()


# --- OpenTelemetry --------------------------------------------------------------------------


def test_one_job_is_one_trace_across_the_api_and_the_worker(
    collector, redis_url, start_worker, sandbox_reset, tmp_path
):
    otel = {"otel_exporter_otlp_endpoint": collector.url, "otel_bsp_schedule_delay": 200}
    worker = start_worker(**otel)
    api = ApiProcess(redis_url, tmp_path, **otel).start()
    try:
        with httpx.Client(base_url=api.url, timeout=10) as http:
            response = http.post(
                "/api/ai/generate-flashcards",
                json={"content": f"Traces follow a job from request to provider ({time.time_ns()}).", "count": 2},
                headers=auth(),
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            job = wait_for_job(http, job_id)
            assert job["status"] == "succeeded", (job, worker.log()[-3000:])
    finally:
        api.stop()  # exits cleanly: what the API buffered is exported at exit

    def job_trace():
        spans = collector.spans()
        sends = [s for s in spans if s["name"] == "send ai" and s["attributes"].get("unilingo.job.id") == job_id]
        if not sends:
            return None
        trace = [s for s in spans if s["trace_id"] == sends[0]["trace_id"]]
        names = {s["name"] for s in trace}
        # The worker exports its spans 200 ms after they end: wait for the whole job.
        return (spans, trace) if {"process ai", "provider_call openai"} <= names else None

    spans, trace = wait_until(job_trace, timeout=15, interval=0.2)

    # Exactly one trace holds spans of both services, and it is this job's.
    services_by_trace: dict[str, set[str]] = {}
    for span in spans:
        services_by_trace.setdefault(span["trace_id"], set()).add(span["service"])
    shared = [t for t, services in services_by_trace.items() if {"unilingo-api", "unilingo-worker"} <= services]
    assert shared == [trace[0]["trace_id"]], services_by_trace

    by_id = {s["span_id"]: s for s in trace}
    assert len(by_id) == len(trace)

    def one(name: str) -> dict:
        matches = [s for s in trace if s["name"] == name]
        assert len(matches) == 1, (name, [s["name"] for s in trace])
        return matches[0]

    def ancestors(span: dict) -> list[dict]:
        chain = []
        while span["parent_id"] is not None:
            span = by_id[span["parent_id"]]  # every parent is in the trace: no broken link
            chain.append(span)
        return chain

    request = one("POST /api/ai/generate-flashcards")
    send = one("send ai")
    run = one("process ai")
    call = one("provider_call openai")

    # The API: the request is the root; enqueueing happens inside it.
    assert (request["service"], request["kind"], request["parent_id"]) == ("unilingo-api", "SPAN_KIND_SERVER", None)
    assert request["attributes"]["http.route"] == "/api/ai/generate-flashcards"
    assert request["attributes"]["http.response.status_code"] == 202
    assert (send["service"], send["kind"]) == ("unilingo-api", "SPAN_KIND_PRODUCER")
    assert request in ancestors(send)

    # Through the queue: the worker's run is the child of the enqueue span.
    assert (run["service"], run["kind"]) == ("unilingo-worker", "SPAN_KIND_CONSUMER")
    assert run["parent_id"] == send["span_id"]
    assert run["attributes"]["unilingo.job.id"] == job_id
    assert run["attributes"]["unilingo.job.type"] == "flashcards"
    assert run["attributes"]["unilingo.job.outcome"] == "succeeded"

    # The provider call, child of the run, with its permit's story.
    assert call["service"] == "unilingo-worker"
    assert call["parent_id"] == run["span_id"]
    assert call["attributes"]["unilingo.provider"] == "openai"
    assert call["attributes"]["unilingo.provider.outcome"] == "success"
    assert call["attributes"]["unilingo.provider.tokens_requested"] > 0
    assert call["attributes"]["unilingo.provider.tokens_used"] > 0

    # The SDK's HTTP request to the provider (httpx instrumentation), child of the call.
    http_calls = [s for s in trace if s["kind"] == "SPAN_KIND_CLIENT" and s["parent_id"] == call["span_id"]]
    assert len(http_calls) == 1, [s["name"] for s in trace]
    assert http_calls[0]["attributes"]["http.response.status_code"] == 200
    assert "/openai/v1/chat/completions" in http_calls[0]["attributes"]["url.full"]

    # Every span of the trace hangs from the request; none comes from elsewhere.
    for span in trace:
        assert span is request or request in ancestors(span), span["name"]
    assert {s["service"] for s in trace} == {"unilingo-api", "unilingo-worker"}


# --- Sentry ---------------------------------------------------------------------------------


def test_a_job_that_crashes_is_reported_to_sentry_with_its_job(collector, redis_url, start_worker, sandbox_reset):
    start_worker(sentry_dsn=f"http://publickey@{collector.url.removeprefix('http://')}/1")
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    now = time.time()
    # A handler bug: ``int("many")`` inside the flashcards handler (the API would refuse this).
    job = Job(
        job_id=new_job_id(),
        type=JobType.FLASHCARDS,
        status=JobStatus.QUEUED,
        owner="alice",
        params={"content": "Anything at all.", "count": "many"},
        created_at=now,
        updated_at=now,
    )
    store.create(
        NewJob(job=job, message=task_message(job.workload.task, job.workload.queue, [job.job_id], task_id=job.job_id))
    )
    failed = wait_until(lambda: (j := store.get(job.job_id)).status.terminal and j, timeout=30)
    assert failed.status is JobStatus.FAILED and failed.error.code == "internal_error"

    events = wait_until(
        lambda: [e for e in collector.events() if e.get("tags", {}).get("job_id") == job.job_id], timeout=15
    )
    time.sleep(0.5)  # a duplicate (the log record of the same crash) would arrive by now
    events = [e for e in collector.events() if e.get("tags", {}).get("job_id") == job.job_id]
    assert len(events) == 1, events
    event = events[0]
    assert event["tags"]["job_type"] == "flashcards"
    assert event["tags"]["component"] == "worker"
    assert event["tags"]["celery_task_id"] == job.job_id
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert any(frame["function"] == "flashcards" for frame in exception["stacktrace"]["frames"])
    client.close()


def test_an_api_crash_is_reported_to_sentry_with_its_job(collector, redis_url, tmp_path):
    api = ApiProcess(
        redis_url, tmp_path, sentry_dsn=f"http://publickey@{collector.url.removeprefix('http://')}/1"
    ).start()
    client = redis.Redis.from_url(redis_url)
    client.set(keys.user_jobs("alice"), "not a sorted set")  # the job record's script fails midway
    try:
        with httpx.Client(base_url=api.url, timeout=10) as http:
            headers = auth()
            response = http.post("/api/ai/generate-flashcards", json={"content": "Some text."}, headers=headers)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        events = wait_until(lambda: [e for e in collector.events() if "job_id" in e.get("tags", {})], timeout=15)
        time.sleep(0.5)
        events = collector.events()
        assert len(events) == 1, events
        event = events[0]
        job_id = event["tags"]["job_id"]
        assert event["tags"]["job_type"] == "flashcards" and event["tags"]["component"] == "api"
        assert client.hget(keys.job(job_id), "type") == b"flashcards"  # the job that was being recorded
        assert event["exception"]["values"][-1]["type"] == "ResponseError"
        assert event["request"]["url"].endswith("/api/ai/generate-flashcards")
        assert headers["Authorization"].split()[1] not in json.dumps(event)  # no credentials sent
    finally:
        api.stop()
        client.close()
