"""The kube tier's view of the release on the node of ``make cluster``: its names, exec into a
pod, its pods and their readiness, a Deployment watched until a condition holds."""

from __future__ import annotations

import os
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
