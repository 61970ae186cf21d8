"""One provider call, one outcome: what ``classify`` decides is what the limiter, the metrics and
the trace are told, and what the job does next follows from it (``JobContext.provider_call``).

The limiter here only records what it is told (the real one, on real Redis, is
tests/integration/test_limiter.py); spans go to an in-memory exporter as in test_tracing.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

from unilingo import metrics, tracing
from unilingo.errors import Deferred, HandBack, PermanentError, Throttled, TransientError
from unilingo.limiter import BreakerState, Decision, DenyReason, Released
from unilingo.outcomes import CallOutcome, RunOutcome, classify
from workers.runner import JobContext

JOB = "0123456789abcdef0123456789abcdef"


class RecordingLimiter:
    """Grants (or refuses) and writes down every release."""

    def __init__(self, refuse: DenyReason | None = None, counts_against_job: bool = True, breaker="closed"):
        self.refuse, self.counts_against_job, self.breaker = refuse, counts_against_job, BreakerState(breaker)
        self.released: list[dict] = []

    def acquire(self, provider, tokens=0, holder=""):
        if self.refuse:
            return Decision(False, None, 2.0, self.refuse)
        return Decision(True, "lease-1")

    def release(
        self,
        provider,
        lease_id,
        outcome,
        actual_tokens=None,
        retry_after=None,
        sent_after=0.0,
        input_tokens=None,
        output_tokens=None,
    ):
        self.released.append(
            {
                "outcome": outcome,
                "tokens": actual_tokens,
                "retry_after": retry_after,
                "billed": (input_tokens, output_tokens),
            }
        )
        return Released(True, self.breaker, self.counts_against_job, 3.0)

    def renew(self, provider, lease_id, lease_seconds=None):
        return True


def context(limiter: RecordingLimiter) -> JobContext:
    return JobContext(
        job=SimpleNamespace(job_id=JOB),  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        run_token=1,
        limiter=limiter,  # type: ignore[arg-type]
        heartbeat=SimpleNamespace(extra=[]),  # type: ignore[arg-type]
    )


def counted(outcome: str, provider: str = "openai") -> float:
    return REGISTRY.get_sample_value("unilingo_provider_calls_total", {"provider": provider, "outcome": outcome}) or 0


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing._reset_for_tests()
    tracing.ENABLED, tracing._decided, tracing._TRACER = True, True, provider.get_tracer("test")
    yield exporter
    tracing._reset_for_tests()


@pytest.mark.parametrize(
    "exc, outcome",
    [
        (None, CallOutcome.SUCCESS),
        (Throttled("openai", 2.0, "provider_429"), CallOutcome.THROTTLED),
        (TransientError("down", code="provider_error"), CallOutcome.ERROR),
        (PermanentError("bad", code="provider_bad_request"), CallOutcome.REJECTED),
        (KeyError("a bug"), CallOutcome.ABORTED),
        (HandBack(), CallOutcome.ABORTED),
    ],
)
def test_every_observer_sees_the_one_outcome(spans, exc, outcome):
    assert classify(exc) is outcome
    limiter = RecordingLimiter()
    ctx = context(limiter)
    before = counted(outcome)
    raised = None
    try:
        with ctx.provider_call("openai", tokens=900) as handle:
            handle.tokens_used = 321 if exc is None else None
            if exc is not None:
                raise exc
    except BaseException as caught:
        raised = caught
    assert raised is exc  # the handler's exception reaches the runner unchanged
    assert [r["outcome"] for r in limiter.released] == [outcome]
    assert counted(outcome) == before + 1
    (span,) = spans.get_finished_spans()
    assert span.name == "provider_call openai"
    assert span.attributes["unilingo.provider.outcome"] == outcome
    assert span.attributes["unilingo.permit"] == "granted"
    assert (span.status.status_code == StatusCode.ERROR) is (exc is not None)
    if exc is None:
        assert dict(span.attributes) == {
            "unilingo.provider": "openai",
            "unilingo.provider.tokens_requested": 900,
            "unilingo.permit": "granted",
            "unilingo.provider.outcome": "success",
            "unilingo.provider.tokens_used": 321,
        }
        assert ctx.usage == {"openai": 321} and limiter.released[0]["tokens"] == 321
    else:
        assert span.events[0].name == "exception"
    if outcome is CallOutcome.THROTTLED:
        assert limiter.released[0]["retry_after"] == 2.0  # the provider's Retry-After pauses it for everyone


def test_a_failure_of_a_healthy_provider_is_the_jobs_own(spans):
    ctx = context(RecordingLimiter(counts_against_job=True))
    with pytest.raises(TransientError) as raised:
        with ctx.provider_call("openai"):
            raise TransientError("down", code="provider_error")
    assert raised.value.provider == "openai"  # its retry policy applies


@pytest.mark.parametrize("breaker, reason", [("closed", "retry"), ("open", "breaker_open")])
def test_an_outage_defers_the_job_and_is_still_an_error_to_every_observer(spans, breaker, reason):
    limiter = RecordingLimiter(counts_against_job=False, breaker=breaker)
    ctx = context(limiter)
    before = counted("error")
    with pytest.raises(Deferred) as raised:
        with ctx.provider_call("openai"):
            raise TransientError("down", code="provider_error")
    assert (raised.value.reason, raised.value.retry_after) == (reason, 3.0)
    assert isinstance(raised.value.__cause__, TransientError)
    assert [r["outcome"] for r in limiter.released] == [CallOutcome.ERROR]
    assert counted("error") == before + 1
    (span,) = spans.get_finished_spans()
    assert span.attributes["unilingo.provider.outcome"] == "error"
    assert span.status.status_code == StatusCode.ERROR


def test_a_refused_permit_is_no_call(spans):
    limiter = RecordingLimiter(refuse=DenyReason.RATE)
    ctx = context(limiter)
    sample = {"provider": "openai", "outcome": "rate"}
    before = REGISTRY.get_sample_value("unilingo_permits_total", sample) or 0
    ran = False
    with pytest.raises(Deferred) as raised:
        with ctx.provider_call("openai", tokens=50):
            ran = True
    assert not ran and not limiter.released
    assert (raised.value.reason, raised.value.retry_after) == (DenyReason.RATE, 2.0)
    assert REGISTRY.get_sample_value("unilingo_permits_total", sample) == before + 1
    (span,) = spans.get_finished_spans()
    assert span.attributes["unilingo.permit"] == "rate"
    assert "unilingo.provider.outcome" not in span.attributes
    assert span.status.status_code == StatusCode.UNSET and not span.events  # flow control, not an error


def test_without_tracing_the_path_is_the_same_and_makes_no_span():
    tracing._reset_for_tests()
    limiter = RecordingLimiter()
    with context(limiter).provider_call("openai") as handle:
        handle.tokens_used = 5
    assert [r["outcome"] for r in limiter.released] == [CallOutcome.SUCCESS]


def test_outcomes_are_the_label_values_dashboards_select_on():
    assert metrics.PROVIDER_OUTCOMES == ("success", "throttled", "error", "rejected", "aborted")
    assert set(metrics.JOB_OUTCOMES) == {
        "succeeded",
        "failed",
        "cancelled",
        "deferred",
        "retried",
        "stale",
        "handed_back",
    }
    assert [o for o in RunOutcome if o.ended_job] == [RunOutcome.SUCCEEDED, RunOutcome.FAILED]


def test_a_spent_budget_defers_the_job_or_fails_it_as_the_policy_says(spans):
    waiting = context(RecordingLimiter(refuse=DenyReason.BUDGET))
    with pytest.raises(Deferred) as raised:
        with waiting.provider_call("openai", tokens=50):
            pass
    assert raised.value.reason == DenyReason.BUDGET and raised.value.waits_for == 2.0
    failing = context(RecordingLimiter(refuse=DenyReason.BUDGET_EXHAUSTED))
    with pytest.raises(PermanentError) as failed:
        with failing.provider_call("openai", tokens=50):
            pass
    assert failed.value.code == "budget_exhausted" and "openai spend budget is spent until" in failed.value.message


def test_the_reported_usage_reaches_the_limiter_for_the_spend():
    limiter = RecordingLimiter()
    with context(limiter).provider_call("openai", tokens=50) as handle:
        handle.tokens_used, handle.input_tokens, handle.output_tokens = 30, 20, 10
    assert limiter.released[0]["billed"] == (20, 10)
