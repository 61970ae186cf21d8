"""The platform on the node of ``make cluster`` (after ``make deploy``): KEDA's cold start, the
workers' replica-seconds with the quota-aware maximum against stock KEDA settings, and the
scale-downs that removed a pod running a job with and without the deletion-cost rule.

Runs only when the node answers and the release is there (``make bench`` skips it otherwise;
``python -m bench kube`` asks for it and fails without the node). It changes the release while
it runs (pauses ScaledObjects, an AI queue shaped like production's: 4 slots a pod, at most 6
pods) and puts it back at the end. Writes ``bench/results/kube.md``.

* cold start: the pdf queue at zero pods (KEDA paused at 0, then resumed), one job submitted;
  the time until the job leaves ``queued`` (polled every 0.25 s), ``SAMPLES`` times.
* replica-seconds: a backlog of ``AI_JOBS`` flashcards jobs against the node's OpenAI sandbox
  (its real latencies, 5 in flight by the default policy); pods counted every second from the
  first submission until the last job succeeded; once with the operator's maximum (5 in
  flight / 4 slots = 2 pods), once with the chart's maxReplicaCount as KEDA alone keeps it.
* scale-in: two AI pods, one running a job slowed to ``SLOW_SECONDS`` by the sandbox; KEDA
  takes the queue to one pod; did it remove the busy pod? With the operator's deletion cost,
  and with the operator stopped and the costs removed (what a stock install does).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.samples import pdf_with_text
from tests.support.kube import (
    KEDA,
    KUBECTL,
    NAMESPACE,
    PAUSED_REPLICAS,
    RELEASE,
    REPO,
    SANDBOX_URL,
    annotate_scaled_object,
    exec_in,
    helm_upgrade,
    watch_custom,
    watch_deployment,
    watch_pods,
)
from unilingo import keys
from unilingo.scaling import CEILING_ANNOTATION, DELETION_COST_ANNOTATION, parse_busy

RESULTS = Path(__file__).parent / "results" / "kube.md"
KUBECONFIG = REPO / ".run" / "kubeconfig"
SAMPLES = 6
AI_JOBS = 30
AI_SHAPE = {"concurrency": "4", "maxReplicas": "6", "listLength": "2"}
SCALE_IN_TRIALS = 3
SLOW_SECONDS = 25
WORKERS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=worker"


def available() -> str | None:
    """None when the node and the release answer, else why not."""
    if not KUBECONFIG.exists():
        return f"no {KUBECONFIG}: run `make cluster` and `make deploy`"
    try:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(KUBECONFIG))
        client.AppsV1Api(api).read_namespaced_deployment(f"{RELEASE}-api", NAMESPACE)
        api.close()
    except Exception as error:
        return f"the node or the release does not answer ({type(error).__name__})"
    return None


class Node:
    def __init__(self):
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=str(KUBECONFIG))
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
        from unilingo.tokens import mint

        secret = self.core.read_namespaced_secret("unilingo-credentials", NAMESPACE)
        jwt_secret = base64.b64decode(secret.data["SUPABASE_JWT_SECRET"]).decode()
        self.token = mint("kube-bench", secret=jwt_secret, ttl=7200)

    @contextlib.contextmanager
    def http(self):
        proc = subprocess.Popen(
            [str(KUBECTL), "-n", NAMESPACE, "port-forward", f"svc/{RELEASE}-api", "0:80"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        try:
            port = None
            while port is None:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("kubectl port-forward did not start")
                match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
                port = match and int(match.group(1))
            headers = {"Authorization": f"Bearer {self.token}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
                yield http
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def pods(self, queue: str) -> list:
        pods = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"{WORKERS},unilingo.io/queue={queue}").items
        return [p for p in pods if p.metadata.deletion_timestamp is None]


def to_zero(node: Node, queue: str) -> None:
    name = f"{RELEASE}-worker-{queue}"
    annotate_scaled_object(node.custom, name, {PAUSED_REPLICAS: "0"})
    watch_deployment(node.apps, name, lambda d: (d.spec.replicas or 0) == 0, timeout=300)
    node_selector = f"{WORKERS},unilingo.io/queue={queue}"
    watch_pods(node.core, node_selector, lambda ps: not ps, timeout=700)
    annotate_scaled_object(node.custom, name, {PAUSED_REPLICAS: None})
    watch_custom(
        node.custom,
        KEDA,
        name,
        lambda so: any(
            c.get("type") == "Paused" and c.get("status") == "False"
            for c in (so.get("status") or {}).get("conditions") or []
        ),
        timeout=60,
    )


def cold_starts(node: Node, http) -> list[float]:
    samples = []
    while len(samples) < SAMPLES:
        to_zero(node, "pdf")
        time.sleep(10)  # KEDA's first polls after the pause: the queue stays at zero
        if node.pods("pdf"):
            continue  # a pod came back before the job was queued: not a cold start
        pdf = pdf_with_text([f"Kalt gestartet {uuid.uuid4().hex}"])
        t0 = time.monotonic()
        r = http.post("/api/process-pdf", files={"file": ("cold.pdf", pdf, "application/pdf")})
        r.raise_for_status()
        job_id = r.json()["job_id"]
        while http.get(f"/api/jobs/{job_id}").json()["status"] == "queued":
            time.sleep(0.25)
        samples.append(time.monotonic() - t0)
        print(f"  cold start {samples[-1]:.1f}s", flush=True)
    return samples


def ai_backlog(node: Node, http, quota_aware: bool) -> dict:
    name = f"{RELEASE}-worker-ai"
    to_zero(node, "ai")
    if quota_aware:
        annotate_scaled_object(node.custom, name, {CEILING_ANNOTATION: AI_SHAPE["maxReplicas"]})
        watch_custom(node.custom, KEDA, name, lambda so: so["spec"]["maxReplicaCount"] == 2, timeout=60)
    else:  # stock KEDA: the chart's maxReplicaCount, the operator's hands off
        annotate_scaled_object(node.custom, name, {CEILING_ANNOTATION: None})
        node.custom.patch_namespaced_custom_object(
            *KEDA[:2], NAMESPACE, KEDA[2], name, {"spec": {"maxReplicaCount": int(AI_SHAPE["maxReplicas"])}}
        )
    samples: list[int] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.wait(1.0):
            samples.append(len(node.pods("ai")))

    counter = threading.Thread(target=count, daemon=True)
    t0 = time.monotonic()
    counter.start()
    jobs = []
    for i in range(AI_JOBS):
        r = http.post(
            "/api/ai/generate-flashcards",
            json={"content": f"Der Zug faehrt um {i} Uhr ab. {uuid.uuid4().hex}", "count": 3},
        )
        r.raise_for_status()
        jobs.append(r.json()["job_id"])
    pending = set(jobs)
    failed = 0
    while pending and time.monotonic() - t0 < 1800:
        for job_id in sorted(pending):
            status = http.get(f"/api/jobs/{job_id}").json()["status"]
            if status in ("succeeded", "failed", "cancelled"):
                pending.discard(job_id)
                failed += status != "succeeded"
        time.sleep(2)
    elapsed = time.monotonic() - t0
    stop.set()
    counter.join()
    annotate_scaled_object(node.custom, name, {CEILING_ANNOTATION: AI_SHAPE["maxReplicas"]})
    return {
        "seconds": elapsed,
        "replica_seconds": float(sum(samples)),
        "peak": max(samples, default=0),
        "failed": failed,
        "unfinished": len(pending),
    }


def scale_in(node: Node, http, rule: bool) -> list[bool]:
    """One result per trial: True when the scale-down removed the pod running the job."""
    name = f"{RELEASE}-worker-ai"
    operator = f"{RELEASE}-operator"
    if not rule:
        node.apps.patch_namespaced_deployment_scale(operator, NAMESPACE, {"spec": {"replicas": 0}})
        watch_pods(
            node.core,
            f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
            lambda ps: not ps,
            120,
        )
    results = []
    try:
        for _ in range(SCALE_IN_TRIALS):
            annotate_scaled_object(node.custom, name, {PAUSED_REPLICAS: "2"})
            watch_deployment(node.apps, name, lambda d: (d.status.ready_replicas or 0) == 2, timeout=300)
            watch_pods(node.core, f"{WORKERS},unilingo.io/queue=ai", lambda ps: len(ps) == 2, timeout=300)
            if not rule:
                for pod in node.pods("ai"):
                    node.core.patch_namespaced_pod(
                        pod.metadata.name, NAMESPACE, {"metadata": {"annotations": {DELETION_COST_ANNOTATION: None}}}
                    )
            with httpx.Client(base_url=SANDBOX_URL, timeout=10) as sandbox:
                sandbox.delete("/_sandbox/faults")
                sandbox.post(
                    "/_sandbox/faults",
                    json={"provider": "openai", "mode": "slow", "duration_s": 10, "delay_s": SLOW_SECONDS},
                ).raise_for_status()
            r = http.post("/api/ai/generate-flashcards", json={"content": f"Langsam {uuid.uuid4().hex}", "count": 3})
            r.raise_for_status()
            job_id = r.json()["job_id"]
            while http.get(f"/api/jobs/{job_id}").json()["status"] != "running":
                time.sleep(0.25)
            time.sleep(3)  # the job's count published and, with the rule, on its pod
            before = {p.metadata.name for p in node.pods("ai")}
            busy = {pod for pod in before if running_jobs(node, pod) > 0}
            annotate_scaled_object(node.custom, name, {PAUSED_REPLICAS: "1"})
            remaining = watch_pods(node.core, f"{WORKERS},unilingo.io/queue=ai", lambda ps: len(ps) == 1, 120)
            removed = (before - {p.metadata.name for p in remaining}).pop()
            job = http.get(f"/api/jobs/{job_id}").json()
            while job["status"] not in ("succeeded", "failed"):
                time.sleep(1)
                job = http.get(f"/api/jobs/{job_id}").json()
            busy_removed = removed in busy
            results.append(busy_removed)
            print(f"  scale-in rule={rule}: busy pod removed={busy_removed}, job {job['status']}", flush=True)
            with httpx.Client(base_url=SANDBOX_URL, timeout=10) as sandbox:
                sandbox.delete("/_sandbox/faults")
    finally:
        annotate_scaled_object(node.custom, name, {PAUSED_REPLICAS: None})
        if not rule:
            node.apps.patch_namespaced_deployment_scale(operator, NAMESPACE, {"spec": {"replicas": 1}})
            watch_deployment(node.apps, operator, lambda d: (d.status.ready_replicas or 0) == 1, timeout=300)
    return results


def running_jobs(node: Node, pod: str) -> int:
    """What the pod's worker publishes as running (it does, operator or not)."""
    raw = exec_in(
        node.core, f"{RELEASE}-redis-0", ["redis-cli", "get", keys.worker_pod_busy(NAMESPACE, pod)], container="redis"
    )
    return parse_busy(raw.strip() or None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    why = available()
    if why:
        raise SystemExit(f"kube bench: {why}")
    node = Node()
    shape = [f"workers.queues.ai.{k}={v}" for k, v in AI_SHAPE.items()]
    result = helm_upgrade(node.env, *(a for s in shape for a in ("--set", s)))
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    try:
        with node.http() as http:
            print("  cold starts (pdf queue from zero) ...", flush=True)
            cold = cold_starts(node, http)
            print("  AI backlog, quota-aware maximum ...", flush=True)
            aware = ai_backlog(node, http, quota_aware=True)
            print(f"  {aware}", flush=True)
            print("  AI backlog, stock KEDA maximum ...", flush=True)
            stock = ai_backlog(node, http, quota_aware=False)
            print(f"  {stock}", flush=True)
            with_rule = scale_in(node, http, rule=True)
            without_rule = scale_in(node, http, rule=False)
    finally:
        back = [
            f"workers.queues.ai.{k}={v}" for k, v in {"concurrency": "2", "maxReplicas": "3", "listLength": "2"}.items()
        ]
        helm_upgrade(node.env, *(a for s in back for a in ("--set", s)))

    def per_thousand(run: dict) -> float:
        return run["replica_seconds"] * 1000 / AI_JOBS

    lines = [
        "# The platform on a real node (`make cluster`, `make deploy`)",
        "",
        "One node on this 2-core machine, KEDA 2.21 (pollingInterval 5 s), the node's provider sandbox at "
        "its real latencies. Small samples: the counts are in each row.",
        "",
        "| measure | ours | stock KEDA / no rule |",
        "| --- | ---: | ---: |",
        f"| cold start, first job queued at zero pods -> running ({SAMPLES} samples, pdf queue) | "
        f"p50 {statistics.median(cold):.1f} s, p99 {percentile(cold, 0.99):.1f} s (max of {SAMPLES}) | same path |",
        f"| worker replica-seconds per 1,000 AI jobs ({AI_JOBS} flashcards jobs, 4 slots a pod, OpenAI 5 in flight) | "
        f"{per_thousand(aware):,.0f} (peak {aware['peak']} pods, {aware['seconds']:.0f} s) | "
        f"{per_thousand(stock):,.0f} (peak {stock['peak']} pods, {stock['seconds']:.0f} s) |",
        f"| AI jobs failed or unfinished | {aware['failed'] + aware['unfinished']} | "
        f"{stock['failed'] + stock['unfinished']} |",
        f"| scale-downs 2 -> 1 that removed the pod running a job ({SCALE_IN_TRIALS} trials each) | "
        f"{sum(with_rule)} of {len(with_rule)} | {sum(without_rule)} of {len(without_rule)} |",
        "",
        "A removed busy pod drains: its job finishes (the chart's grace covers the job timeout) but the "
        "pod lingers until it does, and with a short `drainSeconds` the job is handed back and run again.",
        "Cold start samples: " + ", ".join(f"{s:.1f}" for s in cold) + " s.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
