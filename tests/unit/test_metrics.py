"""The metric catalogue (names, labels, buckets), prefork aggregation, and the figures derived
from it (scrape-time gauges, the JSON summary, risk scores). No Redis here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from api import monitoring as mon
from api.metrics import Cluster, QueueState, _job_id_of, cluster_families
from unilingo import metrics as m
from unilingo.limiter import BreakerState, ProviderStatus
from unilingo.messages import task_message
from unilingo.policy import PROVIDERS, default_policy

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_LABELS = {"user", "user_id", "owner", "job_id", "path", "url", "ip", "token", "email"}


def _recorded_metrics():
    return [value for value in vars(m).values() if isinstance(value, (Counter, Gauge, Histogram))]


def test_names_follow_prometheus_conventions():
    names = set()
    for metric in _recorded_metrics():
        name, kind = metric._name, metric._type
        assert name.startswith("unilingo_"), name
        if kind == "counter":
            # prometheus-client keeps the name without _total; it exposes name_total
            assert not name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name
        assert not set(metric._labelnames) & FORBIDDEN_LABELS, (name, metric._labelnames)
        assert len(metric._labelnames) <= 3, name
        names.add(name)
    for name, (help_text, labels) in m.SCRAPE_GAUGES.items():
        assert name.startswith("unilingo_") and not name.endswith("_total"), name
        assert help_text and not set(labels) & FORBIDDEN_LABELS
        assert name not in names, f"{name} is defined twice"
    assert len(names) >= 15


def test_the_catalogue_covers_the_issue():
    exposed = {m_._name + ("_total" if m_._type == "counter" else "") for m_ in _recorded_metrics()} | set(
        m.SCRAPE_GAUGES
    )
    for name in [
        "unilingo_http_requests_total",
        "unilingo_http_request_duration_seconds",
        "unilingo_jobs_submitted_total",
        "unilingo_jobs_started_total",
        "unilingo_jobs_total",
        "unilingo_job_queue_wait_seconds",
        "unilingo_job_run_seconds",
        "unilingo_queue_depth",
        "unilingo_queue_oldest_age_seconds",
        "unilingo_jobs_deferred",
        "unilingo_jobs_retry_scheduled",
        "unilingo_provider_calls_total",
        "unilingo_provider_call_duration_seconds",
        "unilingo_provider_tokens_total",
        "unilingo_breaker_state",
        "unilingo_permits_total",
        "unilingo_quota_rejections_total",
        "unilingo_policy_revision",
        "unilingo_cache_hits_total",
        "unilingo_workers_alive",
    ]:
        assert name in exposed, name


def test_label_values_are_closed_sets():
    assert set(m.PERMIT_OUTCOMES) == {
        "granted",
        "suspended",
        "budget",
        "budget_exhausted",
        "paused",
        "breaker_open",
        "rate",
        "tokens",
        "in_flight",
    }
    from unilingo.limiter import DenyReason

    assert {r.value for r in DenyReason} == set(m.PERMIT_OUTCOMES) - {"granted"}
    assert set(m.BREAKER_VALUES) == {s.value for s in BreakerState}
    assert m.breaker_value("open") == 2 and m.breaker_value("half_open") == 1 and m.breaker_value("closed") == 0
    assert set(m.providers_of(["ai", "tts"])) == {"openai", "aws-polly", "storage"}


def test_every_series_a_worker_can_produce_exists_at_zero():
    m.init_worker_series(["ai", "ocr"])
    text = _exposition()
    assert 'unilingo_jobs_total{outcome="failed",type="flashcards"} 0.0' in text
    assert 'unilingo_provider_calls_total{outcome="throttled",provider="openai"}' in text
    assert 'unilingo_permits_total{outcome="breaker_open",provider="azure-vision"}' in text
    assert 'unilingo_jobs_recovered_total{reason="lease_expired"}' in text


def _exposition() -> str:
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY).decode()


# ---- prefork: many processes, one sum -----------------------------------------------------------------------

PREFORK = textwrap.dedent("""
    import os, sys, json
    from unilingo import metrics as m
    path = sys.argv[1]
    m.enable_multiprocess(path)           # what workers.metrics.prepare does in the main process
    m.init_worker_series(["pdf"])
    children = []
    for i in range(3):                    # a prefork pool: each child records on its own
        pid = os.fork()
        if pid == 0:
            for _ in range(i + 1):
                m.job_started("pdf")
                m.job_ended("pdf", "succeeded", 0.2, wait_seconds=1.5)
            if i == 2:
                m.job_started("pdf")      # still running when it is killed
                os.kill(os.getpid(), 9)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    from prometheus_client import generate_latest
    before = generate_latest(m.exposition_registry()).decode()
    swept = m.sweep_dead_processes(path)  # the housekeeping sweep after a SIGKILL
    after = generate_latest(m.exposition_registry()).decode()
    print(json.dumps({"before": before, "after": after, "swept": swept, "children": children}))
""")


def test_prefork_children_are_summed_and_dead_ones_swept(tmp_path):
    import json

    out = subprocess.run(
        [sys.executable, "-c", PREFORK, str(tmp_path / "mp")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)

    def value(text: str, name: str, labels: dict) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        raise AssertionError(f"{name}{labels} not exposed")

    before, after = result["before"], result["after"]
    assert value(before, "unilingo_jobs_started_total", {"type": "pdf"}) == 7  # 1 + 2 + 3 + the killed one's
    assert value(before, "unilingo_jobs_total", {"type": "pdf", "outcome": "succeeded"}) == 6
    assert value(before, "unilingo_job_run_seconds_count", {"type": "pdf"}) == 6
    assert value(before, "unilingo_job_queue_wait_seconds_bucket", {"type": "pdf", "le": "2.5"}) == 6
    assert value(before, "unilingo_jobs_running", {"type": "pdf"}) == 1  # the killed child's job
    assert sorted(result["swept"]) == sorted(result["children"])
    assert value(after, "unilingo_jobs_running", {"type": "pdf"}) == 0  # the dead child no longer counts
    assert value(after, "unilingo_jobs_total", {"type": "pdf", "outcome": "succeeded"}) == 6  # counters never go back
    assert "pid" not in before  # one series per label set, not per process


# ---- scrape-time gauges -------------------------------------------------------------------------------------


def _status(provider: str, breaker: str = "closed", **kw) -> ProviderStatus:
    policy = default_policy(provider)
    return ProviderStatus(
        provider=provider,
        revision=kw.get("revision", 3),
        policy=policy,
        requests_used=7,
        requests_left=(policy.requests_per_minute - 7) if policy.requests_per_minute else None,
        tokens_used=1200,
        tokens_left=None,
        in_flight=2,
        in_flight_left=policy.max_in_flight - 2,
        breaker=BreakerState(breaker),
        breaker_failures=0,
        breaker_half_open_in=None,
        breaker_probes_in_flight=0,
        breaker_trips=1,
        paused_for=0.0,
        suspended=False,
    )


def _cluster() -> Cluster:
    return Cluster(
        read_at=time.time(),
        queues={"ai": QueueState(4, 12.5, 1), "pdf": QueueState(0, 0.0, 0)},
        deferred={p: (3 if p == "openai" else 0) for p in PROVIDERS},
        retry_scheduled=2,
        providers={p: _status(p, "open" if p == "azure-vision" else "closed") for p in PROVIDERS},
    )


def test_cluster_gauges():
    from prometheus_client import CollectorRegistry, generate_latest

    class Families:
        def __init__(self, families):
            self.families = families

        def collect(self):
            return iter(self.families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(cluster_families(_cluster())))
    text = generate_latest(registry).decode()
    assert 'unilingo_queue_depth{queue="ai"} 4.0' in text
    assert 'unilingo_queue_oldest_age_seconds{queue="ai"} 12.5' in text
    assert 'unilingo_workers_alive{queue="pdf"} 0.0' in text
    assert 'unilingo_breaker_state{provider="azure-vision"} 2.0' in text
    assert 'unilingo_breaker_state{provider="openai"} 0.0' in text
    assert 'unilingo_jobs_deferred{provider="openai"} 3.0' in text
    assert "unilingo_jobs_retry_scheduled 2.0" in text
    assert 'unilingo_policy_revision{provider="openai"} 3.0' in text
    assert 'unilingo_provider_requests_limit{provider="openai"} 50.0' in text
    assert 'unilingo_provider_tokens_limit{provider="openai"} 75000.0' in text
    assert 'unilingo_provider_in_flight_limit{provider="azure-speech"} 20.0' in text
    assert "unilingo_redis_up 1.0" in text
    down = cluster_families(None)
    assert [f.name for f in down] == ["unilingo_redis_up"] and down[0].samples[0].value == 0


def test_the_oldest_message_names_its_job():
    message = task_message("unilingo.pdf", "pdf", ["abc123"], task_id="abc123")
    assert _job_id_of(message) == "abc123"
    assert _job_id_of(b"not json") is None and _job_id_of(None) is None


# ---- the JSON summary and risk -------------------------------------------------------------------------------


def test_summary_adds_up_the_cluster_totals():
    totals = {
        "http:/api/process-pdf:2xx": 90,
        "http:/api/process-pdf:5xx": 10,
        "http:/api/jobs/{job_id}:4xx": 20,
        "http_seconds": 12.0,
        "http_le:2": 60,
        "http_le:5": 60,
        "submitted:pdf": 9,
        "jobs:pdf:succeeded": 6,
        "jobs:pdf:failed": 2,
        "jobs:pdf:cancelled": 1,
        "wait_seconds:pdf": 16.0,
        "run_seconds:pdf": 4.0,
        "provider:openai:success": 8,
        "provider:openai:throttled": 2,
        "provider_seconds:openai": 5.0,
        "tokens:openai": 4200,
        "permits:openai:granted": 10,
        "permits:openai:rate": 3,
        "quota:ai": 4,
        "cache:flashcards:hit": 1,
        "cache:flashcards:miss": 3,
    }
    s = mon.summary(totals, _cluster())
    assert s["requests"]["total"] == 120 and s["requests"]["errors"] == 10
    assert s["requests"]["error_rate"] == round(10 / 120, 4)
    assert s["requests"]["average_response_ms"] == 100.0
    assert s["requests"]["p50_ms"] is not None and s["requests"]["p50_ms"] <= s["requests"]["p95_ms"]
    pdf = s["jobs"]["by_type"]["pdf"]
    assert pdf["failure_rate"] == 0.25 and pdf["average_wait_seconds"] == 2.0 and pdf["average_run_seconds"] == 0.5
    assert s["jobs"]["succeeded"] == 6 and s["jobs"]["cancelled"] == 1
    openai = s["services"]["openai"]
    assert openai["calls"] == 10 and openai["throttled"] == 2 and openai["error_rate"] == 0.2
    assert openai["average_latency_ms"] == 500.0 and openai["tokens"] == 4200
    assert openai["permits"] == {
        "granted": 10,
        "refused": {
            "suspended": 0,
            "budget": 0,
            "budget_exhausted": 0,
            "paused": 0,
            "breaker_open": 0,
            "rate": 3,
            "tokens": 0,
            "in_flight": 0,
        },
    }
    assert openai["deferred_jobs"] == 3 and openai["requests_per_minute"] == 50
    assert s["breakers"]["azure-vision"] == "open"
    assert s["queues"]["ai"] == {"depth": 4, "oldest_age_seconds": 12.5, "workers_alive": 1}
    assert s["queue_sizes"] == {"ai": 4, "pdf": 0}
    assert s["quota_rejections"] == {"ip": 0, "ai": 4, "pronunciation": 0}
    assert s["cache"] == {"hits": 1, "misses": 3, "hit_rate": 0.25}


def test_quantile_interpolates_like_histogram_quantile():
    bounds = (0.1, 0.2, 0.4)
    assert abs(mon.histogram_quantile(0.5, [0, 10, 0, 0], bounds) - 0.15) < 1e-9
    assert mon.histogram_quantile(0.99, [0, 0, 0, 5], bounds) == 0.4  # +Inf bucket: the highest finite bound
    assert mon.histogram_quantile(0.5, [0, 0, 0, 0], bounds) is None


def test_risk_score():
    now = time.time()
    minute = int(now // 60)
    calm = mon.user_record(
        "calm",
        {b"submitted": b"30", b"failed": b"0", b"m:%d" % (minute - 5): b"2", b"last_seen": str(now).encode()},
        now,
    )
    assert calm["risk_score"] == 3 and calm["risk_level"] == "low"  # 0.3 * 2/20
    abusive = mon.user_record(
        "x",
        {"submitted": "40", "failed": "20", "quota_hits": "25", f"m:{minute}": "40", f"m:{minute - 90}": "500"},
        now,
    )
    assert abusive["peak_per_minute"] == 40  # the bucket from 90 minutes ago is outside the window
    assert abusive["risk_factors"] == {"quota_pressure": 1.0, "failure_share": 0.5, "burstiness": 1.0}
    assert abusive["risk_score"] == 85 and abusive["risk_level"] == "high"
    one_failure = mon.user_record("new", {"submitted": "1", "failed": "1"}, now)
    assert one_failure["failure_share"] == 1.0 and one_failure["risk_factors"]["failure_share"] == 0.2  # damped
    assert mon.user_record("gone", {}, now) is None


def test_totals_buffer_drains_into_one_script_call():
    totals = m.Totals()
    totals.add("jobs:pdf:succeeded")
    totals.add("jobs:pdf:succeeded")
    totals.add("run_seconds:pdf", 0.25)
    totals.user("alice", submitted=1)
    totals.user("alice", quota_hits=1)
    totals.user(None, submitted=1)  # no user: not tracked
    keys_, args = totals.drain()
    assert keys_ == ["unilingo:stats:counters", "unilingo:activity-users", "unilingo:activity:alice"]
    n = args[4]
    counters = dict(zip(args[5 : 5 + 2 * n : 2], args[6 : 6 + 2 * n : 2], strict=True))
    assert counters == {"jobs:pdf:succeeded": "2.0", "run_seconds:pdf": "0.25"}
    assert args[5 + 2 * n :] == ["alice", 1, 1, 0]
    assert totals.drain() is None and not totals.pending()


def test_http_totals_count_each_answer_in_one_bucket():
    before = dict(m.TOTALS._counters)
    m.http_request("/api/jobs/{job_id}", 200, 0.003)
    m.http_request("/api/jobs/{job_id}", 503, 99.0)
    after = m.TOTALS._counters
    assert after["http:/api/jobs/{job_id}:2xx"] - before.get("http:/api/jobs/{job_id}:2xx", 0) == 1
    assert after["http:/api/jobs/{job_id}:5xx"] - before.get("http:/api/jobs/{job_id}:5xx", 0) == 1
    assert after["http_le:2"] - before.get("http_le:2", 0) == 1  # 3 ms: the 5 ms bucket
    last = f"http_le:{len(m.HTTP_BUCKETS)}"
    assert after[last] - before.get(last, 0) == 1  # beyond 30 s: +Inf
    m.TOTALS.clear()
