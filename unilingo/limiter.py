"""Provider permits: one global budget per provider, shared by every worker process.

A worker asks for a permit before each provider call and gives it back after. Every decision
is ONE Redis round trip: a Lua script that reads the provider's live policy from Redis
itself (``unilingo.policy``), so the revision written a moment ago is the one enforced; no
process caches a policy, so none can enforce a stale one.

``acquire`` checks, in this order, and stops at the first that refuses:

1. ``suspended``    the policy says so;
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

Time is Redis's ``TIME``: one clock for every host, so no worker's skew can widen a window.
Tests may inject a clock (``clock=``) to walk through minutes in microseconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cache
from typing import Any, NamedTuple

from unilingo import keys
from unilingo.outcomes import CallOutcome
from unilingo.policy import (
    DEFAULT_POLICIES,
    LIMITER_FIELDS,
    ProviderPolicy,
    default_policy,
)
from unilingo.settings import Settings

# The settings' default (PROVIDER_WINDOW_MARGIN_SECONDS): one figure wherever a limiter is made.
WINDOW_MARGIN_SECONDS: float = Settings.model_fields["provider_window_margin_seconds"].default


class DenyReason(StrEnum):
    """Why ``acquire`` refused, in the order the checks run."""

    SUSPENDED = "suspended"
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

# The limiter's keys, in the order every script receives them (``keys.limiter(provider, part)``
# except the policy document itself).
_PARTS = (
    "window",  # ZSET lease id -> grant time (ms): the sliding-window log of admitted calls
    "window_tokens",  # HASH lease id -> tokens charged, and __total__: their sum
    "in_flight",  # ZSET lease id -> lease expiry (ms): the semaphore
    "probes",  # ZSET lease id -> lease expiry (ms): the half-open probes among them
    "state",  # HASH the breaker (failures, opened_at, epoch, probe_successes, trips) and paused_until
)

# A lease id is "<random>:<breaker epoch>:<probe 0/1>:<holder>". It carries what ``release``
# needs to judge the outcome, so no per-lease record has to be written, read and deleted.

# ---------------------------------------------------------------------------------------------
# Lua. Every script starts with _PRELUDE, which fixes the calling convention:
#   KEYS  1 policy, 2 window, 3 window_tokens, 4 in_flight, 5 probes, 6 state
#   ARGV  1 now in ms (-1: use Redis TIME), 2 window ms, 3 lease ms, 4 recheck ms,
#         5.. the provider's default policy fields (LIMITER_FIELDS order), then from OP on
#         the script's own arguments.
# Times are integer milliseconds: they survive Lua's number-to-reply conversion exactly.
# Every command a script runs costs server time on every decision, so each is there for a
# reason and none is repeated.
# ---------------------------------------------------------------------------------------------

_PRELUDE = """
local POLICY_FIELDS = {%(fields)s}
local DEFAULTS_AT = 5
local OP = DEFAULTS_AT + #POLICY_FIELDS
local TOTAL = '__total__'

local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local WINDOW = tonumber(ARGV[2])
local LEASE = tonumber(ARGV[3])
local RECHECK = tonumber(ARGV[4])

-- The live policy: the stored revision's flat fields, or the defaults when none was
-- ever written (or when an older document lacks a newer field). Read once, when first needed.
local loaded_policy
local function live_policy()
  if not loaded_policy then
    local stored = redis.call('HMGET', KEYS[1], 'revision', unpack(POLICY_FIELDS))
    loaded_policy = {revision = tonumber(stored[1]) or 0}
    for i, name in ipairs(POLICY_FIELDS) do
      loaded_policy[name] = tonumber(stored[i + 1] or ARGV[DEFAULTS_AT + i - 1])
    end
  end
  return loaded_policy
end

-- The shared state: the breaker and the pause. The breaker's state follows from when it
-- opened and the open time in force now, so a new revision's openSeconds also applies to a
-- breaker that is already open.
local function load_state()
  local s = redis.call('HMGET', KEYS[6], 'failures', 'opened_at', 'epoch', 'probe_successes', 'trips', 'paused_until')
  local state = {
    failures = tonumber(s[1]) or 0, opened_at = tonumber(s[2]), epoch = tonumber(s[3]) or 0,
    probe_successes = tonumber(s[4]) or 0, trips = tonumber(s[5]) or 0, paused_until = tonumber(s[6]) or 0,
  }
  if not state.opened_at then
    state.breaker = 'closed'
  elseif now < state.opened_at + live_policy().open_ms then
    state.breaker = 'open'
  else
    state.breaker = 'half_open'
  end
  return state
end

-- Each transition starts a new epoch: outcomes of calls admitted under an earlier one are
-- stale and no longer move the breaker.
local function open_breaker(state)
  redis.call('HSET', KEYS[6], 'failures', 0, 'opened_at', now, 'epoch', state.epoch + 1, 'probe_successes', 0,
             'trips', state.trips + 1)
  redis.call('DEL', KEYS[5])
end

local function close_breaker(state)
  redis.call('HSET', KEYS[6], 'failures', 0, 'epoch', state.epoch + 1, 'probe_successes', 0)
  redis.call('HDEL', KEYS[6], 'opened_at')
  redis.call('DEL', KEYS[5])
end

-- unpack() is bounded by Lua's C stack; long lists go in slices.
local function each_slice(list, fn)
  for i = 1, #list, 1000 do fn(unpack(list, i, math.min(i + 999, #list))) end
end

-- The tokens charged to these calls.
local function tokens_of(calls)
  local sum = 0
  each_slice(calls, function(...)
    for _, spent in ipairs(redis.call('HMGET', KEYS[3], ...)) do sum = sum + (tonumber(spent) or 0) end
  end)
  return sum
end
""" % {"fields": ", ".join(f"'{name}'" for name in LIMITER_FIELDS)}

# ARGV from OP: random part of the lease id, tokens, holder.
# Reply: {granted 0/1, lease id or reason, retry after ms, policy revision}.
_ACQUIRE = (
    _PRELUDE
    + """
local tokens, holder = tonumber(ARGV[OP + 1]), ARGV[OP + 2]
local policy = live_policy()

local function deny(reason, wait_ms)
  return {0, reason, math.max(1, math.ceil(wait_ms)), policy.revision}
end

-- When the n-th oldest (0-based) call granted after `since` was granted.
local function nth_since(since, n)
  return tonumber(redis.call('ZRANGE', KEYS[2], '(' .. since, '+inf', 'BYSCORE', 'LIMIT', n, 1, 'WITHSCORES')[2])
end

if policy.suspended == 1 then
  return deny('suspended', RECHECK)  -- no end is known: look again soon
end

local state = load_state()
if state.paused_until > now then
  return deny('paused', state.paused_until - now)
end

local probe = 0
if state.breaker == 'open' then
  return deny('breaker_open', state.opened_at + policy.open_ms - now)
elseif state.breaker == 'half_open' then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)  -- probes of dead workers
  if redis.call('ZCARD', KEYS[5]) >= policy.half_open_probes then
    return deny('breaker_open', RECHECK)  -- the probes are out; their outcome decides
  end
  probe = 1
end

-- A call granted at g counts until g + WINDOW. Counting reads only, so that a refusal, the
-- common answer at saturation, writes nothing.
local horizon = now - WINDOW
local count = redis.call('ZCOUNT', KEYS[2], '(' .. horizon, '+inf')
if policy.rpm > 0 then
  -- After this call at most rpm calls may lie in (now - WINDOW, now]; if not, wait until
  -- the oldest call that is one too many leaves.
  if count >= policy.rpm then
    return deny('rate', nth_since(horizon, count - policy.rpm) + WINDOW - now)
  end
  -- Burst: at most `burst` calls in any burst/rpm of a minute: the same log over a shorter
  -- span. The sustained rate stays rpm; how much of it may come at once is bounded.
  if policy.burst < policy.rpm then
    local span = math.ceil(policy.burst * 60000 / policy.rpm)
    local recent = redis.call('ZCOUNT', KEYS[2], '(' .. (now - span), '+inf')
    if recent >= policy.burst then
      return deny('rate', nth_since(now - span, recent - policy.burst) + span - now)
    end
  end
end

-- Calls that have left the window go, and their tokens with them.
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon)
if #gone > 0 then
  local freed = tokens_of(gone)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
  if count == 0 then
    redis.call('DEL', KEYS[3])  -- an empty window starts again from an exact zero
  elseif freed > 0 then
    each_slice(gone, function(...) redis.call('HDEL', KEYS[3], ...) end)
    redis.call('HINCRBY', KEYS[3], TOTAL, -freed)
  end
end

if policy.tpm > 0 then
  local used = count > 0 and tonumber(redis.call('HGET', KEYS[3], TOTAL)) or 0
  -- A call bigger than the whole budget can only ever go into an empty window.
  local excess = used + math.min(tokens, policy.tpm) - policy.tpm
  if excess > 0 then
    local calls = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #calls, 2 do
      excess = excess - (tonumber(redis.call('HGET', KEYS[3], calls[i])) or 0)
      if excess <= 0 then
        return deny('tokens', tonumber(calls[i + 1]) + WINDOW - now)
      end
    end
    return deny('tokens', WINDOW)
  end
end

-- Leases that lapsed belong to workers that died or hung: their slots come back.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
-- A provider that has begun failing gets no more calls at once than could still open the
-- breaker: an outage costs it the threshold's calls, not the threshold plus all in flight.
local slots = policy.max_in_flight
if state.breaker == 'closed' and state.failures > 0 then
  slots = math.min(slots, math.max(1, policy.failure_threshold - state.failures))
end
if redis.call('ZCARD', KEYS[4]) >= slots then
  -- A slot frees when a holder releases (unknown) or at the latest when a lease lapses.
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  return deny('in_flight', math.min(RECHECK, tonumber(first[2]) - now))
end

local lease = ARGV[OP] .. ':' .. state.epoch .. ':' .. probe .. ':' .. holder
redis.call('ZADD', KEYS[2], now, lease)
redis.call('PEXPIRE', KEYS[2], WINDOW)  -- nothing in it outlives the newest call's window
if tokens > 0 then
  redis.call('HSET', KEYS[3], lease, tokens)
  redis.call('HINCRBY', KEYS[3], TOTAL, tokens)
  redis.call('PEXPIRE', KEYS[3], WINDOW)
end
-- The lease sets need no expiry: releases and purges empty them, and Redis drops an empty set.
redis.call('ZADD', KEYS[4], now + LEASE, lease)
if probe == 1 then
  redis.call('ZADD', KEYS[5], now + LEASE, lease)
end
return {1, lease, 0, policy.revision}
"""
)

# ARGV from OP: lease id, outcome (success, failure or throttled: ``_SCRIPT_OUTCOME``), actual
# tokens (-1: not reported), Retry-After ms (-1: none), refund unused tokens 0/1, ms between
# grant and the call leaving the worker.
# Reply: {lease was live 0/1, breaker state after, the failure counts against the job 0/1,
#        ms until the provider is worth trying again}.
_RELEASE = (
    _PRELUDE
    + """
local lease, outcome = ARGV[OP], ARGV[OP + 1]
local actual, retry_ms, refund = tonumber(ARGV[OP + 2]), tonumber(ARGV[OP + 3]), ARGV[OP + 4] == '1'
local sent_after = tonumber(ARGV[OP + 5])
local epoch, probe = string.match(lease, '^[^:]*:(%d+):(%d):')

-- The provider's minute began when the call reached it, not when it was granted: a worker
-- that stalled in between (a cold client, a descheduled process) must not let the window
-- free the call's place early. Never later than now.
if sent_after > 0 then
  local granted = tonumber(redis.call('ZSCORE', KEYS[2], lease))
  if granted then
    redis.call('ZADD', KEYS[2], 'XX', math.min(granted + sent_after, now), lease)
    redis.call('PEXPIRE', KEYS[2], WINDOW)
    if redis.call('HEXISTS', KEYS[3], lease) == 1 then
      redis.call('PEXPIRE', KEYS[3], WINDOW)
    end
  end
end

local expiry = tonumber(redis.call('ZSCORE', KEYS[4], lease))
if expiry then
  redis.call('ZREM', KEYS[4], lease)
end
if probe == '1' then
  redis.call('ZREM', KEYS[5], lease)
end

-- Reconcile the estimate with what the provider reported, while the call is in the window
-- (a call charged tokens is in the window while its charge is; one charged none, if its
-- entry still is).
if actual >= 0 then
  local charged = tonumber(redis.call('HGET', KEYS[3], lease))
  if charged or (actual > 0 and redis.call('ZSCORE', KEYS[2], lease)) then
    charged = charged or 0
    local charge = refund and actual or math.max(charged, actual)
    if charge ~= charged then
      redis.call('HSET', KEYS[3], lease, charge)
      redis.call('HINCRBY', KEYS[3], TOTAL, charge - charged)
      redis.call('PEXPIRE', KEYS[3], WINDOW)
    end
  end
end

local state = load_state()

-- A provider's Retry-After holds for everyone; without one, the policy's first backoff.
if outcome == 'throttled' then
  local paused_until = now + (retry_ms >= 0 and retry_ms or live_policy().pause_ms)
  if paused_until > state.paused_until then
    redis.call('HSET', KEYS[6], 'paused_until', paused_until)
  end
end

-- The breaker moves only on outcomes of calls admitted in its current epoch. A refusal by
-- the provider (throttled) counts as a failure: Retry-After answers one 429, the breaker
-- answers a provider that keeps refusing.
local breaker = state.breaker
-- A failure is the job's own only when the provider was healthy: breaker closed, the call
-- admitted under it, and the provider's previous answer a success. Otherwise the provider is
-- failing for everyone, and the job waits for it without spending an attempt.
local counts = (outcome == 'failure' and breaker == 'closed' and tonumber(epoch) == state.epoch
                and probe == '0' and state.failures == 0) and 1 or 0
if tonumber(epoch) == state.epoch then
  if outcome == 'success' then
    if probe == '1' then
      if state.probe_successes + 1 >= live_policy().half_open_probes then
        close_breaker(state)
        breaker = 'closed'
      else
        redis.call('HINCRBY', KEYS[6], 'probe_successes', 1)
      end
    elseif state.failures > 0 then
      redis.call('HSET', KEYS[6], 'failures', 0)
    end
  elseif probe == '1' or redis.call('HINCRBY', KEYS[6], 'failures', 1) >= live_policy().failure_threshold then
    open_breaker(state)
    breaker = 'open'
    state.opened_at = now
  end
end
local wait_ms = live_policy().pause_ms
if breaker == 'open' then
  wait_ms = math.max(1, state.opened_at + live_policy().open_ms - now)
end
return {(expiry and expiry > now) and 1 or 0, breaker, counts, wait_ms}
"""
)

# ARGV from OP: lease id. Reply: 1 if the lease was live and now runs LEASE ms from now.
_RENEW = (
    _PRELUDE
    + """
local lease = ARGV[OP]
local expiry = tonumber(redis.call('ZSCORE', KEYS[4], lease))
if not expiry or expiry <= now then
  return 0  -- lapsed: its slot is already free for others
end
local renewed = math.max(expiry, now + LEASE)
redis.call('ZADD', KEYS[4], 'XX', renewed, lease)
redis.call('ZADD', KEYS[5], 'XX', renewed, lease)  -- a probe stays a probe
return 1
"""
)

# Read-only. Reply: {revision, document or nil, now, requests in window, tokens in window,
# in flight, probes in flight, breaker state, failures, opened_at or -1, trips, paused until}.
_STATUS = (
    _PRELUDE
    + """
local policy = live_policy()
local state = load_state()
local horizon = now - WINDOW
local tokens = (tonumber(redis.call('HGET', KEYS[3], TOTAL)) or 0)
               - tokens_of(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon))
return {
  policy.revision, redis.call('HGET', KEYS[1], 'doc'), now,
  redis.call('ZCOUNT', KEYS[2], '(' .. horizon, '+inf'), tokens,
  redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf'), redis.call('ZCOUNT', KEYS[5], '(' .. now, '+inf'),
  state.breaker, state.failures, state.opened_at or -1, state.trips, state.paused_until,
}
"""
)


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


@dataclass(frozen=True, slots=True)
class Released:
    held: bool  # False: the lease had lapsed (its slot was already reclaimed) or was unknown
    breaker: BreakerState  # the breaker after this outcome
    # A failure of a healthy provider (breaker closed, its previous answer a success): the
    # job's own, which spends an attempt. Any other failure is the provider's outage.
    counts_against_job: bool = False
    retry_after: float = 0.0  # seconds until the provider is worth trying again


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

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["policy"] = self.policy.model_dump(mode="json", by_alias=True)
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


_DEFAULT_ARGS = {p: list(policy.limiter_fields().values()) for p, policy in DEFAULT_POLICIES.items()}


@cache
def _provider_keys(provider: str) -> tuple[str, ...]:
    return (keys.policy(provider), *(keys.limiter(provider, part) for part in _PARTS))


class _Scripts:
    """The limiter's scripts registered on one client (sync or asyncio alike)."""

    def __init__(self, client):
        self.acquire = client.register_script(_ACQUIRE)
        self.release = client.register_script(_RELEASE)
        self.renew = client.register_script(_RENEW)
        self.status = client.register_script(_STATUS)


# What the release script hears of a call: only what it says of the provider's health.
_SCRIPT_OUTCOME = {CallOutcome.ERROR: "failure", CallOutcome.THROTTLED: "throttled"}


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
    ) -> _Call:
        try:
            outcome = CallOutcome(outcome)
        except ValueError:
            raise ValueError(f"outcome must be one of {[o.value for o in CallOutcome]}, not {outcome!r}") from None
        args = [
            *self._header(provider),
            lease_id,
            _SCRIPT_OUTCOME.get(outcome, "success"),
            -1 if actual_tokens is None else max(0, int(actual_tokens)),
            -1 if retry_after is None else max(0, math.ceil(retry_after * 1000)),
            self._refund,
            max(0, round(sent_after * 1000)),
        ]
        return _Call("release", self._keys(provider), args, _parse_released)

    def _renew(self, provider: str, lease_id: str, lease_seconds: float | None) -> _Call:
        lease_ms = round(lease_seconds * 1000) if lease_seconds else None
        return _Call("renew", self._keys(provider), [*self._header(provider, lease_ms), lease_id], bool)

    def _status(self, provider: str) -> _Call:
        def parse(raw: list[Any]) -> ProviderStatus:
            revision, doc, now, requests, tokens, in_flight, probes, state, failures, opened_at, trips, paused = raw
            policy = ProviderPolicy.model_validate_json(doc) if doc else default_policy(provider)
            rpm, tpm = policy.requests_per_minute, policy.tokens_per_minute
            opened_at = int(opened_at)
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
                paused_for=_seconds(max(0, int(paused) - int(now))),
                suspended=policy.suspended,
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
    ) -> Released:
        """Give the permit back with the call's outcome (``unilingo.outcomes.CallOutcome``):
        ``error`` feeds the breaker; ``throttled`` (the provider said 429) feeds it too and
        pauses the provider for everyone ``retry_after`` seconds; the others say nothing of
        the provider's health and count as a healthy answer.

        ``sent_after``: seconds from the grant until the call actually left; the call's place
        in the rolling window moves that much later, as the provider counts it."""
        return self._run(self._release(provider, lease_id, outcome, actual_tokens, retry_after, sent_after))

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
    ) -> Released:
        return await self._run(self._release(provider, lease_id, outcome, actual_tokens, retry_after, sent_after))

    async def renew(self, provider: str, lease_id: str, lease_seconds: float | None = None) -> bool:
        return await self._run(self._renew(provider, lease_id, lease_seconds))

    async def status(self, provider: str) -> ProviderStatus:
        return await self._run(self._status(provider))
