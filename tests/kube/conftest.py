"""The kube tier: the release on the real node of ``make cluster`` (``make test-kube``).

Run after ``make cluster`` (another terminal) and ``make deploy``: the tests talk to that
cluster through ``.run/kubeconfig`` (or ``KUBECONFIG``) with the official ``kubernetes``
client, watching rather than polling where they wait, and reach the API through
``kubectl port-forward`` as a user would. ``make test`` does not collect them: the node needs
root, a cold ``make image`` and the node's whole start, and one node at a time per machine.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = os.environ.get("NAMESPACE", "unilingo")
RELEASE = os.environ.get("RELEASE", "unilingo")
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
HELM = REPO / ".tools" / "bin" / "helm"

if os.environ.get("UNILINGO_KUBE_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]

pytestmark = pytest.mark.kube


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG") or str(REPO / ".run" / "kubeconfig")
    if not Path(path).exists():
        pytest.fail(f"no kubeconfig at {path}: run `make cluster` and `make deploy` first")
    return path


@pytest.fixture(scope="session")
def api_client(kubeconfig):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        client.VersionApi(api).get_code()
    except Exception as exc:
        pytest.fail(f"the cluster in {kubeconfig} does not answer ({exc}): is `make cluster` running?")
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client):
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client):
    from kubernetes import client

    return client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client):
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def kube_env(kubeconfig):
    return {**os.environ, "KUBECONFIG": kubeconfig}


@pytest.fixture(scope="session")
def api_url(kube_env):
    """http://127.0.0.1:PORT forwarded to the API Service by `kubectl port-forward`."""
    proc = subprocess.Popen(
        [str(KUBECTL), "-n", NAMESPACE, "port-forward", f"svc/{RELEASE}-api", "0:80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=kube_env,
    )
    deadline = time.monotonic() + 60
    port = None
    while port is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        if match:
            port = int(match.group(1))
    if port is None:
        proc.kill()
        pytest.fail("kubectl port-forward to the API Service did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def token(core):
    from unilingo.tokens import mint

    secret = core.read_namespaced_secret("unilingo-credentials", NAMESPACE)
    jwt_secret = base64.b64decode(secret.data["SUPABASE_JWT_SECRET"]).decode()
    return mint("kube-tier", secret=jwt_secret, ttl=3600)


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
