"""Bearer tokens for the local stack and the tests, shaped like Supabase's access tokens.

``make token USER=<id> [ADMIN=1] [TIER=<tier>]`` runs ``python -m unilingo.tokens --user <id>
[--admin] [--tier <tier>]`` and prints only the token. It is signed HS256 with ``SUPABASE_JWT_SECRET`` (the local
default unless the variable is set), which is what the API verifies for HS256 tokens.

The admin role is ``app_metadata.role == "admin"``, the place Supabase keeps
server-controlled claims (a user cannot edit ``app_metadata``; see ``api.security``); the
caller's tier is ``app_metadata.tier`` there too.
"""

from __future__ import annotations

import argparse
import time
import uuid

import jwt

DEFAULT_TTL_SECONDS = 24 * 3600


def mint(
    user_id: str,
    admin: bool = False,
    secret: str | None = None,
    ttl: float = DEFAULT_TTL_SECONDS,
    audience: str | None = None,
    email: str | None = None,
    extra: dict | None = None,
    tier: str | None = None,
) -> str:
    """An HS256 token for ``user_id`` (the ``sub`` claim), valid for ``ttl`` seconds."""
    from unilingo.settings import get_settings

    settings = get_settings()
    secret = settings.supabase_jwt_secret if secret is None else secret
    audience = settings.jwt_audience if audience is None else audience
    issuer = settings.jwt_issuer
    now = int(time.time())
    app_metadata: dict = {"provider": "email", "providers": ["email"]}
    if admin:
        app_metadata["role"] = "admin"
    if tier:
        app_metadata["tier"] = tier
    claims = {
        "iss": issuer,
        "sub": user_id,
        "aud": audience,
        "role": "authenticated",
        "iat": now,
        "exp": now + int(ttl),
        "email": email or f"{user_id}@unilingo.local",
        "app_metadata": app_metadata,
        "user_metadata": {},
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    if extra:
        claims.update(extra)
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m unilingo.tokens", description="Print a bearer token for the local stack."
    )
    parser.add_argument("--user", required=True, help="the user id (the token's sub claim)")
    parser.add_argument("--admin", action="store_true", help="add the admin role (app_metadata.role=admin)")
    parser.add_argument("--tier", help="the caller's tier (app_metadata.tier), e.g. premium")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds (default: 24 h)")
    args = parser.parse_args(argv)
    if not args.user.strip():
        parser.error("--user must not be empty")
    print(mint(args.user, admin=args.admin, ttl=args.ttl, tier=args.tier))


if __name__ == "__main__":
    main()
