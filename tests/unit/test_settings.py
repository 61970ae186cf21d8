import pytest
from pydantic import ValidationError

from unilingo.settings import Settings


def test_production_refuses_the_development_secrets(monkeypatch):
    monkeypatch.setenv("UNILINGO_ENV", "production")
    with pytest.raises(ValidationError, match="SUPABASE_JWT_SECRET"):
        Settings()
    monkeypatch.setenv("SUPABASE_JWT_SECRET", "s3cret-from-a-k8s-secret")
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        Settings()
    monkeypatch.setenv("WEBHOOK_SECRET", "another-secret")
    assert Settings().unilingo_env == "production"


def test_development_defaults_run_the_local_stack(monkeypatch):
    monkeypatch.delenv("UNILINGO_ENV", raising=False)
    settings = Settings()
    assert settings.redis_url.startswith("redis://127.0.0.1:")
    assert settings.openai_endpoint().endswith("/openai/v1")


def test_production_never_falls_back_to_the_sandbox(monkeypatch):
    monkeypatch.setenv("UNILINGO_ENV", "production")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", "s")
    monkeypatch.setenv("WEBHOOK_SECRET", "w")
    for name in ("OPENAI_BASE_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.openai_endpoint() == "https://api.openai.com/v1"
    assert settings.aws_endpoint() is None  # boto3's own AWS endpoints
