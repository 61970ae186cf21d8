"""The chart's release on the real node: pods, Services and DNS, the operator's policy in the
workers' Redis, jobs through the API Service, KEDA scaling the pdf workers from zero and back,
and `helm test`."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx

from tests.support.kube import HELM, NAMESPACE, RELEASE, exec_in, is_ready, release_pods, watch_deployment

COMPONENTS = {"api", "operator", "redis"}
BACKLOG = 24


def pdf_with_text(text: str) -> bytes:
    import importlib.util

    from tests.support.kube import REPO

    spec = importlib.util.spec_from_file_location(
        "smoke_test", REPO / "charts" / "unilingo" / "files" / "smoke_test.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pdf_with_text(text)


def test_every_pod_of_the_release_is_ready_on_the_node(core):
    """Every pod of the release (workers KEDA is starting or stopping included) becomes
    Ready on the node; the operator's is Running."""
    from kubernetes import watch

    deadline = time.monotonic() + 300
    pods = release_pods(core)
    w = watch.Watch()
    while not (pods and all(is_ready(p) for p in pods)) and time.monotonic() < deadline:
        for _ in w.stream(
            core.list_namespaced_pod,
            NAMESPACE,
            timeout_seconds=5,
            label_selector=f"app.kubernetes.io/instance={RELEASE}",
        ):
            pods = release_pods(core)
            if pods and all(is_ready(p) for p in pods):
                w.stop()
        pods = release_pods(core)
    components = {p.metadata.labels.get("app.kubernetes.io/component") for p in pods}
    assert COMPONENTS <= components, f"missing components: {COMPONENTS - components}"
    not_ready = [p.metadata.name for p in pods if not is_ready(p)]
    assert not not_ready, f"pods not Ready within 300s: {not_ready}"
    assert {p.spec.node_name for p in pods} == {"unilingo-node"}
    operator = next(p for p in pods if p.metadata.labels["app.kubernetes.io/component"] == "operator")
    assert operator.status.phase == "Running"


def test_services_and_dns_work_from_inside_a_pod(core):
    api = next(p for p in release_pods(core) if p.metadata.labels["app.kubernetes.io/component"] == "api")
    script = (
        "import socket\n"
        f"for host, port in (('kubernetes.default.svc.cluster.local', 443),"
        f" ('{RELEASE}-redis.{NAMESPACE}.svc.cluster.local', 6379)):\n"
        "    address = socket.gethostbyname(host)\n"
        "    socket.create_connection((host, port), timeout=5).close()\n"
        "    print(host, address, 'connected')\n"
    )
    out = exec_in(core, api.metadata.name, ["python", "-c", script], container="api")
    assert "kubernetes.default.svc.cluster.local 10.0.0.1 connected" in out, out
    assert f"{RELEASE}-redis.{NAMESPACE}.svc.cluster.local" in out and out.count("connected") == 2, out


def test_the_operator_writes_a_policy_the_workers_redis_holds(core, custom):
    redis_pod = f"{RELEASE}-redis-0"
    body = {
        "apiVersion": "unilingo.io/v1alpha1",
        "kind": "UnilingoProviderPolicy",
        "metadata": {"name": "openai"},
        "spec": {"provider": "openai", "requestsPerMinute": 37, "maxInFlight": 5},
    }
    group, version, plural = "unilingo.io", "v1alpha1", "unilingoproviderpolicies"
    try:
        custom.delete_namespaced_custom_object(group, version, NAMESPACE, plural, "openai")
    except Exception:
        pass
    deadline = time.monotonic() + 60
    while True:
        try:
            custom.create_namespaced_custom_object(group, version, NAMESPACE, plural, body)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        from kubernetes import watch

        w = watch.Watch()
        applied = False
        for event in w.stream(
            custom.list_namespaced_custom_object,
            group,
            version,
            NAMESPACE,
            plural,
            field_selector="metadata.name=openai",
            timeout_seconds=90,
        ):
            conditions = (event["object"].get("status") or {}).get("conditions") or []
            if (
                any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                and event["object"]["status"].get("observedGeneration") == event["object"]["metadata"]["generation"]
            ):
                applied = True
                w.stop()
        assert applied, "the operator never reported the policy Ready"
        rpm = exec_in(
            core, redis_pod, ["redis-cli", "hget", "unilingo:policy:openai", "rpm"], container="redis"
        ).strip()
        assert rpm == "37"
    finally:
        custom.delete_namespaced_custom_object(group, version, NAMESPACE, plural, "openai")


def test_keda_takes_the_pdf_workers_up_from_zero_and_back(apps, api_url, token):
    name = f"{RELEASE}-worker-pdf"
    watch_deployment(apps, name, lambda d: (d.spec.replicas or 0) == 0, timeout=240)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as http:
        jobs = []
        # Enough work that one worker (concurrency 2) cannot finish it before the HPA's next
        # sync asks for more.
        for _ in range(BACKLOG):
            # A different document each time: the result cache answers a repeated one at once.
            pdf = pdf_with_text(f"Die Katze schlaeft {uuid.uuid4().hex}")
            r = http.post("/api/process-pdf", files={"file": ("lesson.pdf", pdf, "application/pdf")})
            assert r.status_code == 202, r.text
            jobs.append(r.json()["job_id"])
        # From zero on the backlog. How far beyond one the HPA goes depends on how fast the
        # first pod drains it (pdf jobs take about a second), so only "up from zero" is asserted.
        watch_deployment(apps, name, lambda d: (d.spec.replicas or 0) >= 1, timeout=180)
        deadline = time.monotonic() + 420
        pending = set(jobs)
        while pending and time.monotonic() < deadline:
            for job_id in sorted(pending):
                response = http.get(f"/api/jobs/{job_id}")
                assert response.status_code == 200, response.text
                job = response.json()
                assert job["status"] not in ("failed", "cancelled"), job
                if job["status"] == "succeeded":
                    assert job["attempts"] == 1, job  # exactly once: no redelivery
                    pending.discard(job_id)
            time.sleep(2)
        assert not pending, f"jobs not succeeded within 420s: {sorted(pending)}"
    watch_deployment(apps, name, lambda d: (d.spec.replicas or 0) == 0, timeout=240)


def test_helm_test_passes(kube_env):
    result = subprocess.run(
        [str(HELM), "-n", NAMESPACE, "test", RELEASE, "--logs", "--timeout", "5m"],
        capture_output=True,
        text=True,
        env=kube_env,
        timeout=360,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
