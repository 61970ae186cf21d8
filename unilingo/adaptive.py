"""Limits learned from the provider: what the account really allows, below the policy's figures.

OpenAI tells every caller its account's limits on every answer, 429s included:
``x-ratelimit-limit-requests`` / ``-tokens`` (per minute), ``x-ratelimit-remaining-*`` (left in
the current window) and ``x-ratelimit-reset-*`` (until the window is back to its full limit, as
``6m0s``, ``17.4s`` or ``120ms``). A platform engineer's policy may say 50 requests a minute while
the account (a lower usage tier, a key shared with another system's quota) allows 30: every
call past 30 is a ``429``, a pause for every worker, and a breaker that may open.

With ``adaptive: true`` in the policy, the limiter enforces ``min(policy, learned)``:

* workers parse the headers of every answer (``RateLimits.from_headers``) and record them in
  Redis (``LearnedStore``), one hash per provider that every replica shares;
* the limiter's permit script reads that hash on every decision, so the next permit of every
  worker is held to the learned figure, never above the policy (``effective``);
* the provider's reported usage still reconciles the token window (``unilingo.limiter``).

The record expires ``LEARNED_TTL_SECONDS`` after the last answer that carried the headers: a
provider that stopped sending them (another OpenAI-compatible server behind the same base URL)
falls back to the policy rather than to a figure nobody confirms any more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from unilingo import keys

# An hour: long past any provider's rate-limit window, short enough that a figure no answer has
# confirmed since does not govern a whole day.
LEARNED_TTL_SECONDS = 3600

HEADER_PREFIX = "x-ratelimit-"

# OpenAI's durations: Go's time.Duration text ("1h2m3.5s", "6m0s", "1s", "120ms", "0s").
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds in one of OpenAI's reset durations; None when it is not one."""
    if not text:
        return None
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        try:  # some OpenAI-compatible servers send plain seconds
            value = float(text)
        except ValueError:
            return None
        return value if value >= 0 else None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


@dataclass(frozen=True, slots=True)
class RateLimits:
    """One answer's ``x-ratelimit-*`` headers (None: the header was absent or unreadable)."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_s: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_s: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> RateLimits | None:
        """The figures in ``headers`` (any case-insensitive mapping, such as httpx's); None if none."""
        if not headers:
            return None
        get = headers.get
        limits = cls(
            requests_limit=_count(get(HEADER_PREFIX + "limit-requests")),
            requests_remaining=_count(get(HEADER_PREFIX + "remaining-requests")),
            requests_reset_s=parse_duration(get(HEADER_PREFIX + "reset-requests")),
            tokens_limit=_count(get(HEADER_PREFIX + "limit-tokens")),
            tokens_remaining=_count(get(HEADER_PREFIX + "remaining-tokens")),
            tokens_reset_s=parse_duration(get(HEADER_PREFIX + "reset-tokens")),
        )
        # Only a limit teaches anything about the account; remaining/reset alone are not kept.
        return limits if limits.requests_limit or limits.tokens_limit else None


# The learned hash's fields (``keys.learned_limits``), as the limiter's scripts read them:
# rpm and tpm are what the account allows per minute (0: the provider said nothing of it).
LEARNED_FIELDS = ("rpm", "tpm", "rpm_remaining", "tpm_remaining", "rpm_reset_ms", "tpm_reset_ms", "observed_ms")


def learned_fields(limits: RateLimits, observed_ms: int) -> dict[str, int]:
    """The hash fields that record ``limits``; unknown figures as -1 (0 would read as a limit)."""

    def ms(seconds: float | None) -> int:
        return -1 if seconds is None else round(seconds * 1000)

    def n(value: int | None) -> int:
        return -1 if value is None else value

    return {
        "rpm": limits.requests_limit or 0,
        "tpm": limits.tokens_limit or 0,
        "rpm_remaining": n(limits.requests_remaining),
        "tpm_remaining": n(limits.tokens_remaining),
        "rpm_reset_ms": ms(limits.requests_reset_s),
        "tpm_reset_ms": ms(limits.tokens_reset_s),
        "observed_ms": observed_ms,
    }


@dataclass(frozen=True, slots=True)
class Learned:
    """What the provider said last about the account (``LearnedStore.read``)."""

    requests_per_minute: int | None  # None: not said
    tokens_per_minute: int | None
    requests_remaining: int | None
    tokens_remaining: int | None
    requests_reset_s: float | None
    tokens_reset_s: float | None
    observed_at: float  # epoch seconds of the answer

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "requests_remaining": self.requests_remaining,
            "tokens_remaining": self.tokens_remaining,
            "requests_reset_seconds": self.requests_reset_s,
            "tokens_reset_seconds": self.tokens_reset_s,
            "observed_at": self.observed_at,
        }


def parse_learned(raw: Mapping[Any, Any] | list[Any] | None) -> Learned | None:
    """The learned hash (``HGETALL`` map, or ``HMGET`` of ``LEARNED_FIELDS``) as ``Learned``."""
    if not raw:
        return None
    if isinstance(raw, list):
        raw = dict(zip(LEARNED_FIELDS, raw, strict=True))
    values = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()
    }
    if values.get("observed_ms") in (None, ""):
        return None

    def number(name: str) -> int | None:
        value = int(float(values.get(name) or -1))
        return value if value >= 0 else None

    def limit(name: str) -> int | None:
        value = number(name)
        return value or None  # 0: the provider said nothing of it

    def seconds(name: str) -> float | None:
        value = number(name)
        return None if value is None else value / 1000

    return Learned(
        requests_per_minute=limit("rpm"),
        tokens_per_minute=limit("tpm"),
        requests_remaining=number("rpm_remaining"),
        tokens_remaining=number("tpm_remaining"),
        requests_reset_s=seconds("rpm_reset_ms"),
        tokens_reset_s=seconds("tpm_reset_ms"),
        observed_at=int(values["observed_ms"]) / 1000,
    )


class Effective(NamedTuple):
    """The per-minute figures the limiter enforces (0: not metered, as in the policy)."""

    requests_per_minute: int
    tokens_per_minute: int


def _lower(policy_figure: int, learned: int | None) -> int:
    # 0 in a policy means "not metered": any figure the provider states is lower than that.
    if not learned:
        return policy_figure
    return learned if policy_figure == 0 else min(policy_figure, learned)


def effective(policy, learned: Learned | None) -> Effective:
    """``min(policy, learned)`` per figure when the policy is adaptive; the policy's otherwise.

    The same rule as the limiter's permit script applies (``unilingo.limiter``); this one serves
    the status endpoints, the metrics and the operator's status.
    """
    rpm, tpm = policy.requests_per_minute, policy.tokens_per_minute
    if not policy.adaptive or learned is None:
        return Effective(rpm, tpm)
    return Effective(_lower(rpm, learned.requests_per_minute), _lower(tpm, learned.tokens_per_minute))


class LearnedStore:
    """The learned figures per provider in Redis, on a synchronous client (the workers)."""

    def __init__(self, client, ttl_seconds: int = LEARNED_TTL_SECONDS):
        self.client = client
        self.ttl_ms = ttl_seconds * 1000

    def record(self, provider: str, limits: RateLimits, observed_ms: int) -> None:
        """Keep what one answer said (the latest answer wins; every answer carries the headers)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.learned_limits(provider), mapping=learned_fields(limits, observed_ms))
        pipe.pexpire(keys.learned_limits(provider), self.ttl_ms)
        pipe.execute()

    def read(self, provider: str) -> Learned | None:
        return parse_learned(self.client.hmget(keys.learned_limits(provider), LEARNED_FIELDS))

    def forget(self, provider: str) -> None:
        self.client.delete(keys.learned_limits(provider))
