"""Provider permits: one global budget per provider, shared by every worker process.

A worker asks for a permit before each provider call and gives it back after. Every decision
is ONE Redis round trip: a Lua script that reads the provider's live policy from Redis
itself (``unilingo.policy``), so the revision written a moment ago is the one enforced; no
process caches a policy, so none can enforce a stale one.

``acquire`` checks, in this order, and stops at the first that refuses:

1. ``suspended``    the policy says so;
   ``budget``       the provider's daily or monthly spend budget is spent (``budget_exhausted``
                    when the policy says its jobs fail rather than wait);
2. ``paused``       the provider answered 429 with ``Retry-After`` (to one worker: it pauses
                    for all of them);
3. ``breaker_open`` the shared circuit breaker is open, or half-open with all its probes out;
4. ``rate``         requests per minute, exact in every rolling 60 s (a sliding-window log),
                    and ``burst``: at most ``burst`` calls in any ``burst/rpm`` minutes;
5. ``tokens``       tokens per minute over the same rolling window;
6. ``in_flight``    the distributed semaphore: leases in a sorted set scored by expiry, so
                    a dead worker's slot comes back when its lease lapses.

A refusal consumes nothing and says how long to wait (``retry_after``) so the job can be
deferred rather than failed. A grant records the call in every budget at once.

Spend: a grant reserves the call's worst cost (its token estimate at the dearer of the two
prices) in the provider's UTC day and month; ``release`` replaces the reservation with the
cost of the usage the provider reported (input and output tokens at the policy's prices), or
refunds it when nothing was reported (a failed call is not billed). A call whose worker died
keeps its reservation: it was most likely billed. Calls stop once the day's or the month's
spend, reservations of calls in flight included, reaches its budget.

Time is Redis's ``TIME``: one clock for every host, so no worker's skew can widen a window.
Tests may inject a clock (``clock=``) to walk through minutes in microseconds.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cache
from typing import Any, NamedTuple

from unilingo import keys
from unilingo.adaptive import LEARNED_FIELDS, Effective, Learned, parse_learned
from unilingo.adaptive import effective as effective_limits
from unilingo.outcomes import CallOutcome
from unilingo.policy import (
    DEFAULT_POLICIES,
    LIMITER_FIELDS,
    NANO_USD,
    ProviderPolicy,
    default_policy,
)
from unilingo.scripts import LuaScript, lua
from unilingo.settings import Settings

# The settings' default (PROVIDER_WINDOW_MARGIN_SECONDS): one figure wherever a limiter is made.
WINDOW_MARGIN_SECONDS: float = Settings.model_fields["provider_window_margin_seconds"].default


class DenyReason(StrEnum):
    """Why ``acquire`` refused, in the order the checks run."""

    SUSPENDED = "suspended"
    BUDGET = "budget"  # a spend budget is spent; its jobs wait for the next UTC day or month
    BUDGET_EXHAUSTED = "budget_exhausted"  # the same, under a policy whose jobs then fail
    PAUSED = "paused"
    BREAKER_OPEN = "breaker_open"
    RATE = "rate"
    TOKENS = "tokens"
    IN_FLIGHT = "in_flight"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


WINDOW_SECONDS = 60.0  # "per minute" means any rolling 60 s, as providers count it
BUDGET_RECHECK_SECONDS = 60.0  # how often a job waiting for a spent budget looks again

# The limiter's keys, in the order every script receives them (``keys.limiter(provider, part)``
# except the policy document itself).
_PARTS = (
    "window",  # ZSET lease id -> grant time (ms): the sliding-window log of admitted calls
    "window_tokens",  # HASH lease id -> tokens charged, and __total__: their sum
    "in_flight",  # ZSET lease id -> lease expiry (ms): the semaphore
    "probes",  # ZSET lease id -> lease expiry (ms): the half-open probes among them
    "state",  # HASH the breaker (failures, opened_at, epoch, probe_successes, trips) and paused_until
    "spend",  # HASH day, day_nusd, month, month_nusd: the UTC day's and month's spend (nano-dollars)
    "learned",  # HASH what the provider's rate-limit headers said of the account (unilingo.adaptive)
)

# A lease id is "<random>:<breaker epoch>:<probe 0/1>:<reserved nano-dollars>:<UTC day reserved
# on>:<holder>". It carries what ``release``
# needs to judge the outcome, so no per-lease record has to be written, read and deleted.


# The scripts: unilingo/lua/limiter/, each after prelude.lua (the calling convention: KEYS are
# _provider_keys, ARGV starts with _LimiterCore._header).
def _limiter_script(name: str) -> LuaScript:
    return lua(
        f"limiter/{name}",
        include=("limiter/prelude",),
        constants={"POLICY_FIELDS": LIMITER_FIELDS, "LEARNED_FIELDS": LEARNED_FIELDS},
    )


_ACQUIRE = _limiter_script("acquire")
_RELEASE = _limiter_script("release")
_RENEW = _limiter_script("renew")
_STATUS = _limiter_script("status")


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to ``acquire``. Refused: defer the job ``retry_after`` seconds."""

    granted: bool
    lease_id: str | None = None
    retry_after: float = 0.0  # seconds until a permit is plausibly due; 0 when granted
    reason: DenyReason | None = None  # None when granted
    revision: int = 0  # the policy revision the decision was made under (0: defaults)

    @property
    def outcome(self) -> str:
        """``granted``, or why not (``DenyReason``): ``unilingo_permits_total{outcome}``."""
        return "granted" if self.reason is None else self.reason.value

    @property
    def recheck_after(self) -> float:
        """When to ask again: ``retry_after``, but at most a minute for a spent budget (whose
        period may end hours later), so that a budget an operator raises applies soon."""
        if self.reason == DenyReason.BUDGET:
            return min(self.retry_after, BUDGET_RECHECK_SECONDS)
        return self.retry_after


@dataclass(frozen=True, slots=True)
class Released:
    held: bool  # False: the lease had lapsed (its slot was already reclaimed) or was unknown
    breaker: BreakerState  # the breaker after this outcome
    # A failure of a healthy provider (breaker closed, its previous answer a success): the
    # job's own, which spends an attempt. Any other failure is the provider's outage.
    counts_against_job: bool = False
    retry_after: float = 0.0  # seconds until the provider is worth trying again


@dataclass(frozen=True)
class SpendPeriod:
    """One budget period's spend (the UTC day or calendar month), in US dollars."""

    spent_usd: float  # reported usage at the policy's prices, and the reservations of calls in flight
    budget_usd: float | None  # None: no limit
    left_usd: float | None
    ends_at: float  # epoch seconds: when the next period begins

    @property
    def fraction(self) -> float | None:
        if self.budget_usd is None:
            return None
        return 1.0 if self.budget_usd <= 0 else min(1.0, self.spent_usd / self.budget_usd)


@dataclass(frozen=True)
class Spend:
    day: SpendPeriod
    month: SpendPeriod
    when_spent: str  # wait | fail

    @property
    def exhausted(self) -> bool:
        return any(p.left_usd is not None and p.left_usd <= 0 for p in (self.day, self.month))

    def as_status(self) -> dict[str, Any]:
        """The spend as a policy resource's status reports it (camelCase; to the micro-dollar)."""

        def period(p: SpendPeriod) -> dict[str, Any]:
            shown: dict[str, Any] = {"spentUsd": round(p.spent_usd, 6), "resetsAt": _rfc3339(p.ends_at)}
            if p.budget_usd is not None:
                shown["budgetUsd"] = p.budget_usd
                shown["leftUsd"] = round(p.left_usd or 0.0, 6)
            return shown

        return {
            "day": period(self.day),
            "month": period(self.month),
            "whenSpent": self.when_spent,
            "exhausted": self.exhausted,
        }


def _rfc3339(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


@dataclass(frozen=True)
class ProviderStatus:
    """What is in force for a provider and how much of it is used (the status endpoints)."""

    provider: str
    revision: int
    policy: ProviderPolicy
    requests_used: int  # calls admitted in the current rolling window
    requests_left: int | None  # None: not metered
    tokens_used: int
    tokens_left: int | None  # None: not metered
    in_flight: int
    in_flight_left: int
    breaker: BreakerState
    breaker_failures: int  # consecutive failures while closed
    breaker_half_open_in: float | None  # seconds until an open breaker lets probes through
    breaker_probes_in_flight: int
    breaker_trips: int  # times it has opened
    paused_for: float  # seconds left of a provider's Retry-After; 0 when not paused
    suspended: bool
    spend: Spend | None = None
    learned: Learned | None = None  # what the provider's own rate-limit headers said last
    paused_until: float | None = None  # epoch seconds (Redis's clock) while paused
    breaker_half_open_at: float | None = None  # epoch seconds (Redis's clock) while open

    @property
    def effective(self) -> Effective:
        """The per-minute figures the permits are held to: ``min(policy, learned)`` when adaptive."""
        return effective_limits(self.policy, self.learned)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["policy"] = self.policy.model_dump(mode="json", by_alias=True)
        data["effective"] = self.effective._asdict()
        data["learned"] = self.learned.as_dict() if self.learned else None
        return data


# ---------------------------------------------------------------------------------------------
# The shared core: keys, arguments and reply parsing. The sync and async limiters below only
# differ in whether they await the script call.
# ---------------------------------------------------------------------------------------------


class _Call(NamedTuple):
    script: str
    keys: tuple[str, ...]
    args: list[Any]
    parse: Callable[[Any], Any]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seconds(ms: Any) -> float:
    return int(ms) / 1000.0


def _reported(tokens: int | None) -> int:
    return -1 if tokens is None else max(0, int(tokens))


def _period(spent_nusd: Any, budget_usd: float | None, ends_ms: Any) -> SpendPeriod:
    spent = int(spent_nusd) / NANO_USD
    left = None if budget_usd is None else max(0.0, budget_usd - spent)
    return SpendPeriod(spent_usd=spent, budget_usd=budget_usd, left_usd=left, ends_at=_seconds(ends_ms))


_DEFAULT_ARGS = {p: list(policy.limiter_fields().values()) for p, policy in DEFAULT_POLICIES.items()}


@cache
def _provider_keys(provider: str) -> tuple[str, ...]:
    return (keys.policy(provider), *(keys.limiter(provider, part) for part in _PARTS))


class _Scripts:
    """The limiter's scripts registered on one client (sync or asyncio alike)."""

    def __init__(self, client):
        self.acquire = _ACQUIRE.bind(client)
        self.release = _RELEASE.bind(client)
        self.renew = _RENEW.bind(client)
        self.status = _STATUS.bind(client)


def _parse_decision(raw: list[Any]) -> Decision:
    granted, lease_or_reason, wait_ms, revision = raw
    if granted:
        return Decision(True, _text(lease_or_reason), 0.0, None, int(revision))
    return Decision(False, None, _seconds(wait_ms), DenyReason(_text(lease_or_reason)), int(revision))


def _parse_released(raw: list[Any]) -> Released:
    return Released(bool(raw[0]), BreakerState(_text(raw[1])), bool(int(raw[2])), _seconds(raw[3]))


class _LimiterCore:
    def __init__(
        self,
        client,
        *,
        lease_seconds: float = 30.0,
        window_margin_seconds: float = WINDOW_MARGIN_SECONDS,
        recheck_seconds: float = 1.0,
        refund_unused_tokens: bool = False,
        clock: Callable[[], float] | None = None,
    ):
        """``client``: a ``redis.Redis`` for ``Limiter``, a ``redis.asyncio.Redis`` for ``AsyncLimiter``.

        ``lease_seconds``: how long a permit holds its in-flight slot unless renewed; the
        holder renews it (heartbeat) during long calls, a dead holder's slot returns after it.

        ``window_margin_seconds``: calls stay in the 60 s window this much longer. The
        provider counts a call when it arrives, a little after we grant it, and that delay
        varies; the margin absorbs the variation so the provider's own rolling minute never
        sees one call too many. 1 s costs 1.6 % of throughput.

        ``recheck_seconds``: ``retry_after`` for refusals with no known end (suspended, slots
        taken, half-open probes out).

        ``refund_unused_tokens``: by default reconciling only ever raises a call's charge.
        OpenAI-style limiters charge the estimate (prompt + output cap) on arrival and give
        nothing back, so a refund would overspend their minute. Set it for providers that
        meter actual usage.

        ``clock``: seconds, for tests; by default Redis's TIME is the only clock.
        """
        if lease_seconds <= 0 or window_margin_seconds < 0 or recheck_seconds <= 0:
            raise ValueError("lease_seconds and recheck_seconds must be positive, window_margin_seconds not negative")
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._window_ms = round((WINDOW_SECONDS + window_margin_seconds) * 1000)
        self._lease_ms = round(lease_seconds * 1000)
        self._recheck_ms = round(recheck_seconds * 1000)
        self._refund = "1" if refund_unused_tokens else "0"
        self._scripts = _Scripts(client)

    def _keys(self, provider: str) -> tuple[str, ...]:
        return _provider_keys(provider)

    def _header(self, provider: str, lease_ms: int | None = None) -> list[Any]:
        if provider not in _DEFAULT_ARGS:
            default_policy(provider)  # raises ValueError naming the known providers
        now = -1 if self._clock is None else round(self._clock() * 1000)
        return [now, self._window_ms, lease_ms or self._lease_ms, self._recheck_ms, *_DEFAULT_ARGS[provider]]

    def _acquire(self, provider: str, tokens: int, holder: str) -> _Call:
        if tokens < 0:
            raise ValueError("tokens must not be negative")
        # 96 random bits tell leases apart; random (not uuid) because it is cheaper and,
        # reseeded in every forked child, as safe for worker pools.
        args = [*self._header(provider), f"{random.getrandbits(96):024x}", int(tokens), holder]
        return _Call("acquire", self._keys(provider), args, _parse_decision)

    def _release(
        self,
        provider: str,
        lease_id: str,
        outcome: CallOutcome | str,
        actual_tokens: int | None,
        retry_after: float | None,
        sent_after: float,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> _Call:
        try:
            outcome = CallOutcome(outcome)
        except ValueError:
            raise ValueError(f"outcome must be one of {[o.value for o in CallOutcome]}, not {outcome!r}") from None
        args = [
            *self._header(provider),
            lease_id,
            outcome.value,
            -1 if actual_tokens is None else max(0, int(actual_tokens)),
            -1 if retry_after is None else max(0, math.ceil(retry_after * 1000)),
            self._refund,
            max(0, round(sent_after * 1000)),
            _reported(input_tokens),
            _reported(output_tokens),
        ]
        return _Call("release", self._keys(provider), args, _parse_released)

    def _renew(self, provider: str, lease_id: str, lease_seconds: float | None) -> _Call:
        lease_ms = round(lease_seconds * 1000) if lease_seconds else None
        return _Call("renew", self._keys(provider), [*self._header(provider, lease_ms), lease_id], bool)

    def _status(self, provider: str) -> _Call:
        def parse(raw: list[Any]) -> ProviderStatus:
            revision, doc, now, requests, tokens, in_flight, probes, state, failures, opened_at, trips, paused = raw[
                :12
            ]
            day_nusd, day_ends, month_nusd, month_ends = raw[12:16]
            policy = ProviderPolicy.model_validate_json(doc) if doc else default_policy(provider)
            learned = parse_learned(raw[16:])
            rpm, tpm = effective_limits(policy, learned)
            opened_at, paused = int(opened_at), int(paused)
            half_open_at = opened_at + round(policy.breaker.open_seconds * 1000)
            return ProviderStatus(
                provider=provider,
                revision=int(revision),
                policy=policy,
                requests_used=int(requests),
                requests_left=max(0, rpm - int(requests)) if rpm else None,
                tokens_used=int(tokens),
                tokens_left=max(0, tpm - int(tokens)) if tpm else None,
                in_flight=int(in_flight),
                in_flight_left=max(0, policy.max_in_flight - int(in_flight)),
                breaker=BreakerState(_text(state)),
                breaker_failures=int(failures),
                breaker_half_open_in=_seconds(max(0, half_open_at - int(now))) if opened_at >= 0 else None,
                breaker_probes_in_flight=int(probes),
                breaker_trips=int(trips),
                paused_for=_seconds(max(0, paused - int(now))),
                learned=learned,
                paused_until=_seconds(paused) if paused > int(now) else None,
                breaker_half_open_at=_seconds(half_open_at) if opened_at >= 0 else None,
                suspended=policy.suspended,
                spend=Spend(
                    day=_period(day_nusd, policy.budget.usd_per_day, day_ends),
                    month=_period(month_nusd, policy.budget.usd_per_month, month_ends),
                    when_spent=policy.budget.when_spent,
                ),
            )

        return _Call("status", self._keys(provider), self._header(provider), parse)


class Limiter(_LimiterCore):
    """Provider permits on a synchronous redis client (the workers).

    ``acquire`` before a provider call; ``renew`` while it runs longer than a lease;
    ``release`` with its outcome when it ends, whatever happened.
    """

    def _run(self, call: _Call) -> Any:
        return call.parse(getattr(self._scripts, call.script)(keys=call.keys, args=call.args))

    def acquire(self, provider: str, tokens: int = 0, holder: str = "") -> Decision:
        """A permit for one call estimated at ``tokens``; ``holder`` names who holds it."""
        return self._run(self._acquire(provider, tokens, holder))

    def release(
        self,
        provider: str,
        lease_id: str,
        outcome: CallOutcome | str,
        actual_tokens: int | None = None,
        retry_after: float | None = None,
        sent_after: float = 0.0,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Released:
        """Give the permit back with the call's outcome (``unilingo.outcomes.CallOutcome``):
        ``error`` feeds the breaker; ``throttled`` (the provider said 429) feeds it too and
        pauses the provider for everyone ``retry_after`` seconds; the others say nothing of
        the provider's health and count as a healthy answer.

        ``sent_after``: seconds from the grant until the call actually left; the call's place
        in the rolling window moves that much later, as the provider counts it.

        ``input_tokens``/``output_tokens``: the usage the provider reported, priced into the
        provider's spend (not reported: the call's reservation is refunded)."""
        return self._run(
            self._release(
                provider, lease_id, outcome, actual_tokens, retry_after, sent_after, input_tokens, output_tokens
            )
        )

    def renew(self, provider: str, lease_id: str, lease_seconds: float | None = None) -> bool:
        """Extend a lease; False when it had already lapsed (its slot may be someone else's)."""
        return self._run(self._renew(provider, lease_id, lease_seconds))

    def status(self, provider: str) -> ProviderStatus:
        return self._run(self._status(provider))


class AsyncLimiter(_LimiterCore):
    """The same limiter on an asyncio redis client (the API's status endpoints, async workers)."""

    async def _run(self, call: _Call) -> Any:
        return call.parse(await getattr(self._scripts, call.script)(keys=call.keys, args=call.args))

    async def acquire(self, provider: str, tokens: int = 0, holder: str = "") -> Decision:
        return await self._run(self._acquire(provider, tokens, holder))

    async def release(
        self,
        provider: str,
        lease_id: str,
        outcome: CallOutcome | str,
        actual_tokens: int | None = None,
        retry_after: float | None = None,
        sent_after: float = 0.0,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Released:
        return await self._run(
            self._release(
                provider, lease_id, outcome, actual_tokens, retry_after, sent_after, input_tokens, output_tokens
            )
        )

    async def renew(self, provider: str, lease_id: str, lease_seconds: float | None = None) -> bool:
        return await self._run(self._renew(provider, lease_id, lease_seconds))

    async def status(self, provider: str) -> ProviderStatus:
        return await self._run(self._status(provider))
