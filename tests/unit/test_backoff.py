"""The backoffs, from tenacity's wait strategies: a job's retries, webhooks, the operator's."""

from __future__ import annotations

from unilingo import backoff
from unilingo.policy import RetryPolicy
from unilingo_operator.reconcile import MAX_BACKOFF
from unilingo_operator.reconcile import backoff as operator_backoff


def test_exponential_doubles_up_to_its_ceiling():
    wait = backoff.exponential(1.0, 30.0)
    assert [backoff.delay(wait, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(wait, 0) == 1  # an attempt count of 0 is the first
    assert backoff.delay(backoff.exponential(2.0, 3600.0, 4.0), 3) == 32


def test_equal_jitter_stays_between_half_and_all_of_the_delay():
    wait = backoff.equal_jitter(1.0, 30.0)
    for attempt, full in ((1, 1.0), (3, 4.0), (9, 30.0)):
        samples = [backoff.delay(wait, attempt) for _ in range(200)]
        assert all(full / 2 <= s <= full for s in samples), (attempt, min(samples), max(samples))
        assert len(set(samples)) > 1  # jittered, not fixed


def test_the_retry_policy_and_the_operator_use_them():
    assert [RetryPolicy(backoff_seconds=1, max_backoff_seconds=5).delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert [operator_backoff(retry) for retry in range(8)] == [1, 2, 4, 8, 16, 32, MAX_BACKOFF, MAX_BACKOFF]
