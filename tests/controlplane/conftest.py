"""The control-plane tier: a real etcd + kube-apiserver (``devstack.cluster``) per session.

``control_plane`` starts it under a temporary directory (RBAC on, real authentication);
``kubectl(*args, input=None, check=True)`` runs ``.tools/bin/kubectl`` as its admin and
returns the ``CompletedProcess``. The binaries come from ``make tools``.
"""

from __future__ import annotations

import subprocess

import pytest

from devstack.cluster import ControlPlane, ControlPlaneError


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("control-plane")
    plane = ControlPlane(workdir, workdir / "kubeconfig")
    try:
        plane.start()
    except ControlPlaneError as error:
        pytest.fail(f"the local control plane did not start (build it with `make tools`): {error}")
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def kubectl(control_plane):
    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess:
        result = control_plane.kubectl(*args, input=input, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def policy_crds(kubectl):
    """The generated CRDs (the policy CRD and kopf's peering CRDs) applied from manifests/crd/ once
    for the session, and established. The chart's releases here leave them to this fixture
    (``crds.install=false``): a cluster-scoped object belongs to one release at most."""
    from unilingo_operator.crd import MANIFESTS_DIR

    kubectl("apply", "-f", str(MANIFESTS_DIR))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/unilingoproviderpolicies.unilingo.io",
        "crd/clusterkopfpeerings.kopf.dev",
        "crd/kopfpeerings.kopf.dev",
    )
    return MANIFESTS_DIR
