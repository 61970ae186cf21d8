"""Client quotas for the API, on ``unilingo.quota`` (Redis, shared by every replica).

Quotas (``QUOTA_IP``, ``QUOTA_USER_AI``, ``QUOTA_USER_PRONUNCIATION``; rates like
``100/15m``; ``off`` or ``0`` disables one):

* ``ip`` — per client address (``client_ip``: ``X-Forwarded-For`` is believed only from
  ``TRUSTED_PROXIES``), on every submission and on every request whose token is missing or
  fails verification, whatever the route: a flood of bad tokens is limited like any other;
* ``ai`` — per user, on the two ``/api/ai/`` endpoints;
* ``pronunciation`` — per user, on ``/api/pronunciation-assess``;
* ``read`` — per user (``QUOTA_USER_READ``, generous), on reading jobs, their events, the
  job list, cancelling, and the status routes. Reads do not spend the address's quota: a
  phone polling its job, or many phones behind one carrier NAT, never lock themselves out.

A submission that replays a stored ``Idempotency-Key`` spends nothing (``api.deps.Guard``).

A route's quotas are taken together in one Redis round trip (``hit_all``: one script, the
request is counted in all of them or, when one refuses, in none). A refusal is
``429 rate_limited`` with ``Retry-After`` and ``RateLimit-*`` of the quota that refused; a
success carries the ``RateLimit-*`` of the quota with the fewest requests left.
"""

from __future__ import annotations

from functools import lru_cache

from starlette.requests import Request

from api.errors import ApiError
from unilingo import metrics
from unilingo import quota as q

# quota name -> (settings field, Redis scope, counted per)
QUOTAS = {
    "ip": ("quota_ip", "ip", "ip"),
    "ai": ("quota_user_ai", "user_ai", "user"),
    "pronunciation": ("quota_user_pronunciation", "user_pronunciation", "user"),
    "read": ("quota_user_read", "user_read", "user"),
}
DISABLED = {"", "0", "off", "none", "unlimited"}


@lru_cache(maxsize=4096)
def _client_ip(peer: str | None, forwarded: tuple[str, ...], trusted: tuple[str, ...]) -> str:
    """``quota.client_ip``, remembered: parsing addresses costs more than the rest of the quota
    step on the client side, and a client sends the same ones request after request."""
    return q.client_ip(peer, forwarded, trusted)


class QuotaGate:
    def __init__(self, client, settings):
        self.client = client
        self.quota = q.AsyncClientQuota(client)
        self.trusted = tuple(settings.trusted_proxies)
        self.rates: dict[str, q.Rate | None] = {}
        for name, (field, _, _) in QUOTAS.items():
            text = str(getattr(settings, field) or "").strip()
            self.rates[name] = None if text.lower() in DISABLED else q.parse_rate(text)
        # per tuple of quota names: the enabled ones as (name, Redis scope, counted per, rate)
        self._plans: dict[tuple[str, ...], list[tuple[str, str, str, q.Rate]]] = {}

    def client_ip(self, request: Request) -> str:
        client = request.scope.get("client")
        peer = client[0] if client else None
        # X-Forwarded-For only counts when a trusted proxy sent it; with none configured it is not read.
        forwarded = tuple(request.headers.getlist("x-forwarded-for")) if self.trusted else ()
        return _client_ip(peer, forwarded, self.trusted)

    def _plan(self, names: tuple[str, ...]) -> list[tuple[str, str, str, q.Rate]]:
        plan = self._plans.get(names)
        if plan is None:
            plan = self._plans[names] = [
                (name, QUOTAS[name][1], QUOTAS[name][2], rate)
                for name in names
                if (rate := self.rates[name]) is not None
            ]
        return plan

    async def take(self, names: tuple[str, ...], request: Request, user_id: str | None) -> dict[str, str] | None:
        plan = self._plan(names)
        if not plan:
            return None
        hits = [
            (name, scope, self.client_ip(request) if per == "ip" else user_id, rate) for name, scope, per, rate in plan
        ]
        results = await self._hit_all(hits)
        refused = [(hit, result) for hit, result in zip(hits, results, strict=True) if not result.allowed]
        if refused:
            (name, _, _, rate), result = max(refused, key=lambda pair: pair[1].retry_after)
            metrics.quota_rejected(name, user_id)
            per = "address" if QUOTAS[name][2] == "ip" else "user"
            raise ApiError(
                429,
                "rate_limited",
                f"the {name} quota of {rate} per {per} is used up; retry in {max(1, round(result.retry_after))} s",
                headers=q.rate_limit_headers(result),
            )
        tightest = min(results, key=lambda result: (result.remaining, result.reset_seconds))
        return q.rate_limit_headers(tightest)

    async def _hit_all(self, hits) -> list[q.QuotaResult]:
        if len(hits) == 1:
            _, scope, subject, rate = hits[0]
            return [await self.quota.hit(scope, subject, rate)]
        # One script for all: the request is recorded in every quota or in none.
        return await self.quota.hit_all([(scope, subject, rate) for _, scope, subject, rate in hits])
