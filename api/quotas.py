"""Client quotas for the API, on ``unilingo.quota`` (Redis, shared by every replica).

Quotas (``QUOTA_IP``, ``QUOTA_USER_AI``, ``QUOTA_USER_PRONUNCIATION``; rates like
``100/15m``; ``off`` or ``0`` disables one):

* ``ip`` — every ``/api/`` route but health, counted per client address (``client_ip``:
  ``X-Forwarded-For`` is believed only from ``TRUSTED_PROXIES``);
* ``ai`` — per user, on the two ``/api/ai/`` endpoints;
* ``pronunciation`` — per user, on ``/api/pronunciation-assess``.

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

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return _client_ip(peer, tuple(request.headers.getlist("x-forwarded-for")), self.trusted)

    async def take(self, names: tuple[str, ...], request: Request, user_id: str) -> dict[str, str] | None:
        hits = []
        for name in names:
            rate = self.rates[name]
            if rate is None:
                continue
            _, scope, per = QUOTAS[name]
            hits.append((name, scope, self.client_ip(request) if per == "ip" else user_id, rate))
        if not hits:
            return None
        results = await self._hit_all(hits)
        refused = [(hit, result) for hit, result in zip(hits, results) if not result.allowed]
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
