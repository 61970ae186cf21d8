"""Token verification (HS256) and the token command: no I/O."""

from __future__ import annotations

import subprocess
import sys
import time

import jwt
import pytest

from api.errors import ApiError
from api.security import TokenVerifier, is_admin
from unilingo.settings import Settings
from unilingo.tokens import mint

SECRET = "unit-test-secret-unit-test-secret"


@pytest.fixture
def verifier():
    return TokenVerifier(Settings(supabase_jwt_secret=SECRET))


async def test_a_minted_token_verifies(verifier):
    principal = await verifier.verify(mint("user-1", secret=SECRET))
    assert principal.user_id == "user-1" and not principal.admin
    admin = await verifier.verify(mint("boss", admin=True, secret=SECRET))
    assert admin.admin


async def _code(verifier, token) -> str:
    with pytest.raises(ApiError) as err:
        await verifier.verify(token)
    assert err.value.status_code == 401
    assert err.value.headers["WWW-Authenticate"].startswith("Bearer")
    return err.value.code


async def test_missing_forged_expired_and_malformed_tokens(verifier):
    now = int(time.time())
    assert await _code(verifier, None) == "missing_token"
    assert await _code(verifier, "") == "missing_token"
    assert await _code(verifier, "not.a.jwt") == "invalid_token"
    assert await _code(verifier, mint("u", secret="another-secret-another-secret-another-secret")) == "invalid_token"
    assert await _code(verifier, mint("u", secret=SECRET, ttl=-10)) == "token_expired"
    assert await _code(verifier, mint("u", secret=SECRET, audience="anon")) == "invalid_token"
    no_exp = jwt.encode({"sub": "u", "aud": "authenticated"}, SECRET, algorithm="HS256")
    assert await _code(verifier, no_exp) == "invalid_token"
    no_sub = jwt.encode({"aud": "authenticated", "exp": now + 60}, SECRET, algorithm="HS256")
    assert await _code(verifier, no_sub) == "invalid_token"
    bad_sub = jwt.encode({"sub": "a:b", "aud": "authenticated", "exp": now + 60}, SECRET, algorithm="HS256")
    assert await _code(verifier, bad_sub) == "invalid_token"
    unsigned = jwt.encode({"sub": "u", "aud": "authenticated", "exp": now + 60}, None, algorithm="none")
    assert await _code(verifier, unsigned) == "invalid_token"
    hs512 = jwt.encode({"sub": "u", "aud": "authenticated", "exp": now + 60}, SECRET * 2, algorithm="HS512")
    assert await _code(verifier, hs512) == "invalid_token"


async def test_the_issuer_is_checked(verifier):
    now = int(time.time())
    assert await _code(verifier, mint("u", secret=SECRET, extra={"iss": "evil"})) == "invalid_token"
    no_iss = jwt.encode({"sub": "u", "aud": "authenticated", "exp": now + 60}, SECRET, algorithm="HS256")
    assert await _code(verifier, no_iss) == "invalid_token"
    supabase = TokenVerifier(Settings(supabase_jwt_secret=SECRET, jwt_issuer="https://abc.supabase.co/auth/v1"))
    token = mint("u", secret=SECRET, extra={"iss": "https://abc.supabase.co/auth/v1"})
    assert (await supabase.verify(token)).user_id == "u"
    assert await _code(supabase, mint("u", secret=SECRET)) == "invalid_token"  # the local stack's issuer


async def test_asymmetric_tokens_are_refused_without_a_jwks_url(verifier):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        {"sub": "u", "aud": "authenticated", "exp": int(time.time()) + 60}, key, algorithm="ES256", headers={"kid": "k"}
    )
    assert await _code(verifier, token) == "invalid_token"


async def test_a_cached_token_still_expires(verifier):
    token = mint("u", secret=SECRET, ttl=1)
    assert (await verifier.verify(token)).user_id == "u"
    time.sleep(2.1)
    assert await _code(verifier, token) in ("token_expired",)


def test_admin_claims():
    assert is_admin({"app_metadata": {"role": "admin"}})
    assert is_admin({"role": "service_role"})
    assert is_admin({"role": "admin"})
    assert not is_admin({"role": "authenticated", "app_metadata": {"provider": "email"}})
    assert not is_admin({"user_metadata": {"role": "admin"}})  # users can write user_metadata


def test_token_command_prints_only_the_token():
    out = subprocess.run(
        [sys.executable, "-m", "unilingo.tokens", "--user", "dev-1", "--admin"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.count("\n") == 1
    claims = jwt.decode(out.strip(), options={"verify_signature": False})
    assert claims["sub"] == "dev-1" and claims["aud"] == "authenticated" and claims["app_metadata"]["role"] == "admin"


async def test_the_tier_comes_from_app_metadata_only():
    from api.security import TokenVerifier
    from unilingo.settings import Settings
    from unilingo.tokens import mint

    secret = "unit-test-secret-unit-test-secret-unit-test"
    verifier = TokenVerifier(Settings(supabase_jwt_secret=secret))
    assert (await verifier.verify(mint("ann", secret=secret, tier="premium"))).tier == "premium"
    assert (await verifier.verify(mint("bob", secret=secret))).tier == "free"
    # A user-editable claim cannot raise it, and a malformed tier is the default.
    forged = mint("eve", secret=secret, extra={"user_metadata": {"tier": "premium"}, "tier": "premium"})
    assert (await verifier.verify(forged)).tier == "free"
    assert (await verifier.verify(mint("odd", secret=secret, tier="Premium!"))).tier == "free"
