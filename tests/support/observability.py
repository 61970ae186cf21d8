"""The observability stack: Redis, the sandbox, one API, two prefork workers serving
``/metrics``, a kube-state-metrics stand-in and a real Prometheus scraping them every second with
the chart's rules loaded, and the load of mixed jobs that the dashboard and alerts are proven
against (``tests/integration/test_observability.py``; ``scripts/dashboard_preview.py`` draws the
dashboard from the same stack)."""

from __future__ import annotations

import contextlib
import http.server
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
import yaml

from devstack.ports import free_port, wait_for_port
from devstack.processes import Service, wait_until
from sandbox.images import png_with_text
from tests.samples import pdf_with_text, speech_like, wav_bytes
from tests.support.api import ApiProcess, auth
from tests.support.sandbox import worker_env
from unilingo import keys
from unilingo.policy import BreakerPolicy, PolicyStore, ProviderPolicy, RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / ".tools" / "bin" / "prometheus"
CHART = ROOT / "charts" / "unilingo"
DASHBOARD = CHART / "dashboards" / "unilingo.json"
NAMESPACE = "unilingo"
RELEASE = "unilingo"

# What Grafana puts in a query, for this run (1 s scrapes; the load lasts well under a minute).
GRAFANA = {"$__rate_interval": "1m", "$__range": "10m", "$namespace": ".*"}


class _StandIn(http.server.BaseHTTPRequestHandler):
    """kube-state-metrics' kube_deployment_status_replicas, for the workers running here."""

    replicas: dict[str, int] = {}

    def do_GET(self):
        lines = [
            "# HELP kube_deployment_status_replicas The number of replicas per deployment.",
            "# TYPE kube_deployment_status_replicas gauge",
        ]
        for deployment, count in sorted(self.replicas.items()):
            lines.append(
                f'kube_deployment_status_replicas{{namespace="{NAMESPACE}",deployment="{deployment}"}} {count}'
            )
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@dataclass
class Stack:
    api: ApiProcess
    workers: list[Service]
    worker_ports: list[int]
    worker_dirs: list[Path]
    prometheus: subprocess.Popen
    prometheus_url: str
    redis: redis.Redis
    rules: dict
    jobs: dict[str, list[str]] = field(default_factory=dict)
    quota_refusals: int = 0

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def rendered_rules() -> dict:
    out = subprocess.run(
        [str(ROOT / ".tools" / "bin" / "helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    (rule,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


def start_prometheus(workdir: Path, api_port: int, worker_ports: list[int], standin_port: int, rules: dict):
    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    labels = {"namespace": NAMESPACE}
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            # the job names the chart's ServiceMonitor and PodMonitor give these targets
            {
                "job_name": f"{RELEASE}-api",
                "static_configs": [{"targets": [f"127.0.0.1:{api_port}"], "labels": labels}],
            },
            {
                "job_name": f"{RELEASE}-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in worker_ports], "labels": labels}],
            },
            {"job_name": "kube-state-metrics", "static_configs": [{"targets": [f"127.0.0.1:{standin_port}"]}]},
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"prometheus did not start:\n{(workdir / 'prometheus.log').read_text()[-3000:]}")


def drive_load(stack: Stack, http: httpx.Client, sandbox_url: str) -> None:
    """Jobs of every type, with failures, a 429 storm, deferrals, a cancellation and quota refusals."""
    jobs = stack.jobs

    def submit(kind: str, path: str, user: str, **kwargs) -> httpx.Response:
        response = http.post(path, headers=auth(user), **kwargs)
        if response.status_code == 202:
            jobs.setdefault(kind, []).append(response.json()["job_id"])
        elif response.status_code == 429:
            stack.quota_refusals += 1
        else:
            raise AssertionError(f"{path}: {response.status_code} {response.text}")
        return response

    with httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
        # For 5 s OpenAI answers half its calls with 429 (Retry-After: 1); Azure Vision answers 500.
        fault = {"provider": "openai", "mode": "429", "duration_s": 5, "rate": 0.5}
        assert sandbox.post("/_sandbox/faults", json=fault).status_code == 201
        assert (
            sandbox.post(
                "/_sandbox/faults", json={"provider": "azure-vision", "mode": "500", "duration_s": 300}
            ).status_code
            == 201
        )
    for i in range(3):
        submit(
            "flashcards",
            "/api/ai/generate-flashcards",
            "alice",
            json={"content": f"Photosynthesis part {i}", "count": 3},
        )
    # (one lesson: a lesson is three calls, and a deferred lesson starts again from its first)
    submit("lesson", "/api/ai/generate-lesson", "bob", json={"topic": "French numbers"})
    for i in range(7):  # the AI quota is 5 per hour: two refusals
        submit("flashcards", "/api/ai/generate-flashcards", "greedy", json={"content": f"Spam {i}", "count": 1})
    for i in range(3):
        submit(
            "pdf",
            "/api/process-pdf",
            "carol",
            files={"file": (f"{i}.pdf", pdf_with_text([f"page {i}"]), "application/pdf")},
        )
    for i in range(3):
        image = png_with_text(240, 80, f"Page {i}")
        submit(
            "ocr",
            "/api/process-image",
            "dave",
            files={"image": (f"{i}.png", image, "image/png")},
            data={"language": "en"},
        )
    submit(
        "pronunciation",
        "/api/pronunciation-assess",
        "erin",
        files={"audio": ("a.wav", wav_bytes(speech_like(1.0)), "audio/wav")},
        data={"reference_text": "hello world", "language": "en-US"},
    )
    for i in range(2):
        submit("tts", "/api/audio/generate", "frank", json={"text": f"Hello number {i}"})
    cancelled = jobs["tts"][0]
    assert http.delete(f"/api/jobs/{cancelled}", headers=auth("frank")).status_code == 200
    with httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
        wait_until(
            lambda: sandbox.get("/_sandbox/stats").json()["openai"]["rejected_429"] >= 2,
            15,
            message="OpenAI answered 429s during the storm",
        )


@contextlib.contextmanager
def run_stack(redis_url: str, sandbox_url: str, workdir: Path) -> Iterator[Stack]:
    """The stack, on a running Redis and sandbox, until the block ends.

    Flushes Redis and resets the sandbox, writes the Azure Vision policy and an OpenAI budget, starts the API, the
    two workers, the kube-state-metrics stand-in and Prometheus (scraping all four every
    second, the chart's rules loaded), and yields once every target is up. Everything it
    started is stopped when the block exits, however it exits. ``scripts/dashboard_preview.py``
    runs it too.
    """
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    httpx.post(f"{sandbox_url}/_sandbox/reset").raise_for_status()  # faults, stats and quota windows
    # Azure Vision: two failures open its breaker for 10 minutes; a failed call is not retried.
    policies = PolicyStore(client)
    policies.write(
        ProviderPolicy(
            provider="azure-vision",
            breaker=BreakerPolicy(failure_threshold=2, open_seconds=600),
            retry=RetryPolicy(attempts=1, backoff_seconds=1, max_backoff_seconds=1),
        )
    )
    # OpenAI: a daily budget far above what the load spends, so that spend and budget are scraped.
    policies.write(ProviderPolicy(provider="openai", budget={"usdPerDay": 100.0}))

    api, standin, prometheus = None, None, None
    workers: list[Service] = []
    try:
        api = ApiProcess(redis_url, workdir, quota_user_ai="5/1h").start()
        sandbox_port = int(sandbox_url.rsplit(":", 1)[1])
        worker_ports, worker_dirs = [], []
        plan = [("ai,pdf,ocr,speech", 2), ("ai", 2)]
        for index, (queues, concurrency) in enumerate(plan):
            port = free_port()
            mp_dir = workdir / f"worker{index}-metrics"
            before = set(client.zrange(keys.workers_alive(), 0, -1))
            service = Service.python(
                f"obs-worker{index}",
                "workers",
                log_dir=workdir,
                env=worker_env(
                    redis_url,
                    sandbox_port,
                    worker_queues=queues,
                    worker_concurrency=concurrency,
                    worker_metrics_port=port,
                    prometheus_multiproc_dir=str(mp_dir),
                    job_lease_seconds=10,
                ),
                ready=lambda before=before: bool(set(client.zrange(keys.workers_alive(), 0, -1)) - before),
            )
            workers.append(service)
            service.start(timeout=90)
            wait_for_port(port, timeout=30)
            worker_ports.append(port)
            worker_dirs.append(mp_dir)

        _StandIn.replicas = {
            f"{RELEASE}-worker-{q}": sum(1 for queues, _ in plan if q in queues.split(","))
            for q in ("ai", "speech", "ocr", "pdf", "tts")
        }
        standin = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _StandIn)
        threading.Thread(target=standin.serve_forever, daemon=True).start()

        rules = rendered_rules()
        prometheus, prometheus_url = start_prometheus(workdir, api.port, worker_ports, standin.server_address[1], rules)
        stack = Stack(
            api=api,
            workers=workers,
            worker_ports=worker_ports,
            worker_dirs=worker_dirs,
            prometheus=prometheus,
            prometheus_url=prometheus_url,
            redis=client,
            rules=rules,
        )
        wait_until(lambda: len(stack.query("up == 1")) == 4, 30, message="all four targets up")
        yield stack
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=15)
            except subprocess.TimeoutExpired:
                prometheus.kill()
        for service in workers:
            service.stop()
        if api is not None:
            api.stop()
        if standin is not None:
            standin.shutdown()
            standin.server_close()
        with httpx.Client(base_url=sandbox_url) as sb:
            sb.delete("/_sandbox/faults")
        client.close()


# --- Grafana's variables -------------------------------------------------------------------------


def fill(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


def dashboard_variables(dashboard: dict) -> dict[str, str]:
    variables = dict(GRAFANA)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] in ("textbox", "constant"):
            variables[f"${variable['name']}"] = variable["query"]
    return variables
