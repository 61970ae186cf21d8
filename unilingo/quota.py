"""Client quotas for the API tier: N requests per window, per IP or per user, in Redis.

Every API replica counts in the same Redis, in one Lua script per request, so a client
gets exactly its quota however many replicas it spreads its requests over. The count is a
sliding-window log (a sorted set of hit times): exact in every rolling window, not an
approximation across two fixed windows, and a refused request consumes nothing, so a client
that waits ``Retry-After`` seconds is let through. The log costs one entry per admitted hit,
at most ``limit`` per subject: 100 for an IP, 200 for a user. A request that several quotas
govern (an AI call: the address's and the user's) goes through ``hit_all``: one round trip,
recorded in all of them or in none.

Time is Redis's ``TIME``, the one clock every replica shares. (A client-side clock, as the
``limits`` library uses, lets a replica whose clock runs ahead expire hits early.)

``client_ip`` decides which IP a request is counted against: the peer address, unless the
peer is a trusted proxy, and then the first address in ``X-Forwarded-For`` (from the right)
that a trusted proxy did not add, so a client cannot pick its own address.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, NamedTuple

from unilingo import keys
from unilingo.scripts import lua

# ---------------------------------------------------------------------------------------------
# Rates
# ---------------------------------------------------------------------------------------------

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*([a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    window_seconds: int

    def __str__(self) -> str:
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
            if self.window_seconds % seconds == 0:
                return f"{self.limit}/{self.window_seconds // seconds}{unit}"
        return f"{self.limit}/{self.window_seconds}s"


@lru_cache(maxsize=256)
def parse_rate(text: str) -> Rate:
    """``"100/15m"``, ``"200/1h"``, ``"10/s"``, ``"5 per 2 minutes"`` into a ``Rate``."""
    match = _RATE.match(text)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"not a rate: {text!r} (expected e.g. '100/15m', '200/1h', '10/s')")
    limit, count = int(match.group(1)), int(match.group(2) or 1)
    if limit < 1 or count < 1:
        raise ValueError(f"not a rate: {text!r} (limit and window must be positive)")
    return Rate(limit, count * unit)


# ---------------------------------------------------------------------------------------------
# Hits
# ---------------------------------------------------------------------------------------------

# unilingo/lua/quota/hit.lua: one request against every quota it counts against, all or none.
_HIT = lua("quota/hit")


@dataclass(frozen=True, slots=True)
class QuotaResult:
    allowed: bool  # the quota had room (with hit_all: the request was recorded if all had)
    limit: int
    remaining: int  # hits left in the window after this one
    reset_seconds: float  # until the oldest counted hit leaves the window (one more is free)
    retry_after: float  # until a refused client may try again; 0 when allowed
    window_seconds: int


def rate_limit_headers(result: QuotaResult) -> dict[str, str]:
    """The IETF ``RateLimit-*`` fields (draft-ietf-httpapi-ratelimit-headers), plus
    ``Retry-After`` on a refusal. Seconds are rounded up: waiting the figure is enough."""
    headers = {
        "RateLimit-Limit": str(result.limit),
        "RateLimit-Remaining": str(result.remaining),
        "RateLimit-Reset": str(math.ceil(result.reset_seconds)),
        "RateLimit-Policy": f"{result.limit};w={result.window_seconds}",
    }
    if not result.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(result.retry_after)))
    return headers


class _Call(NamedTuple):
    keys: list[str]
    args: list[Any]
    parse: Callable[[Any], Any]


Hit = tuple[str, str, Rate | str]  # (scope, subject, limit)


def _rate(limit: Rate | str) -> Rate:
    return limit if isinstance(limit, Rate) else parse_rate(limit)


def _result(rate: Rate, reply: list[Any]) -> QuotaResult:
    room, used, reset_ms, retry_ms = reply
    return QuotaResult(
        allowed=bool(room),
        limit=rate.limit,
        remaining=max(0, rate.limit - int(used)),
        reset_seconds=int(reset_ms) / 1000,
        retry_after=int(retry_ms) / 1000,
        window_seconds=rate.window_seconds,
    )


def _results(rates: list[Rate], replies: list[Any]) -> list[QuotaResult]:
    return [_result(rate, reply) for rate, reply in zip(rates, replies, strict=True)]


def _single_result(rate: Rate, replies: list[Any]) -> QuotaResult:
    return _result(rate, replies[0])


class _QuotaCore:
    def __init__(self, client, clock: Callable[[], float] | None = None):
        self._script = _HIT.bind(client)  # sync and asyncio clients alike
        self._clock = clock  # seconds, for tests; Redis TIME otherwise

    def _now(self) -> int:
        return -1 if self._clock is None else round(self._clock() * 1000)

    def _hits(self, hits: Sequence[Hit]) -> _Call:
        if not hits:
            raise ValueError("no quota to count against")
        rates, keys_, args = [], [], [self._now()]
        for scope, subject, limit in hits:
            rate = _rate(limit)
            rates.append(rate)
            keys_.append(keys.quota(scope, subject))
            args += (rate.limit, rate.window_seconds * 1000)
        return _Call(keys_, args, partial(_results, rates))

    def _hit(self, scope: str, subject: str, limit: Rate | str) -> _Call:
        # the one-quota case, spelt out: it is on the path of every API request
        rate = _rate(limit)
        return _Call(
            [keys.quota(scope, subject)],
            [self._now(), rate.limit, rate.window_seconds * 1000],
            partial(_single_result, rate),
        )


class AsyncClientQuota(_QuotaCore):
    """Client quotas on an asyncio redis client (the API tier)."""

    async def hit(self, scope: str, subject: str, limit: Rate | str) -> QuotaResult:
        """Count one request of ``subject`` (an IP, a user id) against ``scope``'s ``limit``."""
        call = self._hit(scope, subject, limit)
        return call.parse(await self._script(keys=call.keys, args=call.args))

    async def hit_all(self, hits: Sequence[Hit]) -> list[QuotaResult]:
        """Count one request against several quotas at once, in one round trip: it is recorded
        in all of them if every one has room (``all(r.allowed for r in results)``), else in
        none, so a request refused by the user's quota does not spend the address's."""
        call = self._hits(hits)
        return call.parse(await self._script(keys=call.keys, args=call.args))


class ClientQuota(_QuotaCore):
    """The same on a synchronous client (scripts, benchmarks)."""

    def hit(self, scope: str, subject: str, limit: Rate | str) -> QuotaResult:
        call = self._hit(scope, subject, limit)
        return call.parse(self._script(keys=call.keys, args=call.args))

    def hit_all(self, hits: Sequence[Hit]) -> list[QuotaResult]:
        call = self._hits(hits)
        return call.parse(self._script(keys=call.keys, args=call.args))


# ---------------------------------------------------------------------------------------------
# The client's address
# ---------------------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip())


def _address(text: str) -> Address | None:
    """An address as proxies write it: bare, ``[v6]``, ``v4:port`` or ``[v6]:port``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # ::ffff:203.0.113.9 is 203.0.113.9
    return address


def client_ip(
    remote_addr: str | None,
    x_forwarded_for: str | Sequence[str] | None,
    trusted_proxies: Iterable[str],
) -> str:
    """The address to count a request against.

    ``X-Forwarded-For`` is believed only as far as trusted proxies wrote it: each proxy
    appends the address it received the request from, so walking from the right, every hop
    that is a trusted proxy vouches for the one left of it, and the first untrusted hop is the
    client. Anything further left was written by the client and is ignored. A peer that is
    not a trusted proxy is the client, whatever it says.
    """
    networks = _networks(tuple(trusted_proxies))
    peer = _address(remote_addr or "")
    if peer is None:
        return remote_addr or "unknown"

    def trusted(address: Address) -> bool:
        return any(address in network for network in networks)

    if not networks or not trusted(peer):
        return str(peer)
    values = [x_forwarded_for] if isinstance(x_forwarded_for, str) else list(x_forwarded_for or ())
    hops = [hop for value in values for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage where a trusted proxy should have written an address: stop here
        client = address
        if not trusted(address):
            break
    return str(client)
