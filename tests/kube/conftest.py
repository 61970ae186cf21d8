"""The kube tier: the release on the real node of ``make cluster`` (``make test-kube``).

Run after ``make cluster`` (another terminal) and ``make deploy``: the tests talk to that
cluster through ``.run/kubeconfig`` (or ``KUBECONFIG``) with the official ``kubernetes``
client, watching rather than polling where they wait, and reach the API through
``kubectl port-forward`` as a user would. ``make test`` runs them last, through
``scripts/kube-tier.sh`` (the cluster started, the image built and the release deployed
first, the node stopped after); its ``pytest tests`` does not collect them, as they need that
running node (``UNILINGO_KUBE_TESTS=1``, which ``make test-kube`` sets).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.kube import KUBECTL, NAMESPACE, RELEASE, REPO

if os.environ.get("UNILINGO_KUBE_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


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
