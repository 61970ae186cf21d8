"""The policy model: the defaults, its JSON shape, its rules and its schema (no I/O)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from unilingo.policy import (
    DEFAULT_POLICIES,
    LIMITER_FIELDS,
    PROVIDERS,
    BreakerPolicy,
    ProviderPolicy,
    RetryPolicy,
    default_policy,
    document,
    parse_change,
    parse_stored,
    policy_json_schema,
)


def test_defaults_are_unilingo_v1s_figures():
    openai = default_policy("openai")
    assert (openai.requests_per_minute, openai.tokens_per_minute, openai.max_in_flight) == (50, 75_000, 5)
    assert default_policy("azure-speech").max_in_flight == 20
    assert default_policy("azure-vision").requests_per_minute == 20  # Azure AI Vision F0
    for policy in DEFAULT_POLICIES.values():
        assert (policy.breaker.failure_threshold, policy.breaker.open_seconds) == (5, 60.0)
        assert not policy.suspended
    assert set(DEFAULT_POLICIES) == set(PROVIDERS) == {"openai", "azure-speech", "azure-vision", "aws-polly", "storage"}


def test_json_is_camel_case_and_round_trips():
    policy = ProviderPolicy(provider="openai", requests_per_minute=40, breaker=BreakerPolicy(open_seconds=30))
    data = json.loads(policy.model_dump_json())
    assert set(data) == {
        "provider",
        "requestsPerMinute",
        "tokensPerMinute",
        "burst",
        "maxInFlight",
        "breaker",
        "retry",
        "suspended",
        "budget",
        "price",
        "adaptive",
    }
    assert data["budget"] == {"whenSpent": "wait"}  # no limits: none written, no nulls
    assert data["price"] == {"usdPer1kInputTokens": 0.00015, "usdPer1kOutputTokens": 0.0006}
    assert set(data["breaker"]) == {"failureThreshold", "openSeconds", "halfOpenProbes"}
    assert set(data["retry"]) == {"attempts", "backoffSeconds", "maxBackoffSeconds"}
    assert ProviderPolicy.model_validate(data) == policy
    assert ProviderPolicy.model_validate_json(document(policy)) == policy


def test_fields_left_out_take_the_providers_defaults():
    speech = ProviderPolicy.model_validate({"provider": "azure-speech", "breaker": {"openSeconds": 30}})
    assert speech.max_in_flight == 20 and speech.requests_per_minute == 0
    assert speech.breaker == BreakerPolicy(failure_threshold=5, open_seconds=30, half_open_probes=1)
    # a lowered rate without a burst gets a burst that fits it
    assert ProviderPolicy.model_validate({"provider": "openai", "requestsPerMinute": 4}).burst == 4
    assert ProviderPolicy.model_validate({"provider": "openai", "requestsPerMinute": 40}).burst == 10


@pytest.mark.parametrize(
    "change",
    [
        {"requestsPerMinute": -1},
        {"tokensPerMinute": -5},
        {"burst": 0},
        {"maxInFlight": 0},
        {"breaker": {"failureThreshold": 0}},
        {"breaker": {"openSeconds": 0.5}},
        {"breaker": {"halfOpenProbes": 0}},
        {"retry": {"attempts": 0}},
        {"retry": {"backoffSeconds": -1}},
        {"budget": {"usdPerDay": -0.01}},
        {"budget": {"usdPerMonth": -1}},
        {"budget": {"whenSpent": "panic"}},
        {"budget": {"usdPerDay": 20, "usdPerMonth": 10}},
        {"price": {"usdPer1kInputTokens": -0.001}},
    ],
)
def test_out_of_range_values_are_refused(change):
    with pytest.raises(ValidationError):
        ProviderPolicy.model_validate({"provider": "openai", **change})


@pytest.mark.parametrize(
    "document_, message",
    [
        ({"requestsPerMinute": 20, "burst": 21}, "burst must not exceed requestsPerMinute"),
        ({"maxInFlight": 2, "breaker": {"halfOpenProbes": 3}}, "halfOpenProbes must not exceed maxInFlight"),
        ({"retry": {"backoffSeconds": 10, "maxBackoffSeconds": 5}}, "backoffSeconds must not exceed"),
    ],
)
def test_cross_field_rules(document_, message):
    with pytest.raises(ValidationError, match=message):
        ProviderPolicy.model_validate({"provider": "openai", **document_})


def test_burst_is_free_when_the_rate_is_not_metered():
    policy = ProviderPolicy.model_validate({"provider": "storage", "requestsPerMinute": 0, "burst": 500})
    assert policy.burst == 500


def test_unknown_provider_and_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        ProviderPolicy.model_validate({"provider": "gemini"})
    with pytest.raises(ValidationError):
        ProviderPolicy.model_validate({"provider": "openai", "requestPerMinute": 10})  # misspelt
    with pytest.raises(ValueError, match="unknown provider"):
        default_policy("gemini")


def test_policies_are_immutable():
    with pytest.raises(ValidationError):
        default_policy("openai").suspended = True


def test_limiter_fields_are_flat_integers_in_milliseconds():
    policy = ProviderPolicy(
        provider="openai",
        breaker=BreakerPolicy(open_seconds=2.5),
        retry=RetryPolicy(backoff_seconds=0.25),
        suspended=True,
    )
    fields = policy.limiter_fields()
    assert tuple(fields) == LIMITER_FIELDS
    assert fields["open_ms"] == 2500 and fields["pause_ms"] == 250 and fields["suspended"] == 1
    assert all(isinstance(value, int) for value in fields.values())


def test_retry_backoff_doubles_up_to_its_ceiling():
    retry = RetryPolicy(backoff_seconds=1, max_backoff_seconds=5)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


def test_stored_documents_and_change_messages_parse():
    policy = ProviderPolicy(provider="aws-polly", max_in_flight=3)
    assert parse_stored("aws-polly", [document(policy).encode(), b"7"]) == (policy, 7)
    assert parse_stored("aws-polly", [None, None]) == (default_policy("aws-polly"), 0)
    assert parse_change(b'{"provider":"openai","revision":12}') == ("openai", 12)


def _walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_json_schema_is_a_clean_structural_schema():
    schema = policy_json_schema()
    for path, node in _walk(schema):
        if not isinstance(node, dict):
            continue
        assert not {"$ref", "$defs", "title", "anyOf", "oneOf", "allOf"} & set(node), path
        assert node.get("additionalProperties") is not False, path
        if path.endswith(".properties") and isinstance(node, dict):
            for name, prop in node.items():
                assert "type" in prop, f"{path}.{name} has no type"
                assert "description" in prop, f"{path}.{name} has no description"
    assert schema["type"] == "object" and schema["required"] == ["provider"]
    assert set(schema["properties"]) == set(json.loads(default_policy("openai").model_dump_json()))
    assert schema["properties"]["provider"]["enum"] == list(PROVIDERS)
    # per-provider figures carry no schema default: the API server could not know them
    for name in ("requestsPerMinute", "tokensPerMinute", "burst", "maxInFlight"):
        assert "default" not in schema["properties"][name]
    breaker_default = schema["properties"]["breaker"]["default"]
    assert breaker_default == {"failureThreshold": 5, "openSeconds": 60.0, "halfOpenProbes": 1}


def test_json_schema_agrees_with_the_model():
    validator = jsonschema.Draft202012Validator(policy_json_schema())
    for policy in DEFAULT_POLICIES.values():
        validator.validate(json.loads(policy.model_dump_json()))
    validator.validate({"provider": "openai"})
    for bad in ({"provider": "gemini"}, {"provider": "openai", "burst": 0}, {}):
        assert not validator.is_valid(bad)


def test_budgets_and_prices_reach_the_limiter_in_nano_dollars():
    policy = ProviderPolicy.model_validate(
        {
            "provider": "openai",
            "budget": {"usdPerDay": 2.5, "whenSpent": "fail"},
            "price": {"usdPer1kInputTokens": 0.001},
        }
    )
    fields = policy.limiter_fields()
    assert fields["budget_day_nusd"] == 2_500_000_000 and fields["budget_month_nusd"] == -1  # -1: no limit
    assert fields["price_in_nusd_1k"] == 1_000_000 and fields["price_out_nusd_1k"] == 0  # a price left out is 0
    assert fields["budget_fail"] == 1
    assert ProviderPolicy(provider="openai").price.cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    # Providers that do not bill tokens have no token price by default.
    assert ProviderPolicy(provider="aws-polly").price.cost(1000, 1000) == 0
