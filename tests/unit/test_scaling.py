"""The workers' scaling rules (unilingo.scaling): quota-aware maximum replicas, deletion cost."""

from __future__ import annotations

import pytest

from unilingo.policy import ProviderPolicy
from unilingo.scaling import ProviderState, deletion_cost, parse_busy, queue_provider, useful_max_replicas


def openai(**changes) -> ProviderState:
    return ProviderState(policy=ProviderPolicy(provider="openai", **changes))


def test_openai_five_in_flight_four_slots_per_pod_makes_two_pods_useful():
    ceiling = useful_max_replicas("openai", openai(), concurrency=4, ceiling=10)
    assert ceiling.replicas == 2
    assert "5 in flight" in ceiling.reason


@pytest.mark.parametrize(
    ("in_flight", "concurrency", "ceiling", "expected"),
    [(5, 4, 10, 2), (8, 4, 10, 2), (9, 4, 10, 3), (1, 4, 10, 1), (50, 4, 10, 10), (20, 8, 3, 3)],
)
def test_the_maximum_is_in_flight_over_slots_rounded_up_within_the_chart_ceiling(
    in_flight, concurrency, ceiling, expected
):
    state = ProviderState(policy=ProviderPolicy(provider="azure-speech", max_in_flight=in_flight))
    assert useful_max_replicas("azure-speech", state, concurrency=concurrency, ceiling=ceiling).replicas == expected


def test_a_policy_change_moves_the_maximum():
    before = useful_max_replicas("openai", openai(), concurrency=4, ceiling=10).replicas
    after = useful_max_replicas("openai", openai(max_in_flight=20), concurrency=4, ceiling=10).replicas
    assert (before, after) == (2, 5)


def test_min_replicas_is_a_floor():
    assert (
        useful_max_replicas("openai", openai(max_in_flight=1), concurrency=4, ceiling=10, min_replicas=3).replicas == 3
    )


@pytest.mark.parametrize(
    "state",
    [
        openai(suspended=True),
        ProviderState(policy=ProviderPolicy(provider="openai"), breaker_open=True),
        ProviderState(policy=ProviderPolicy(provider="openai"), paused_for=12.0),
    ],
    ids=["suspended", "breaker-open", "paused-by-429"],
)
def test_a_blocked_provider_does_not_scale_its_queue_up(state):
    assert useful_max_replicas("openai", state, concurrency=4, ceiling=10, current=0).replicas == 1
    held = useful_max_replicas("openai", state, concurrency=4, ceiling=10, current=2)
    assert held.replicas == 2 and "not scaling up" in held.reason
    # never above what the policy makes useful, even with more pods running
    assert useful_max_replicas("openai", state, concurrency=1, ceiling=10, current=9).replicas == 5


def test_a_queue_without_provider_keeps_the_chart_ceiling():
    assert queue_provider("pdf") is None
    assert useful_max_replicas(None, None, concurrency=2, ceiling=3).replicas == 3


def test_queues_map_to_the_providers_they_pay():
    assert [queue_provider(q) for q in ("ai", "speech", "ocr", "tts")] == [
        "openai",
        "azure-speech",
        "azure-vision",
        "aws-polly",
    ]


def test_busy_pods_cost_more_to_delete_than_idle_ones():
    assert deletion_cost(parse_busy(None)) == 0
    assert deletion_cost(parse_busy(b"2")) > deletion_cost(parse_busy(b"0"))
    assert parse_busy(b"garbage") == 0
