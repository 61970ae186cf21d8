"""Configuration from the environment (pydantic-settings), with the local stack's defaults.

Every default here is what ``make run`` uses on a fresh machine: a local Redis, the provider
sandbox, a development JWT secret. Production sets the variables through the Helm chart.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "unilingo-local-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # Infrastructure
    redis_url: str = "redis://127.0.0.1:6390/0"
    database_url: str | None = None  # PostgreSQL (Supabase) DSN; persistence is off without it

    # API tier
    api_port: int = 8080
    public_base_url: str = ""  # used in status_url/events_url; relative URLs when empty
    supabase_jwt_secret: str = DEV_JWT_SECRET  # HS256 shared secret
    supabase_jwks_url: str | None = None  # RS256/ES256 through JWKS when set
    jwt_audience: str = "authenticated"
    jwks_cache_seconds: int = 600
    trusted_proxies: list[str] = Field(default_factory=list)  # CIDRs allowed to set X-Forwarded-For
    admin_ip_allowlist: list[str] = Field(default_factory=list)  # empty: no IP restriction
    quota_ip: str = "100/15m"
    quota_user_ai: str = "200/1h"
    quota_user_pronunciation: str = "100/1h"

    # Input limits
    max_text_chars: int = 50_000
    max_pdf_bytes: int = 10 * 1024 * 1024
    max_pdf_pages: int = 200
    max_image_bytes: int = 10 * 1024 * 1024
    max_audio_bytes: int = 10 * 1024 * 1024
    max_tts_chars: int = 3_000

    # Jobs
    job_ttl_seconds: int = 7 * 24 * 3600
    job_lease_seconds: float = 30.0  # a running job whose lease lapses is delivered again
    job_heartbeat_seconds: float = 10.0
    job_max_attempts: int = 5
    job_timeout_seconds: int = 600  # the longest a single job may run
    user_job_index_size: int = 200

    # Webhooks
    webhook_secret: str = "unilingo-local-webhook-secret"
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 5.0
    webhook_attempts: int = 5

    # Workers
    worker_concurrency: int = 4
    worker_queues: str = "ai,speech,ocr,pdf,tts"
    worker_drain_seconds: int = 660  # graceful drain after SIGTERM; above job_timeout_seconds

    # Providers (the sandbox's addresses by default)
    sandbox_port: int = 8090
    sandbox_latency_scale: float = 1.0
    openai_base_url: str | None = None
    openai_api_key: str = "sandbox"
    openai_model: str = "gpt-4o-mini"
    openai_max_output_tokens: int = 1500

    def openai_endpoint(self) -> str:
        return self.openai_base_url or f"http://127.0.0.1:{self.sandbox_port}/openai/v1"

    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
