"""Supabase JWT verification.

Accepted tokens (``Authorization: Bearer <jwt>``):

* ``HS256`` signed with ``SUPABASE_JWT_SECRET`` (Supabase's legacy shared secret; also what
  ``make token`` mints for the local stack);
* ``RS256`` / ``ES256`` signed by a key published at ``SUPABASE_JWKS_URL`` (Supabase's
  asymmetric signing keys, ``https://<ref>.supabase.co/auth/v1/.well-known/jwks.json``),
  looked up by the token's ``kid``. The key set is fetched by PyJWT's ``PyJWKClient`` and
  cached for ``jwks_cache_seconds``; a fetch never runs on the event loop.

The algorithm is taken from the token header but only ever paired with the key of its own
family (the secret for HS256, a JWKS key whose algorithm matches for RS256/ES256), so a
token cannot pick its verification key (no ``none``, no RS/HS confusion). Claims: ``aud`` must
be ``jwt_audience`` (``authenticated``), ``iss`` must be ``jwt_issuer`` (a token minted for
another project or service is refused), ``exp`` and ``sub`` are required, ``sub`` is the user
id (1-128 characters of ``A-Z a-z 0-9 . _ @ | + -``; Supabase uses UUIDs).

Admin role: ``app_metadata.role == "admin"`` (``app_metadata`` is server-controlled in
Supabase: users cannot write it), or a top-level ``role`` claim of ``service_role`` or
``admin``. Such tokens still need ``aud`` and ``sub`` to be accepted here.

Tier: ``app_metadata.tier`` (a short lower-case name, e.g. ``premium``), else ``free``.

Failures answer ``401`` with ``WWW-Authenticate: Bearer`` and a code: ``missing_token``,
``invalid_token`` or ``token_expired``. A JWKS endpoint that cannot be reached answers
``503 auth_unavailable`` (not the client's fault).

Verified tokens are remembered (bounded, at most 5 minutes and never past ``exp``) so that a
client's repeated requests skip the signature check: the submit path's budget is tight.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import jwt
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError

from api.errors import ApiError
from unilingo.settings import Settings

ASYMMETRIC = ("RS256", "ES256")
ADMIN_ROLES = ("service_role", "admin")
USER_ID = re.compile(r"^[A-Za-z0-9._@|+\-]{1,128}$")
CACHE_SIZE = 10_000
CACHE_SECONDS = 300.0


TIER = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
DEFAULT_TIER = "free"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    admin: bool = False
    tier: str = DEFAULT_TIER
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def unauthorized(code: str, message: str) -> ApiError:
    # RFC 6750: no error attribute when the request had no token at all.
    value = "Bearer" if code == "missing_token" else 'Bearer error="invalid_token"'
    return ApiError(401, code, message, headers={"WWW-Authenticate": value})


def tier_of(claims: dict[str, Any]) -> str:
    """``app_metadata.tier`` (server-controlled in Supabase), or the default tier."""
    app_metadata = claims.get("app_metadata")
    tier = app_metadata.get("tier") if isinstance(app_metadata, dict) else None
    return tier if isinstance(tier, str) and TIER.match(tier) else DEFAULT_TIER


def is_admin(claims: dict[str, Any]) -> bool:
    app_metadata = claims.get("app_metadata")
    if isinstance(app_metadata, dict) and app_metadata.get("role") == "admin":
        return True
    return claims.get("role") in ADMIN_ROLES


class TokenVerifier:
    def __init__(self, settings: Settings):
        self.secret = settings.supabase_jwt_secret or None
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.jwks: PyJWKClient | None = None
        if settings.supabase_jwks_url:
            self.jwks = PyJWKClient(
                settings.supabase_jwks_url,
                cache_jwk_set=True,
                lifespan=max(1, settings.jwks_cache_seconds),
                timeout=5,
            )
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str | None) -> Principal:
        if not token:
            raise unauthorized("missing_token", "an Authorization: Bearer token is required")
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            self._cache.pop(token, None)
        principal, exp = await self._verify(token)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (principal, min(exp, now + CACHE_SECONDS))
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("invalid_token", "the token is not a well-formed JWT") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self.secret:
            key = self.secret
        elif alg in ASYMMETRIC and self.jwks is not None:
            key = await self._signing_key(header.get("kid"), alg)
        else:
            shown = alg if isinstance(alg, str) and re.fullmatch(r"[A-Za-z0-9]{1,16}", alg) else "this algorithm"
            raise unauthorized("invalid_token", f"tokens signed with {shown} are not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "iss"], "verify_aud": True, "verify_iss": True},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token_expired", "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("invalid_token", f"the token's audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("invalid_token", f"the token's issuer is not {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized("invalid_token", f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise unauthorized("invalid_token", "the token's signature or claims are invalid") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not USER_ID.match(sub):
            raise unauthorized("invalid_token", "the token's sub claim is not a valid user id")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)):
            raise unauthorized("invalid_token", "the token's exp claim is not a number")
        return Principal(user_id=sub, admin=is_admin(claims), tier=tier_of(claims), claims=claims), float(exp)

    async def _signing_key(self, kid: Any, alg: str) -> PyJWK:
        assert self.jwks is not None
        if not isinstance(kid, str) or not kid:
            raise unauthorized("invalid_token", "the token names no signing key (kid)")
        key = None
        cache = self.jwks.jwk_set_cache
        cached = cache.get() if cache is not None else None
        if cached is not None:  # fast path: no thread hop while the key set is fresh
            for candidate in cached.keys:
                if candidate.key_id == kid and candidate.public_key_use in ("sig", None):
                    key = candidate
                    break
        if key is None:
            try:
                key = await anyio.to_thread.run_sync(self.jwks.get_signing_key, kid)
            except PyJWKClientConnectionError:
                raise ApiError(
                    503,
                    "auth_unavailable",
                    "the signing keys cannot be fetched; retry shortly",
                    headers={"Retry-After": "5"},
                ) from None
            except (PyJWKClientError, jwt.PyJWKSetError):
                raise unauthorized("invalid_token", "the token's signing key is unknown") from None
        if key.algorithm_name != alg:
            raise unauthorized("invalid_token", "the token's algorithm does not match its key")
        return key
