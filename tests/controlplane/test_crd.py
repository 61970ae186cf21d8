"""The UnilingoProviderPolicy CRD on the real kube-apiserver: it installs, the API server
itself rejects bad input with a message saying what is wrong, and it defaults what the schema
can default. No operator runs here (tests/controlplane/test_operator.py has it)."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from unilingo.policy import ProviderPolicy


@pytest.fixture(scope="module")
def namespace(kubectl, policy_crds):
    name = f"crd-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    return name


def manifest(name: str, spec: dict | None) -> str:
    body = {"apiVersion": "unilingo.io/v1alpha1", "kind": "UnilingoProviderPolicy", "metadata": {"name": name}}
    if spec is not None:
        body["spec"] = spec
    return yaml.safe_dump(body)


def test_crd_installs_with_its_names_and_status_subresource(kubectl, policy_crds):
    crd = json.loads(kubectl("get", "crd", "unilingoproviderpolicies.unilingo.io", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["upp"]
    resources = kubectl("api-resources", "--api-group=unilingo.io", "-o", "wide").stdout
    assert "unilingoproviderpolicies" in resources and "upp" in resources and "UnilingoProviderPolicy" in resources
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


BAD = {
    "negative rate": (
        {"provider": "openai", "requestsPerMinute": -5},
        ["spec.requestsPerMinute", "should be greater than or equal to 0"],
    ),
    "zero open time": (
        {"provider": "openai", "breaker": {"openSeconds": 0}},
        ["spec.breaker.openSeconds", "should be greater than or equal to 1"],
    ),
    "unknown provider": (
        {"provider": "gemini"},
        ["spec.provider", 'Unsupported value: "gemini"', '"openai"'],
    ),
    "a string where a number belongs": (
        {"provider": "openai", "tokensPerMinute": "lots"},
        ["spec.tokensPerMinute", "must be of type integer"],
    ),
    "missing provider": (
        {"requestsPerMinute": 10},
        ["spec.provider", "Required value"],
    ),
    "missing spec": (None, ["spec", "Required value"]),
    "half-open probes above the in-flight cap": (
        {"provider": "openai", "maxInFlight": 2, "breaker": {"halfOpenProbes": 3}},
        ["spec.breaker.halfOpenProbes", "must not exceed maxInFlight"],
    ),
    "half-open probes above the provider's default in-flight cap": (
        {"provider": "openai", "breaker": {"halfOpenProbes": 6}},  # openai's default cap: 5
        ["spec.breaker.halfOpenProbes", "must not exceed maxInFlight", "openai 5"],
    ),
    "burst below one": (
        {"provider": "openai", "burst": 0},
        ["spec.burst", "should be greater than or equal to 1"],
    ),
    "burst above the rate": (
        {"provider": "openai", "requestsPerMinute": 20, "burst": 21},
        ["spec.burst", "must not exceed requestsPerMinute"],
    ),
    "burst above the provider's default rate": (
        {"provider": "openai", "burst": 51},  # openai's default: 50/min
        ["spec.burst", "must not exceed requestsPerMinute", "openai 50"],
    ),
    "backoff above its ceiling": (
        {"provider": "openai", "retry": {"backoffSeconds": 60, "maxBackoffSeconds": 30}},
        ["spec.retry.backoffSeconds", "must not exceed retry.maxBackoffSeconds"],
    ),
    "a negative daily budget": (
        {"provider": "openai", "budget": {"usdPerDay": -1}},
        ["spec.budget.usdPerDay", "should be greater than or equal to 0"],
    ),
    "a daily budget above the monthly one": (
        {"provider": "openai", "budget": {"usdPerDay": 50, "usdPerMonth": 20}},
        ["spec.budget.usdPerDay", "must not exceed budget.usdPerMonth"],
    ),
    "an unknown action when spent": (
        {"provider": "openai", "budget": {"usdPerDay": 5, "whenSpent": "panic"}},
        ["spec.budget.whenSpent", 'Unsupported value: "panic"', '"wait"', '"fail"'],
    ),
    "a negative price": (
        {"provider": "openai", "price": {"usdPer1kInputTokens": -0.0001}},
        ["spec.price.usdPer1kInputTokens", "should be greater than or equal to 0"],
    ),
    "adaptive not a boolean": (
        {"provider": "openai", "adaptive": "sometimes"},
        ["spec.adaptive", "must be of type boolean"],
    ),
    "a misspelt field": (
        {"provider": "openai", "requestPerMinute": 10},
        ['unknown field "spec.requestPerMinute"'],
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_rejected_by_the_api_server(kubectl, namespace, case):
    spec, expected = BAD[case]
    result = kubectl("apply", "-n", namespace, "-f", "-", input=manifest("bad", spec), check=False)
    assert result.returncode != 0, f"{case} was accepted:\n{result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
    assert kubectl("get", "upp", "bad", "-n", namespace, check=False).returncode != 0  # nothing stored


@pytest.mark.parametrize("case", [c for c in BAD if BAD[c][0] is not None and "misspelt" not in c])
def test_the_model_rejects_the_same_input(case):
    """The API server and the domain model agree (the operator's second line of defence)."""
    with pytest.raises(ValueError):
        ProviderPolicy.model_validate(BAD[case][0])


def test_the_server_defaults_the_common_figures_and_leaves_per_provider_ones_to_the_operator(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("minimal", {"provider": "azure-speech"}))
    stored = json.loads(kubectl("get", "upp", "minimal", "-n", namespace, "-o", "json").stdout)["spec"]
    assert stored["breaker"] == {"failureThreshold": 5, "openSeconds": 60, "halfOpenProbes": 1}
    assert stored["retry"] == {"attempts": 3, "backoffSeconds": 1, "maxBackoffSeconds": 30}
    assert stored["suspended"] is False and stored["adaptive"] is False
    assert "maxInFlight" not in stored and "requestsPerMinute" not in stored
    # What the schema stored, the model reads as the full default policy for the provider.
    assert ProviderPolicy.model_validate(stored).max_in_flight == 20


def test_edge_values_are_accepted(kubectl, namespace):
    spec = {
        "provider": "aws-polly",
        "requestsPerMinute": 0,
        "burst": 1000,
        "maxInFlight": 1,
        "breaker": {"openSeconds": 1, "halfOpenProbes": 1},
        "suspended": True,
        "adaptive": True,
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("edges", spec))
    ProviderPolicy.model_validate(spec)


def test_a_budget_and_prices_are_accepted_and_read_back_as_the_model_reads_them(kubectl, namespace):
    spec = {
        "provider": "openai",
        "budget": {"usdPerDay": 20, "usdPerMonth": 400, "whenSpent": "fail"},
        "price": {"usdPer1kInputTokens": 0.0025, "usdPer1kOutputTokens": 0.01},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("budgeted", spec))
    stored = json.loads(kubectl("get", "upp", "budgeted", "-n", namespace, "-o", "json").stdout)["spec"]
    assert stored["budget"] == spec["budget"] and stored["price"] == spec["price"]
    policy = ProviderPolicy.model_validate(stored)
    assert (policy.budget.usd_per_day, policy.budget.when_spent) == (20, "fail")
    # Left out: no limit, jobs wait, and the provider's default price (gpt-4o-mini's for openai).
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("unbudgeted", {"provider": "openai"}))
    stored = json.loads(kubectl("get", "upp", "unbudgeted", "-n", namespace, "-o", "json").stdout)["spec"]
    assert stored["budget"] == {"whenSpent": "wait"} and "price" not in stored
    assert ProviderPolicy.model_validate(stored).price.usd_per_1k_output_tokens == 0.0006


def test_provider_is_immutable(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("fixed", {"provider": "openai"}))
    result = kubectl(
        "patch",
        "upp",
        "fixed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"provider":"azure-vision"}}',
        check=False,
    )
    assert result.returncode != 0 and "provider is immutable" in result.stderr


def test_every_sample_policy_is_accepted(kubectl, namespace, policy_crds):
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(policy_crds.parent / "policies"))
    assert result.stdout.count("created (server dry run)") == 5


def test_printer_columns(kubectl, namespace):
    header = kubectl("get", "upp", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PROVIDER", "REQ/MIN", "TOKENS/MIN", "IN-FLIGHT", "BREAKER", "READY", "AGE"]
    wide = kubectl("get", "upp", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert {"SUSPENDED", "REVISION", "REASON", "ADAPTIVE", "EFF-REQ/MIN", "EFF-TOKENS/MIN", "STATE"} <= set(wide)
    assert "PAUSED-UNTIL" in wide


def status_patch(kubectl, namespace: str, name: str, status: dict):
    return kubectl(
        "patch",
        "upp",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        check=False,
    )


def test_the_live_status_is_validated_by_the_api_server(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("live", {"provider": "openai", "adaptive": True}))
    live = {
        "breaker": "open",
        "halfOpenAt": "2026-12-02T01:00:00Z",
        "pausedUntil": "2026-12-02T01:00:30Z",
        "adaptive": True,
        "effective": {"requestsPerMinute": 30, "tokensPerMinute": 75000},
        "learned": {"requestsPerMinute": 30, "tokensPerMinute": 150000},
    }
    assert status_patch(kubectl, namespace, "live", {"live": live}).returncode == 0
    stored = json.loads(kubectl("get", "upp", "live", "-n", namespace, "-o", "json").stdout)["status"]["live"]
    assert stored == live
    row = kubectl("get", "upp", "live", "-n", namespace, "-o", "wide", "--no-headers").stdout.split()
    assert {"30", "75000", "open", "2026-12-02T01:00:30Z"} <= set(row)

    for bad, message in [
        ({"breaker": "broken"}, "status.live.breaker: Unsupported value"),
        ({"effective": {"requestsPerMinute": -1}}, "should be greater than or equal to 0"),
        ({"effective": {"requestsPerMinute": "many"}}, "must be of type integer"),
        ({"pausedUntil": "tomorrow"}, "status.live.pausedUntil"),
    ]:
        result = status_patch(kubectl, namespace, "live", {"live": bad})
        assert result.returncode != 0 and message in result.stderr, (bad, result.stderr)
