"""The kube tier's view of the release on the node of ``make cluster``: its names, exec into a
pod, its pods and their readiness, a Deployment, a custom object or pods watched until a
condition holds, KEDA's ScaledObjects annotated, jobs waited for, and `helm upgrade`."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = os.environ.get("NAMESPACE", "unilingo")
RELEASE = os.environ.get("RELEASE", "unilingo")
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
HELM = REPO / ".tools" / "bin" / "helm"


def exec_in(core, pod: str, command: list[str], container: str | None = None) -> str:
    """Run ``command`` in ``pod`` through the API server and the kubelet (real exec)."""
    from kubernetes.stream import stream

    return stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NAMESPACE,
        command=command,
        container=container,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )


def release_pods(core) -> list:
    pods = core.list_namespaced_pod(
        NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component!=helm-test"
    ).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def is_ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def watch_deployment(apps, name: str, predicate, timeout: float) -> object:
    """Watch Deployment ``name`` until ``predicate(deployment)``; return it, or fail."""
    from kubernetes import watch

    current = apps.read_namespaced_deployment(name, NAMESPACE)
    if predicate(current):
        return current
    deadline = time.monotonic() + timeout
    w = watch.Watch()
    while time.monotonic() < deadline:
        for event in w.stream(
            apps.list_namespaced_deployment,
            NAMESPACE,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, int(deadline - time.monotonic())),
        ):
            current = event["object"]
            if predicate(current):
                w.stop()
                return current
    raise AssertionError(
        f"deployment {name}: condition not met within {timeout}s "
        f"(replicas {current.spec.replicas}, ready {current.status.ready_replicas})"
    )


KEDA = ("keda.sh", "v1alpha1", "scaledobjects")
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
SANDBOX_URL = "http://10.89.0.1:8090"  # the node's provider sandbox (devstack/cluster.py NodeSandbox)


def scaled_object(custom, name: str) -> dict:
    return custom.get_namespaced_custom_object(*KEDA[:2], NAMESPACE, KEDA[2], name)


def annotate_scaled_object(custom, name: str, annotations: dict[str, str | None]) -> None:
    """Merge ``annotations`` into ScaledObject ``name`` (None removes one)."""
    custom.patch_namespaced_custom_object(
        *KEDA[:2], NAMESPACE, KEDA[2], name, {"metadata": {"annotations": annotations}}
    )


def watch_custom(custom, group_version_plural: tuple[str, str, str], name: str, predicate, timeout: float) -> dict:
    """Watch custom object ``name`` until ``predicate(object)``; return it, or fail."""
    from kubernetes import watch

    group, version, plural = group_version_plural
    current = custom.get_namespaced_custom_object(group, version, NAMESPACE, plural, name)
    if predicate(current):
        return current
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = watch.Watch()
        for event in w.stream(
            custom.list_namespaced_custom_object,
            group,
            version,
            NAMESPACE,
            plural,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, int(deadline - time.monotonic())),
        ):
            current = event["object"]
            if predicate(current):
                w.stop()
                return current
    raise AssertionError(f"{plural}/{name}: condition not met within {timeout}s: {current.get('spec')}")


def watch_pods(core, selector: str, predicate, timeout: float) -> list:
    """Watch the pods matching ``selector`` until ``predicate(live pods)``; return them, or fail."""
    from kubernetes import watch

    def live():
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        return [p for p in pods if p.metadata.deletion_timestamp is None]

    pods = live()
    deadline = time.monotonic() + timeout
    while not predicate(pods) and time.monotonic() < deadline:
        w = watch.Watch()
        for _ in w.stream(
            core.list_namespaced_pod,
            NAMESPACE,
            label_selector=selector,
            timeout_seconds=max(1, min(10, int(deadline - time.monotonic()))),
        ):
            pods = live()
            if predicate(pods):
                w.stop()
                break
        pods = live()
    if not predicate(pods):
        raise AssertionError(
            f"pods {selector}: condition not met within {timeout}s: "
            + ", ".join(f"{p.metadata.name} {p.metadata.annotations}" for p in pods)
        )
    return pods


def wait_for_jobs(http, job_ids: list[str], timeout: float) -> dict[str, dict]:
    """Poll the jobs through the API until every one is terminal; fail on a failed one."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while len(done) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in done:
                continue
            response = http.get(f"/api/jobs/{job_id}")
            assert response.status_code == 200, response.text
            job = response.json()
            assert job["status"] not in ("failed", "cancelled"), job
            if job["status"] == "succeeded":
                done[job_id] = job
        time.sleep(2)
    missing = sorted(set(job_ids) - set(done))
    assert not missing, f"jobs not succeeded within {timeout}s: {missing}"
    return done


def helm_upgrade(kube_env, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`helm upgrade` of the release with the values it has (`make deploy`'s), plus ``extra``."""
    return subprocess.run(
        [
            str(HELM),
            "upgrade",
            RELEASE,
            str(REPO / "charts" / "unilingo"),
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            *extra,
            "--wait",
            "--timeout",
            f"{timeout}s",
        ],
        capture_output=True,
        text=True,
        env=kube_env,
        timeout=timeout + 60,
    )
