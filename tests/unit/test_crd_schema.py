"""The CRD is generated from the policy model and stays in step with it (no I/O but files).

The API server's own behaviour with this CRD (rejections, defaulting, CEL) is tested on the
real control plane in tests/controlplane/test_crd.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tests.support.chart import RELEASE, of_kind, render
from unilingo.policy import DEFAULT_POLICIES, PROVIDERS, V1_FIGURES, ProviderPolicy
from unilingo_operator import crd

ROOT = Path(__file__).resolve().parents[2]


def model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of the model as a dotted camelCase path (nested models included)."""
    paths = set()
    for name, field in model.model_fields.items():
        alias = field.alias or name
        paths.add(prefix + alias)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths |= model_paths(annotation, f"{prefix}{alias}.")
    return paths


def schema_paths(schema: dict, prefix: str = "") -> set[str]:
    paths = set()
    for name, sub in (schema.get("properties") or {}).items():
        paths.add(prefix + name)
        paths |= schema_paths(sub, f"{prefix}{name}.")
    return paths


def served_schema(document: dict) -> dict:
    (version,) = document["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def checked_in():
    documents = list(yaml.safe_load_all((ROOT / "manifests/crd/unilingoproviderpolicies.yaml").read_text()))
    assert len(documents) == 1
    return documents[0]


def test_checked_in_files_are_what_the_model_generates():
    stale = crd.stale_files()
    assert not stale, "regenerate with `python scripts/gen_crd.py`:\n" + "\n".join(stale.values())


def test_the_chart_renders_the_same_crds_labelled_kept_and_before_what_uses_them():
    """The chart's CRDs are manifests/crd/'s documents, with the release's labels and Helm's keep
    annotation; Helm applies them before the RBAC and the operator that use them (Helm installs
    and upgrades in the order ``helm template`` prints); ``crds.install=false`` renders none."""
    plain = [d for name in crd.render() for d in yaml.safe_load_all((ROOT / "manifests/crd" / name).read_text())]
    docs = render("default")
    served = of_kind(docs, "CustomResourceDefinition")
    assert sorted(d["metadata"]["name"] for d in served) == sorted(d["metadata"]["name"] for d in plain)
    by_name = {d["metadata"]["name"]: d for d in plain}
    for document in served:
        metadata = document["metadata"]
        assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert {k: v for k, v in document.items() if k != "metadata"} == {
            k: v for k, v in by_name[metadata["name"]].items() if k != "metadata"
        }
    kinds = [d["kind"] for d in docs]
    last_crd = max(i for i, kind in enumerate(kinds) if kind == "CustomResourceDefinition")
    first_user = min(i for i, kind in enumerate(kinds) if kind in ("ClusterRole", "Role", "Deployment"))
    assert last_crd < first_user, kinds
    assert of_kind(render("default", "--set", "crds.install=false"), "CustomResourceDefinition") == []


def test_every_model_field_is_in_the_spec_and_nothing_else(checked_in):
    spec = served_schema(checked_in)["properties"]["spec"]
    assert schema_paths(spec) == model_paths(ProviderPolicy)


def test_status_policy_has_the_same_fields(checked_in):
    status_policy = served_schema(checked_in)["properties"]["status"]["properties"]["policy"]
    assert schema_paths(status_policy) == model_paths(ProviderPolicy)


def test_names_scope_and_subresource(checked_in):
    assert checked_in["metadata"]["name"] == "unilingoproviderpolicies.unilingo.io"
    spec = checked_in["spec"]
    assert spec["group"] == "unilingo.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "UnilingoProviderPolicy"
    assert spec["names"]["plural"] == "unilingoproviderpolicies"
    assert spec["names"]["shortNames"] == ["upp"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    status = served_schema(checked_in)["properties"]["status"]["properties"]
    assert {"conditions", "observedGeneration", "revision"} <= set(status)


def test_structural_no_refs_and_typed(checked_in):
    def walk(node, path="schema"):
        if isinstance(node, dict):
            assert "$ref" not in node and "$defs" not in node and "anyOf" not in node, path
            if "properties" in node:
                assert node.get("type") == "object", path
                assert node.get("additionalProperties") is not False, path
                for name, sub in node["properties"].items():
                    assert "type" in sub or sub.get("x-kubernetes-preserve-unknown-fields"), f"{path}.{name}"
                    walk(sub, f"{path}.{name}")
            for key in ("items",):
                if key in node:
                    walk(node[key], f"{path}[]")

    walk(served_schema(checked_in))


def test_schema_defaults_are_the_models_common_defaults(checked_in):
    spec = served_schema(checked_in)["properties"]["spec"]["properties"]
    model = ProviderPolicy(provider="openai")
    assert spec["breaker"]["default"] == model.breaker.model_dump(by_alias=True)
    assert spec["retry"]["default"] == model.retry.model_dump(by_alias=True)
    for name, sub in spec["breaker"]["properties"].items():
        assert sub["default"] == model.breaker.model_dump(by_alias=True)[name]
    for name, sub in spec["retry"]["properties"].items():
        assert sub["default"] == model.retry.model_dump(by_alias=True)[name]
    assert spec["suspended"]["default"] is False
    # Per-provider figures have no schema default: the operator fills them from the model.
    for name in ("requestsPerMinute", "tokensPerMinute", "burst", "maxInFlight"):
        assert "default" not in spec[name], name
    assert served_schema(checked_in)["properties"]["spec"]["required"] == ["provider"]
    assert spec["provider"]["enum"] == list(PROVIDERS)


def test_cel_rules_carry_the_default_figures(checked_in):
    rules = served_schema(checked_in)["properties"]["spec"]["x-kubernetes-validations"]
    text = " ".join(rule["rule"] for rule in rules)
    for provider, figures in V1_FIGURES.items():
        assert f"'{provider}': {figures.requests_per_minute}" in text
        assert f"'{provider}': {figures.max_in_flight}" in text
    assert all(rule.get("message") for rule in rules)
    fields = {rule["fieldPath"] for rule in rules}
    assert fields == {".burst", ".breaker.halfOpenProbes"}


def test_printer_columns_point_at_real_fields(checked_in):
    (version,) = checked_in["spec"]["versions"]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    for wanted in ("Provider", "Req/min", "Tokens/min", "In-flight", "Breaker", "Ready", "Age"):
        assert wanted in names
    known = {f"spec.{p}" for p in schema_paths(served_schema(checked_in)["properties"]["spec"])}
    known |= {f"status.{p}" for p in schema_paths(served_schema(checked_in)["properties"]["status"])}
    known |= {"metadata.creationTimestamp"}
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"].lstrip(".").split("[")[0]
        assert path in known, column


def test_one_sample_policy_per_provider_and_each_is_valid():
    seen = {}
    for path in sorted((ROOT / "manifests/policies").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == "unilingo.io/v1alpha1" and document["kind"] == "UnilingoProviderPolicy"
        policy = ProviderPolicy.model_validate(document["spec"])
        seen[policy.provider] = policy
    assert set(seen) == set(PROVIDERS)
    # The samples state Unilingo v1's figures (they are documentation of the defaults too).
    for provider, policy in seen.items():
        default = DEFAULT_POLICIES[provider]
        assert policy.requests_per_minute == default.requests_per_minute, provider
        assert policy.max_in_flight == default.max_in_flight, provider


def test_peering_crds_are_kopfs():
    documents = list(yaml.safe_load_all((ROOT / "manifests/crd/kopf-peering.yaml").read_text()))
    names = {d["metadata"]["name"]: d["spec"]["scope"] for d in documents}
    assert names == {"clusterkopfpeerings.kopf.dev": "Cluster", "kopfpeerings.kopf.dev": "Namespaced"}
