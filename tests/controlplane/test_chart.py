"""The Helm chart on the real local kube-apiserver (etcd + kube-apiserver, RBAC on).

KEDA's and the Prometheus operator's own published CRDs (scripts/crds.sh, from their Go
modules) are installed first, so ScaledObjects, TriggerAuthentications, ServiceMonitors,
PodMonitors and PrometheusRules are validated against the real schemas. For every value set:
  1. the rendered manifest passes `kubectl apply --dry-run=server --validate=strict`
     (server-side validation, admission, unknown fields rejected);
  2. `helm install` installs it for real, every object is stored as rendered (nothing
     pruned), and the operator's RBAC grants exactly what it needs, asked of the API server's
     own authorizer (`kubectl auth can-i --as <ServiceAccount>`);
  3. `helm uninstall` removes it.
These releases share one API server, and a CRD is cluster-wide: it belongs to one release at
most. So they set `crds.install=false` and the session applies the CRDs once (`policy_crds`);
the chart's own CRD templates are installed, upgraded and kept by one release of their own
(`test_helm_upgrade_updates_the_crds_and_uninstall_keeps_them`).
No kubelet or controller runs here: pods never start, so "installed" means accepted and stored.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.chart import CHART, REPO, VALUE_SETS, helm, parse, template_text, values_args

THIRD_PARTY_CRDS = [
    "scaledobjects.keda.sh",
    "triggerauthentications.keda.sh",
    "servicemonitors.monitoring.coreos.com",
    "podmonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
]
RELEASE = "unilingo"
# The session's CRDs (policy_crds) serve every release of these tests but one.
CRDS_OFF = ("--set", "crds.install=false")
CRD_NAMES = [
    "unilingoproviderpolicies.unilingo.io",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
]


def namespace_for(value_set: str) -> str:
    return f"chart-{value_set}"


@pytest.fixture(scope="module")
def third_party_crds(kubectl):
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "crds.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    crd_dir = Path(result.stdout.strip().splitlines()[-1])
    kubectl("apply", "--server-side", "-f", str(crd_dir))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in THIRD_PARTY_CRDS))
    return crd_dir


@pytest.fixture(scope="module")
def helm_env(control_plane, tmp_path_factory):
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **control_plane.env(),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def access_reviews(kubectl, questions: list[tuple]) -> list[bool]:
    """Ask the API server's authorizer, in one request, whether each ServiceAccount may act.

    Each question: (namespace of the ServiceAccount, its name, verb, "resource[.group]",
    namespace acted in or None for cluster scope / all namespaces, subresource or None).
    """
    reviews = []
    for sa_ns, sa, verb, resource, namespace, subresource in questions:
        name, _, group = resource.partition(".")
        attributes = {"verb": verb, "resource": name, "group": group}
        if namespace:
            attributes["namespace"] = namespace
        if subresource:
            attributes["subresource"] = subresource
        reviews.append(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": f"system:serviceaccount:{sa_ns}:{sa}",
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}", "system:authenticated"],
                    "resourceAttributes": attributes,
                },
            }
        )
    out = kubectl(
        "create", "-f", "-", "-o", "json", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": reviews})
    ).stdout
    items = json_documents(out)
    assert len(items) == len(reviews), out
    return [bool(item["status"].get("allowed")) for item in items]


def json_documents(text: str) -> list[dict]:
    """kubectl prints one JSON document per object it created, or a List: flatten both."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        doc, pos = decoder.raw_decode(text, pos)
        docs.extend(doc["items"] if doc.get("kind") == "List" else [doc])
    return docs


def test_server_validation_is_real(kubectl, third_party_crds):
    """The KEDA CRD's schema rejects a bad ScaledObject, and strict validation rejects unknown fields."""
    kubectl("create", "namespace", "chart-validation", check=False)
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "bad", "namespace": "chart-validation"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "minReplicaCount": -1,
            "triggers": [{"type": "redis", "metadata": {"listName": "ai"}}],
        },
    }
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0 and "minReplicaCount" in result.stderr, result.stderr
    unknown = {**bad, "spec": {**bad["spec"], "minReplicaCount": 0, "maxReplicas": 3}}
    result = kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump(unknown), check=False
    )
    assert result.returncode != 0 and "maxReplicas" in result.stderr, result.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_installs_on_the_control_plane(value_set, kubectl, third_party_crds, policy_crds, helm_env):
    namespace = namespace_for(value_set)
    manifest = template_text(value_set, *CRDS_OFF, release=RELEASE, namespace=namespace)
    docs = parse(manifest)
    for ns in sorted({namespace} | {d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")}):
        if kubectl("get", "namespace", ns, check=False).returncode != 0:
            kubectl("create", "namespace", ns)

    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    objects = [d for d in docs if d not in hooks]

    # 1. Every object passes the API server's validation and admission, unknown fields included.
    result = kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects), result.stdout

    # 2. A real install.
    helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        *values_args(value_set),
        *CRDS_OFF,
        "--wait=false",
        "--timeout",
        "2m",
        env=helm_env,
        timeout=180,
    )
    try:
        status = json.loads(helm("status", RELEASE, "--namespace", namespace, "-o", "json", env=helm_env).stdout)
        assert status["info"]["status"] == "deployed"
        installed = parse(helm("get", "manifest", RELEASE, "--namespace", namespace, env=helm_env).stdout)
        assert len(installed) == len(objects)  # test hooks are created by `helm test` only
        # The `helm test` Pod, as `helm test` would create it now (its ServiceAccount exists).
        assert [d["kind"] for d in hooks] == ["Pod"]
        result = kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump_all(hooks), check=False
        )
        assert result.returncode == 0, result.stderr
        stored_items = json_documents(
            kubectl("get", "-f", "-", "-o", "json", input=yaml.safe_dump_all(installed)).stdout
        )
        stored = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in stored_items}
        for doc in installed:
            key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
            assert key in stored, f"{key} was not stored"
            if doc["kind"] in (
                "ScaledObject",
                "TriggerAuthentication",
                "ServiceMonitor",
                "PodMonitor",
                "PrometheusRule",
            ):
                # Nothing the chart wrote was pruned as unknown by the CRD's structural schema.
                assert stored[key]["spec"] == doc["spec"], key
        assert "CustomResourceDefinition" not in {d["kind"] for d in installed}  # the session's (policy_crds)

        # The operator's RBAC, asked of the API server's authorizer.
        operator_sa, app_sa = (namespace, f"{RELEASE}-operator"), (namespace, RELEASE)
        watched = [
            d["metadata"]["namespace"]
            for d in docs
            if d["kind"] == "Role" and d["metadata"]["name"] == f"{RELEASE}-operator"
        ]
        cluster_wide = not watched
        scaling = {
            resource: set(rule["verbs"])
            for d in docs
            if d["kind"] == "Role" and d["metadata"]["name"] == f"{RELEASE}-operator-scaling"
            for rule in d["rules"]
            for resource in rule["resources"]
        }
        policies = "unilingoproviderpolicies.unilingo.io"
        expected: list[tuple[tuple, bool]] = []  # ((sa_ns, sa, verb, resource, namespace, subresource), allowed)
        for ns in watched or [namespace]:
            expected += [
                ((*operator_sa, "watch", policies, ns, None), True),
                ((*operator_sa, "patch", policies, ns, None), True),
                ((*operator_sa, "patch", policies, ns, "status"), True),
                ((*operator_sa, "create", "events", ns, None), True),
                ((*operator_sa, "create", "events.events.k8s.io", ns, None), True),
                ((*operator_sa, "delete", policies, ns, None), False),
                ((*operator_sa, "create", policies, ns, None), False),
                ((*operator_sa, "update", policies, ns, None), False),
                ((*operator_sa, "get", "secrets", ns, None), False),
                ((*operator_sa, "create", "kopfpeerings.kopf.dev", ns, None), not cluster_wide),
                ((*operator_sa, "patch", "kopfpeerings.kopf.dev", ns, None), not cluster_wide),
            ]
        expected += [
            ((*operator_sa, "patch", policies, "kube-system", None), cluster_wide),
            ((*operator_sa, "watch", policies, None, None), cluster_wide),
            ((*operator_sa, "patch", "clusterkopfpeerings.kopf.dev", None, None), cluster_wide),
            ((*operator_sa, "list", "customresourcedefinitions.apiextensions.k8s.io", None, None), True),
            ((*operator_sa, "watch", "customresourcedefinitions.apiextensions.k8s.io", None, None), True),
            ((*operator_sa, "create", "customresourcedefinitions.apiextensions.k8s.io", None, None), False),
            ((*operator_sa, "update", "leases.coordination.k8s.io", namespace, None), True),
            ((*operator_sa, "create", "leases.coordination.k8s.io", namespace, None), True),
            ((*operator_sa, "update", "leases.coordination.k8s.io", "kube-system", None), False),
            # The workers' scaling (unilingo_operator.scaling): what its Role renders, in the
            # release namespace only, and never deleting a pod.
            ((*operator_sa, "list", "pods", namespace, None), "list" in scaling.get("pods", ())),
            ((*operator_sa, "patch", "pods", namespace, None), "patch" in scaling.get("pods", ())),
            (
                (*operator_sa, "patch", "scaledobjects.keda.sh", namespace, None),
                "patch" in scaling.get("scaledobjects", ()),
            ),
            ((*operator_sa, "delete", "pods", namespace, None), False),
            ((*operator_sa, "list", "pods", "kube-system", None), False),
            ((*operator_sa, "patch", "scaledobjects.keda.sh", "kube-system", None), False),
            # api and workers never call the Kubernetes API.
            ((*app_sa, "list", "pods", namespace, None), False),
            ((*app_sa, "get", "secrets", namespace, None), False),
            ((*app_sa, "list", policies, namespace, None), False),
        ]
        answers = access_reviews(kubectl, [q for q, _ in expected])
        wrong = [(q, allowed) for (q, allowed), answer in zip(expected, answers, strict=True) if answer != allowed]
        assert wrong == [], "RBAC answers differ from (question, expected): " + repr(wrong)
    finally:
        # 3. Uninstall removes everything the release created.
        helm("uninstall", RELEASE, "--namespace", namespace, env=helm_env, timeout=180)
    left = kubectl("get", "-f", "-", "--ignore-not-found", "-o", "name", input=yaml.safe_dump_all(installed))
    assert left.stdout.strip() == "", "left behind by helm uninstall:\n" + left.stdout


def served_spec(kubectl) -> dict:
    """The spec schema the API server serves for UnilingoProviderPolicy now."""
    crd = json.loads(kubectl("get", "crd", CRD_NAMES[0], "-o", "json").stdout)
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def create_policy(kubectl, namespace: str, spec: dict, validate: str = "strict") -> subprocess.CompletedProcess:
    """A policy as the API server would create it (server-side dry run), its field validation
    ``validate``: ``strict`` refuses unknown fields, ``ignore`` prunes them silently."""
    policy = {
        "apiVersion": "unilingo.io/v1alpha1",
        "kind": "UnilingoProviderPolicy",
        "metadata": {"name": "openai", "namespace": namespace},
        "spec": spec,
    }
    return kubectl(
        "create",
        "--dry-run=server",
        f"--validate={validate}",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(policy),
        check=False,
    )


def test_helm_upgrade_updates_the_crds_and_uninstall_keeps_them(
    kubectl, third_party_crds, policy_crds, helm_env, tmp_path
):
    """A release of an older chart whose CRD lacked ``suspended`` is upgraded to this chart: the
    API server serves the new schema at once (a chart's crds/ folder would have stayed as it
    was), so a policy with ``suspended`` is accepted and keeps it instead of being refused or
    pruned; uninstalling keeps every CRD."""
    from unilingo_operator import crd

    namespace, release = "chart-crds", "unilingo-crds"
    kubectl("create", "namespace", namespace, check=False)
    # The CRDs are there already, as a chart with a crds/ folder (or `kubectl apply`) left them:
    # owned by no release. Hand them to this one, as charts/unilingo/README.md says.
    for name in CRD_NAMES:
        kubectl("label", "crd", name, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kubectl(
            "annotate",
            "crd",
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
            "--overwrite",
        )

    older = tmp_path / "unilingo"
    shutil.copytree(CHART, older)
    policy = crd.policy_crd()
    (version,) = policy["spec"]["versions"]
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["suspended"]
    (older / "templates" / "crds" / crd.POLICY_FILE).write_text(crd.chart_template([policy], crd.POLICY_HEADER))

    def established() -> None:
        kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in CRD_NAMES))

    try:
        helm("install", release, str(older), "--namespace", namespace, "--wait=false", env=helm_env, timeout=180)
        established()
        assert "suspended" not in served_spec(kubectl)["properties"]
        suspended = {"provider": "openai", "suspended": True}
        refused = create_policy(kubectl, namespace, suspended)
        assert refused.returncode != 0 and 'unknown field "spec.suspended"' in refused.stderr, refused.stderr
        pruned = create_policy(kubectl, namespace, suspended, validate="ignore")
        assert pruned.returncode == 0 and "suspended" not in json.loads(pruned.stdout)["spec"], pruned.stderr

        helm("upgrade", release, str(CHART), "--namespace", namespace, "--wait=false", env=helm_env, timeout=180)
        established()
        (current,) = crd.policy_crd()["spec"]["versions"]
        assert served_spec(kubectl) == current["schema"]["openAPIV3Schema"]["properties"]["spec"]
        created = create_policy(kubectl, namespace, suspended)
        assert created.returncode == 0 and json.loads(created.stdout)["spec"]["suspended"] is True, created.stderr
        managed = parse(helm("get", "manifest", release, "--namespace", namespace, env=helm_env).stdout)
        assert sorted(d["metadata"]["name"] for d in managed if d["kind"] == "CustomResourceDefinition") == sorted(
            CRD_NAMES
        )
    finally:
        helm("uninstall", release, "--namespace", namespace, env=helm_env, timeout=180, check=False)
    # Kept (helm.sh/resource-policy: keep), and so is every policy in the cluster.
    for name in CRD_NAMES:
        kubectl("get", "crd", name)
    assert "suspended" in served_spec(kubectl)["properties"]
