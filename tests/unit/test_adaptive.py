"""Limits learned from the provider's rate-limit headers: parsing and the effective figures."""

from __future__ import annotations

import httpx
import pytest

from unilingo.adaptive import (
    LEARNED_FIELDS,
    Effective,
    RateLimits,
    effective,
    learned_fields,
    parse_duration,
    parse_learned,
)
from unilingo.limiter import BreakerState, ProviderStatus
from unilingo.live_status import live_status
from unilingo.policy import ProviderPolicy


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("17.4s", 17.4),
        ("120ms", 0.12),
        ("0s", 0.0),
        ("1h2m3.5s", 3723.5),
        ("1m30.25s", 90.25),
        ("2", 2.0),  # plain seconds, as some OpenAI-compatible servers send
    ],
)
def test_openai_durations_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "5 minutes", "-3", "6m0", "s"])
def test_what_is_no_duration_is_none(text):
    assert parse_duration(text) is None


def openai_headers(**overrides) -> httpx.Headers:
    headers = {
        "x-ratelimit-limit-requests": "30",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-requests": "29",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    headers.update(overrides)
    return httpx.Headers({k: v for k, v in headers.items() if v is not None})


def test_an_answers_headers_become_rate_limits():
    limits = RateLimits.from_headers(openai_headers())
    assert limits == RateLimits(30, 29, 2.0, 150_000, 149_984, 360.0)
    # httpx's headers are case-insensitive, as HTTP's are
    assert RateLimits.from_headers(httpx.Headers({"X-RateLimit-Limit-Requests": "30"})).requests_limit == 30


def test_headers_without_a_limit_teach_nothing():
    assert RateLimits.from_headers(None) is None
    assert RateLimits.from_headers(httpx.Headers({"content-type": "application/json"})) is None
    assert (
        RateLimits.from_headers(
            openai_headers(**{"x-ratelimit-limit-requests": None, "x-ratelimit-limit-tokens": None})
        )
        is None
    )
    garbled = RateLimits.from_headers(
        openai_headers(**{"x-ratelimit-limit-requests": "lots", "x-ratelimit-reset-tokens": "later"})
    )
    assert garbled.requests_limit is None and garbled.tokens_limit == 150_000 and garbled.tokens_reset_s is None


def test_the_learned_record_round_trips_through_its_hash_fields():
    fields = learned_fields(RateLimits(30, 0, 1.5, None, None, None), observed_ms=1_700_000_000_000)
    assert tuple(fields) == LEARNED_FIELDS
    learned = parse_learned({k.encode(): str(v).encode() for k, v in fields.items()})
    assert (learned.requests_per_minute, learned.requests_remaining, learned.requests_reset_s) == (30, 0, 1.5)
    assert (learned.tokens_per_minute, learned.tokens_remaining, learned.tokens_reset_s) == (None, None, None)
    assert learned.observed_at == 1_700_000_000
    assert parse_learned([str(v) for v in fields.values()]) == learned  # HMGET's list alike
    assert parse_learned({}) is None and parse_learned([None] * len(LEARNED_FIELDS)) is None


def learned(rpm=None, tpm=None):
    return parse_learned(learned_fields(RateLimits(rpm, None, None, tpm, None, None), observed_ms=1))


def test_effective_is_the_lower_of_policy_and_account_only_when_adaptive():
    policy = ProviderPolicy(provider="openai", requests_per_minute=50, tokens_per_minute=75_000, adaptive=True)
    assert effective(policy, learned(30, 200_000)) == Effective(30, 75_000)  # never above the policy
    assert effective(policy, learned(80, 40_000)) == Effective(50, 40_000)
    assert effective(policy, None) == Effective(50, 75_000)  # nothing learned yet: the policy
    assert effective(policy, learned(tpm=10_000)) == Effective(50, 10_000)  # a figure not stated keeps the policy's
    fixed = policy.model_copy(update={"adaptive": False})
    assert effective(fixed, learned(30, 40_000)) == Effective(50, 75_000)


def test_an_unmetered_policy_figure_takes_the_accounts():
    policy = ProviderPolicy(provider="openai", requests_per_minute=0, tokens_per_minute=0, burst=10, adaptive=True)
    assert effective(policy, learned(30, 150_000)) == Effective(30, 150_000)
    assert effective(policy, learned()) == Effective(0, 0)


# --- what the status endpoints, the metrics and the operator report ---------------------------------


def provider_status(policy: ProviderPolicy, learned_limits=None, **overrides) -> ProviderStatus:
    fields = dict(
        provider=policy.provider,
        revision=4,
        policy=policy,
        requests_used=3,
        requests_left=None,
        tokens_used=0,
        tokens_left=None,
        in_flight=1,
        in_flight_left=4,
        breaker=BreakerState.CLOSED,
        breaker_failures=0,
        breaker_half_open_in=None,
        breaker_probes_in_flight=0,
        breaker_trips=0,
        paused_for=0.0,
        suspended=False,
        learned=learned_limits,
    )
    return ProviderStatus(**{**fields, **overrides})


def test_the_live_status_block_reports_breaker_pause_and_effective_limits():
    policy = ProviderPolicy(provider="openai", requests_per_minute=50, adaptive=True)
    quiet = live_status(provider_status(policy, learned(30, 200_000)))
    assert quiet == {
        "breaker": "closed",
        "adaptive": True,
        "effective": {"requestsPerMinute": 30, "tokensPerMinute": 75_000},
        "learned": {"requestsPerMinute": 30, "tokensPerMinute": 200_000},
    }
    troubled = live_status(
        provider_status(
            policy,
            None,
            breaker=BreakerState.OPEN,
            breaker_half_open_at=1_796_000_060.0,
            paused_until=1_796_000_005.4,
        )
    )
    assert troubled["breaker"] == "open" and troubled["halfOpenAt"] == "2026-11-30T00:54:20Z"
    assert troubled["pausedUntil"] == "2026-11-30T00:53:25Z"
    assert troubled["effective"] == {"requestsPerMinute": 50, "tokensPerMinute": 75_000} and "learned" not in troubled


def test_the_metrics_show_effective_and_learned_limits():
    from prometheus_client import CollectorRegistry, generate_latest

    from api.metrics import Cluster, cluster_families

    adaptive = provider_status(ProviderPolicy(provider="openai", adaptive=True), learned(30, 200_000))
    fixed = provider_status(ProviderPolicy(provider="azure-vision"), learned(10))

    class Families:
        def collect(self):
            return iter(cluster_families(Cluster(read_at=0, providers={"openai": adaptive, "azure-vision": fixed})))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    text = generate_latest(registry).decode()
    assert 'unilingo_provider_requests_limit{provider="openai"} 50.0' in text  # the policy's figure
    assert 'unilingo_provider_requests_effective_limit{provider="openai"} 30.0' in text
    assert 'unilingo_provider_tokens_effective_limit{provider="openai"} 75000.0' in text
    assert 'unilingo_provider_requests_learned_limit{provider="openai"} 30.0' in text
    assert 'unilingo_provider_tokens_learned_limit{provider="openai"} 200000.0' in text
    # Not adaptive: what was learned is shown, the policy's figure is what holds.
    assert 'unilingo_provider_requests_effective_limit{provider="azure-vision"} 20.0' in text
    assert 'unilingo_provider_requests_learned_limit{provider="azure-vision"} 10.0' in text
