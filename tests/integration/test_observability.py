"""Observability proven against the real Prometheus server and PromQL engine.

A local stack runs for the module: Redis, the provider sandbox, one API process and two
Celery worker processes (prefork, two pool children each; one consumes ai, pdf, ocr and
speech, the other ai only; no worker consumes tts), each worker serving ``/metrics`` from its
main process. The load is a mix: AI jobs through a 429 storm, PDFs, OCR jobs against an Azure
Vision that answers 500 (the first fails, the next opens its breaker; the rest wait, deferred), a
pronunciation job, TTS jobs that no worker takes (one cancelled), a cached repeat, and a
user who runs into the AI quota.

Prometheus (``.tools/bin/prometheus``, built by ``make tools``) scrapes the API and both
workers every second, with the chart's own PrometheusRule (``helm template``) loaded as its
rules. Then, through its HTTP API:

* every query of every panel of the chart's Grafana dashboard returns data, and so does
  every metric selector in it;
* every alert expression of the chart returns data once its threshold is taken off, every
  selector in it returns data, and the alerts this load must trigger are pending or firing;
* the workers' counters, summed over their pool processes by multiprocess mode, agree
  exactly with the cluster totals the same events added up in Redis.

The dashboard's "Worker replicas" panel also reads ``kube_deployment_status_replicas``, a
kube-state-metrics series that only a Kubernetes cluster produces. Here a stand-in exporter
serves that one family with kube-state-metrics' labels (``namespace``, ``deployment``) and
the number of worker processes actually running per queue, so the panel's query is still run
by the real engine against the series shape it will meet.
"""

from __future__ import annotations

import json
import math
import re
import time

import httpx
import pytest
import redis

from devstack.processes import wait_until
from tests.support.api import auth
from tests.support.observability import (
    DASHBOARD,
    PROMETHEUS,
    RELEASE,
    dashboard_variables,
    drive_load,
    fill,
    run_stack,
)
from unilingo import keys
from unilingo import metrics as m

# Alerts this load must trigger (their `for` has not elapsed: pending counts).
MUST_TRIGGER = {
    "UnilingoBreakerOpen": {"provider": "azure-vision"},
    "UnilingoNoWorkersWhileJobsWait": {"queue": "tts"},
    "UnilingoProviderThrottled": {"provider": "openai"},
    "UnilingoJobFailureRateHigh": {"type": "ocr"},
}
# Series that a healthy run never creates: the API answers no 5xx here. Queries over them fall
# back to 0 (`or vector(0)`), which is checked; the 5xx case itself is covered by tests/promtool.
MAY_BE_ABSENT = ('status=~"5.."',)
SELECTOR = re.compile(r"\b(unilingo_[a-z_]+|up|kube_[a-z_]+)(\{[^{}]*\})")
THRESHOLD = re.compile(r"^(?P<inner>.*?)\s*(?:>|<|==|!=|>=|<=)\s*-?[0-9.]+(?:e[+-]?\d+)?\s*$", re.S)


# ---------------------------------------------------------------------------------------------
# The stack (tests/support/observability.py), under the load
# ---------------------------------------------------------------------------------------------


def terminal(http: httpx.Client, job_id: str, user: str) -> str:
    """The job's status; a passing 503 (Redis slow on a busy machine) reads as not yet ended."""
    body = http.get(f"/api/jobs/{job_id}", headers=auth(user)).json()
    return body.get("status") or f"unknown ({body.get('error', {}).get('code')})"


@pytest.fixture(scope="module")
def stack(redis_server, sandbox, tmp_path_factory):
    if not PROMETHEUS.exists():
        pytest.skip("the Prometheus server is not built (make tools)")
    workdir = tmp_path_factory.mktemp("observability")
    with run_stack(redis_server.url, sandbox.url, workdir) as stack:
        client = stack.redis
        with httpx.Client(base_url=stack.api.url, timeout=15) as http:
            drive_load(stack, http, sandbox.url)
            owners = {"flashcards": None, "lesson": None, "pdf": "carol", "ocr": "dave", "pronunciation": "erin"}
            users = {}
            for kind in ("flashcards", "lesson"):
                for job_id in stack.jobs[kind]:
                    users[job_id] = client.hget(keys.job(job_id), "owner").decode()
            for kind, owner in owners.items():
                if owner:
                    for job_id in stack.jobs[kind]:
                        users[job_id] = owner
            done = {"succeeded", "failed", "cancelled"}
            must_end = [j for k in ("flashcards", "lesson", "pdf", "pronunciation") for j in stack.jobs[k]]
            wait_until(
                lambda: all(terminal(http, j, users[j]) in done for j in must_end),
                120,
                interval=0.5,
                message=lambda: (
                    "the AI, PDF and pronunciation jobs finish: "
                    + str(
                        [
                            http.get(f"/api/jobs/{j}", headers=auth(users[j])).json()
                            for j in must_end
                            if terminal(http, j, users[j]) not in done
                        ]
                    )
                ),
            )
            # OCR: the first failure, while the provider looked healthy, spends its one attempt; the
            # second opens the breaker and, like the third, waits deferred (an outage fails no job).
            wait_until(
                lambda: (
                    sorted(terminal(http, j, "dave") for j in stack.jobs["ocr"]).count("failed") == 1
                    and client.zcard(keys.deferred("azure-vision")) == 2
                ),
                60,
                interval=0.5,
                message=lambda: (
                    f"one OCR job fails and two are deferred: "
                    f"{[http.get(f'/api/jobs/{j}', headers=auth('dave')).json() for j in stack.jobs['ocr']]}, "
                    f"deferred {client.zcard(keys.deferred('azure-vision'))}"
                ),
            )
            # A repeat of a finished AI request is answered from the cache.
            first = stack.jobs["flashcards"][0]
            repeat = http.post(
                "/api/ai/generate-flashcards",
                headers=auth("bob"),
                json={"content": "Photosynthesis part 0", "count": 3},
            )
            assert repeat.status_code == 202
            stack.jobs["flashcards"].append(repeat.json()["job_id"])
            wait_until(
                lambda: http.get(f"/api/jobs/{repeat.json()['job_id']}", headers=auth("bob")).json().get("cache_hit"),
                60,
                message="the repeat is a cache hit",
            )
            assert terminal(http, first, "alice") == "succeeded"

        # The workers' counters as Prometheus scraped them equal the cluster totals in Redis.
        def scraped_equals_totals():
            totals = {k.decode(): float(v) for k, v in client.hgetall(keys.stats("counters")).items()}
            want = sum(v for k, v in totals.items() if k.startswith("jobs:") and not k.endswith(":cancelled"))
            got = stack.scalar(f'sum(unilingo_jobs_total{{job="{RELEASE}-worker"}})')
            return got is not None and got == want and want > 0

        wait_until(scraped_equals_totals, 30, message="Prometheus has scraped the final counts")
        time.sleep(3)  # a few more scrapes and rule evaluations
        yield stack


# ---------------------------------------------------------------------------------------------
# Helpers on expressions
# ---------------------------------------------------------------------------------------------


def has_value(result: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def alert_rules(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_every_dashboard_panel_returns_data(stack):
    dashboard = json.loads(DASHBOARD.read_text())
    variables = dashboard_variables(dashboard)
    checked, empty = 0, []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = fill(target["expr"], variables)
            assert "$" not in expr, f"unfilled variable in panel {panel['title']!r}: {expr}"
            result = stack.query(expr)
            if not has_value(result):
                empty.append(f"{panel['title']} [{target['refId']}]: {expr} -> {result}")
            for selector in (name + matchers for name, matchers in SELECTOR.findall(expr)):
                if not stack.query(selector) and not any(a in selector for a in MAY_BE_ABSENT):
                    empty.append(f"{panel['title']} [{target['refId']}]: selector {selector} has no series")
            checked += 1
    assert checked >= 40
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def test_every_alert_expression_and_its_selectors_return_data(stack):
    missing = []
    for rule in alert_rules(stack.rules):
        expr = rule["expr"]
        stripped = THRESHOLD.match(expr)
        inner = stripped.group("inner") if stripped else None
        if inner and not stack.query(inner):
            missing.append(f"{rule['alert']}: without its threshold, {inner!r} returns nothing")
        for selector in (name + matchers for name, matchers in SELECTOR.findall(expr)):
            if not stack.query(selector) and not any(a in selector for a in MAY_BE_ABSENT):
                missing.append(f"{rule['alert']}: selector {selector} has no series")
        # every expression evaluates (an error would fail the query itself)
        stack.query(expr)
    assert missing == [], "\n".join(missing)
    # The expressions without a trailing threshold are checked whole: they return data here.
    whole = {r["alert"]: r["expr"] for r in alert_rules(stack.rules)}
    assert stack.query(whole["UnilingoNoWorkersWhileJobsWait"])  # tts: jobs and no worker
    assert stack.query(whole["UnilingoApiDown"]) == []  # the API is up
    assert stack.query('absent(up{namespace="unilingo", job="unilingo-api"} == 99)')  # absent() itself answers


def test_the_load_triggers_its_alerts_in_prometheus(stack):
    exprs = {r["alert"]: r["expr"] for r in alert_rules(stack.rules)}
    for name, labels in MUST_TRIGGER.items():
        result = stack.query(exprs[name])
        assert any(all(r["metric"].get(k) == v for k, v in labels.items()) for r in result), (
            name,
            result,
            stack.query("sum by (provider, outcome) (unilingo_provider_calls_total) > 0"),
            stack.query(THRESHOLD.match(exprs[name]).group("inner")),
        )

    def active():
        alerts = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return {
            (
                a["labels"]["alertname"],
                tuple(sorted((k, a["labels"].get(k)) for k in MUST_TRIGGER.get(a["labels"]["alertname"], {}))),
            )
            for a in alerts
            if a["state"] in ("pending", "firing")
        }

    want = {(name, tuple(sorted(labels.items()))) for name, labels in MUST_TRIGGER.items()}
    wait_until(lambda: want <= active(), 20, message=f"alerts {sorted(want)} pending or firing")
    quiet = {"UnilingoApiDown", "UnilingoApiErrorRateHigh", "UnilingoQueueBacklogHigh", "UnilingoWorkerMetricsDown"}
    assert not {name for name, _ in active()} & quiet


def test_prefork_worker_counters_match_the_cluster_totals(stack):
    totals = {k.decode(): float(v) for k, v in stack.redis.hgetall(keys.stats("counters")).items()}
    started = sum(v for k, v in totals.items() if k.startswith("started:"))
    assert stack.scalar('sum(unilingo_jobs_started_total{job="unilingo-worker"})') == started > 0
    for outcome in ("succeeded", "failed", "deferred"):
        want = sum(v for k, v in totals.items() if k.startswith("jobs:") and k.endswith(f":{outcome}"))
        assert stack.scalar(f'sum(unilingo_jobs_total{{job="unilingo-worker", outcome="{outcome}"}})') == want, outcome
    calls = sum(v for k, v in totals.items() if k.startswith("provider:"))
    assert stack.scalar('sum(unilingo_provider_calls_total{job="unilingo-worker"})') == calls > 0
    assert stack.scalar('sum(unilingo_provider_calls_total{outcome="throttled", provider="openai"})') >= 1
    assert stack.scalar('sum(unilingo_provider_tokens_total{provider="openai"})') == totals["tokens:openai"] > 0
    assert stack.scalar("sum(unilingo_jobs_running)") == 0  # no job runs now: nothing stuck in a live gauge
    assert stack.scalar('sum(unilingo_cache_hits_total{type="flashcards"})') == 1
    # The jobs really ran in several pool processes of a worker, whose /metrics sums them.
    pids = {int(p.stem.split("_")[-1]) for p in stack.worker_dirs[0].glob("counter_*.db")}
    assert len(pids - {stack.workers[0].process.pid}) >= 2, pids
    text = httpx.get(f"http://127.0.0.1:{stack.worker_ports[0]}/metrics", timeout=5).text
    assert 'unilingo_jobs_total{outcome="succeeded",type="pdf"} 3.0' in text
    assert "pid=" not in text


def test_api_metrics_and_scrape_time_gauges(stack):
    assert stack.scalar('unilingo_queue_depth{queue="tts"}') == 2  # one cancelled: its message still waits
    assert stack.scalar('unilingo_queue_oldest_age_seconds{queue="tts"}') > 1
    assert stack.scalar('unilingo_workers_alive{queue="ai"}') == 2
    assert stack.scalar('unilingo_workers_alive{queue="tts"}') == 0
    assert stack.scalar('unilingo_breaker_state{provider="azure-vision"}') == 2
    assert stack.scalar('unilingo_breaker_state{provider="pdf"}') is None
    assert stack.scalar('unilingo_jobs_deferred{provider="azure-vision"}') == 2
    assert stack.scalar('unilingo_policy_revision{provider="azure-vision"}') >= 1
    assert stack.scalar('unilingo_policy_revision{provider="openai"}') >= 1  # the defaults and a budget
    assert stack.scalar('unilingo_provider_budget_usd{provider="openai", period="day"}') == 100
    assert 0 < stack.scalar('unilingo_provider_spend_usd{provider="openai", period="day"}') < 1
    assert stack.scalar('unilingo_provider_budget_usd{provider="openai", period="month"}') is None  # no limit
    assert stack.scalar('unilingo_provider_requests_limit{provider="openai"}') == 50
    assert stack.scalar('sum(unilingo_quota_rejections_total{scope="ai"})') == stack.quota_refusals == 2
    assert stack.scalar('sum(unilingo_jobs_total{type="tts", outcome="cancelled"})') == 1
    assert stack.scalar("sum(unilingo_jobs_submitted_total)") == sum(len(v) for v in stack.jobs.values())
    assert stack.scalar('sum(unilingo_http_requests_total{route="/api/ai/generate-flashcards", status="429"})') == 2
    assert stack.scalar("unilingo_redis_up") == 1


def test_monitoring_json_endpoints_show_the_same_picture(stack):
    admin = auth("ops", admin=True)
    with httpx.Client(base_url=stack.api.url, timeout=10) as http:
        summary = http.get("/api/metrics", headers=admin).json()
        assert summary["requests"]["total"] > 20 and summary["requests"]["error_rate"] == 0
        assert summary["requests"]["p95_ms"] is not None
        assert (
            summary["jobs"]["by_type"]["ocr"]["failed"] == 1
            and summary["jobs"]["by_type"]["ocr"]["failure_rate"] == 1.0
        )
        assert summary["jobs"]["by_type"]["pdf"]["succeeded"] == 3
        assert summary["jobs"]["cancelled"] == 1
        assert summary["services"]["openai"]["throttled"] >= 1 and summary["services"]["openai"]["tokens"] > 0
        assert summary["services"]["azure-vision"]["breaker"] == "open"
        assert summary["breakers"]["azure-vision"] == "open" and summary["breakers"]["aws-polly"] == "closed"
        assert summary["queue_sizes"]["tts"] == 2 and summary["deferred"]["azure-vision"] == 2
        assert summary["quota_rejections"]["ai"] == 2 and summary["cache"]["hits"] == 1

        ai = http.get("/api/ai/status", headers=auth("alice")).json()
        assert ai["service"] == "openai" and ai["limits"]["requests_per_minute"] == 50
        assert ai["limits"]["tokens_per_minute"] == 75_000 and ai["revision"] >= 1
        assert ai["spend"]["day"]["budget_usd"] == 100 and 0 < ai["spend"]["day"]["spent_usd"] < 1
        assert ai["spend"]["day"]["left_usd"] == round(100 - ai["spend"]["day"]["spent_usd"], 9)
        assert ai["budget"]["requests_used"] >= 1 and ai["budget"]["tokens_left"] < 75_000
        assert ai["queue"]["name"] == "ai" and ai["queue"]["workers_alive"] == 2
        speech = http.get("/api/pronunciation/status", headers=auth("alice")).json()
        assert speech["service"] == "azure-speech" and speech["limits"]["max_in_flight"] == 20
        assert speech["breaker"]["state"] == "closed" and speech["queue"]["name"] == "speech"

        stats = http.get("/api/admin/users/statistics", headers=admin).json()
        by_user = {u["user_id"]: u for u in stats["users"]}
        assert by_user["greedy"]["quota_hits"] == 2 and by_user["greedy"]["submitted"] == 5
        assert by_user["dave"]["failed"] == 1 and by_user["dave"]["submitted"] == 3
        assert stats["users"][0]["risk_score"] >= stats["users"][-1]["risk_score"]
        overview = http.get("/api/admin/users/overview", headers=admin).json()
        assert overview["users"]["tracked"] == len(by_user) >= 6
        assert overview["activity"]["quota_hits"] == 2


def test_activity_records_are_bounded_and_expire(redis_server, monkeypatch):
    """The per-user records: capped at ACTIVITY_MAX_USERS, each with a TTL, minute buckets pruned."""
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/7")  # its own database
    client.flushdb()
    monkeypatch.setattr(m, "ACTIVITY_MAX_USERS", 3)
    totals = m.Totals()
    for i in range(5):
        totals.user(f"u{i}", submitted=1)
        totals.flush(client)
        time.sleep(0.01)
    assert sorted(u.decode() for u in client.zrange(keys.activity_users(), 0, -1)) == ["u2", "u3", "u4"]
    assert not client.exists(keys.activity("u0"))
    ttl = client.ttl(keys.activity("u4"))
    assert 0 < ttl <= m.ACTIVITY_TTL_SECONDS
    minute = int(time.time() // 60)
    client.hset(keys.activity("u4"), mapping={f"m:{minute - 200 - i}": 1 for i in range(80)})
    totals.user("u4", failed=1, quota_hits=2)
    totals.flush(client)
    fields = {k.decode() for k in client.hkeys(keys.activity("u4"))}
    assert not [f for f in fields if f.startswith("m:") and int(f[2:]) <= minute - m.ACTIVITY_MINUTES]
    record = {k.decode(): v.decode() for k, v in client.hgetall(keys.activity("u4")).items()}
    assert record["failed"] == "1" and record["quota_hits"] == "2" and record["submitted"] == "1"
    client.flushdb()
    client.close()
