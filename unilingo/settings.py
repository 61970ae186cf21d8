"""Configuration from the environment (pydantic-settings), with the local stack's defaults.

Every default here is what ``make run`` uses on a fresh machine: a local Redis, the provider
sandbox, a development JWT secret. Production sets the variables through the Helm chart.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "unilingo-local-development-secret-change-me"
DEV_WEBHOOK_SECRET = "unilingo-local-webhook-secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # "production" (the Helm chart sets it) refuses the publicly known development secrets.
    unilingo_env: str = "development"

    # Infrastructure
    redis_url: str = "redis://127.0.0.1:6390/0"
    # Sentinel instead of REDIS_URL (unilingo.connections): "host:port,host:port" and the master's name
    redis_sentinels: str = ""
    redis_sentinel_master: str = "mymaster"
    redis_db: int = 0
    redis_username: str | None = None
    redis_password: str | None = None
    redis_sentinel_password: str | None = None
    redis_tls: bool = False
    database_url: str | None = None  # PostgreSQL (Supabase) DSN; persistence is off without it

    # The local stack's folder (Redis's AOF, PostgreSQL's cluster); relative to the checkout
    unilingo_run_dir: Path = Path(".run")
    postgres_port: int = 5442  # the local PostgreSQL that `make run` starts without DATABASE_URL
    postgres_dir: Path | None = None  # default <run dir>/postgres

    # API tier. The local stack listens on loopback only; the Helm chart sets 0.0.0.0 in pods.
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    web_concurrency: int = 1  # uvicorn processes on one port
    api_access_log: bool = False
    api_log_level: str = "info"
    public_base_url: str = ""  # used in status_url/events_url; relative URLs when empty
    supabase_jwt_secret: str = DEV_JWT_SECRET  # HS256 shared secret
    supabase_jwks_url: str | None = None  # RS256/ES256 through JWKS when set
    jwt_audience: str = "authenticated"
    # The token's iss must be this: Supabase's is https://<project ref>.supabase.co/auth/v1;
    # "unilingo-local" is what make token mints for the local stack.
    jwt_issuer: str = "unilingo-local"
    jwks_cache_seconds: int = 600
    # How long the API waits on Redis before answering 503: its commands take a millisecond,
    # so a second means Redis is stalled or gone, and the client should hear so at once.
    # A request's whole body must arrive within this; a client trickling it is cut off (408).
    request_body_timeout_seconds: float = 60.0  # 10 MB at ~1.5 Mbit/s, a slow phone network
    redis_connect_timeout_seconds: float = 1.0
    redis_socket_timeout_seconds: float = 1.0
    trusted_proxies: list[str] = Field(default_factory=list)  # CIDRs allowed to set X-Forwarded-For
    admin_ip_allowlist: list[str] = Field(default_factory=list)  # empty: no IP restriction
    quota_ip: str = "100/15m"
    quota_user_ai: str = "200/1h"
    quota_user_pronunciation: str = "100/1h"
    # Reading jobs (status, events, list, cancel) and the status routes, per user: generous, so
    # that a client polling every second for hours is never locked out.
    quota_user_read: str = "1200/1m"

    # Input limits
    max_text_chars: int = 50_000
    max_pdf_bytes: int = 10 * 1024 * 1024
    max_pdf_pages: int = 200
    # What one PDF job may spend, checked as it goes: a small file can carry a content stream
    # shared by every page, or a stream that inflates a thousandfold.
    max_pdf_decompressed_bytes: int = 32 * 1024 * 1024  # page contents, summed over the pages
    max_pdf_cpu_seconds: float = 30.0
    max_image_bytes: int = 10 * 1024 * 1024
    max_audio_bytes: int = 10 * 1024 * 1024
    # A recording is decoded before it is assessed; longer ones fail as audio_too_long.
    max_audio_seconds: float = 120.0
    # Pixels an image may have (width x height), read from its header before it is decoded.
    max_image_pixels: int = 50_000_000
    max_tts_chars: int = 3_000

    # Jobs
    job_ttl_seconds: int = 7 * 24 * 3600
    job_lease_seconds: float = 30.0  # a running job whose lease lapses is delivered again
    job_heartbeat_seconds: float = 10.0
    job_max_attempts: int = 5
    job_timeout_seconds: int = 600  # the longest a single job may run
    user_job_index_size: int = 200
    # Users waiting on one queue take turns (unilingo.fairness), each tier with its weight
    # (TIER_WEIGHTS, JSON; a tier not named has weight 1). False: first come, first served.
    fair_share: bool = True
    tier_weights: dict[str, float] = Field(default_factory=lambda: {"free": 1.0, "premium": 3.0})
    # Each tier's job priority (TIER_PRIORITIES, JSON, 0-9, higher sooner; a tier not named has
    # the free tier's): its jobs' default and the most a client may ask for (Job-Priority).
    tier_priorities: dict[str, int] = Field(default_factory=lambda: {"free": 5, "premium": 7})

    # Webhooks
    webhook_secret: str = DEV_WEBHOOK_SECRET
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 5.0  # one attempt in all: DNS, connect, send, the whole answer
    webhook_concurrency: int = 8  # deliveries in flight at once per worker
    webhook_attempts: int = 5

    # Workers
    worker_concurrency: int = 4
    worker_log_level: str = "INFO"
    # Each worker's Prometheus endpoint; loopback unless told (the chart sets 0.0.0.0)
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9808
    worker_queues: str = "ai,speech,ocr,pdf,tts"
    # After SIGTERM, running jobs get this long to finish; then they are handed back to their
    # queue (workers/drain.py). The default outlasts the job time limits: nothing is cut short.
    worker_drain_seconds: int = 645
    # A call's place in the rolling minute moves to when it left the worker (the permit's
    # release says); this margin absorbs what remains, the network and the provider's own
    # queue, at about 3 % of a long steady run.
    provider_window_margin_seconds: float = 2.0
    # The worker's pod (the chart sets them from the downward API): its count of running jobs
    # is published under this name for the operator's pod-deletion-cost (unilingo.scaling).
    pod_name: str | None = None
    pod_namespace: str | None = None

    # Providers (the sandbox's addresses by default)
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = 8090
    sandbox_latency_scale: float = Field(1.0, ge=0)  # 1.0: the providers' real latencies
    sandbox_log_level: str = "info"
    openai_base_url: str | None = None
    openai_api_key: str = "sandbox"
    openai_model: str = "gpt-4o-mini"
    openai_max_output_tokens: int = 1500

    @model_validator(mode="after")
    def _no_development_secrets_in_production(self) -> Settings:
        if self.unilingo_env == "production":
            if self.supabase_jwt_secret == DEV_JWT_SECRET and not self.supabase_jwks_url:
                raise ValueError("UNILINGO_ENV=production needs SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL")
            if self.webhook_secret == DEV_WEBHOOK_SECRET:
                raise ValueError("UNILINGO_ENV=production needs WEBHOOK_SECRET")
        return self

    def openai_endpoint(self) -> str:
        if self.openai_base_url:
            return self.openai_base_url
        if self.unilingo_env == "production":  # the sandbox is a development default only
            return "https://api.openai.com/v1"
        return f"http://127.0.0.1:{self.sandbox_port}/openai/v1"

    def run_dir(self) -> Path:
        """The local stack's folder, absolute: processes change directory (Redis into its own)."""
        return self.unilingo_run_dir.expanduser().resolve()

    def postgres_folder(self) -> Path:
        return (self.postgres_dir or self.run_dir() / "postgres").expanduser().resolve()

    def aws_sandbox_port(self) -> int:
        return self.sandbox_aws_port or self.sandbox_port + 1

    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]

    # --- Providers (speech, vision, Polly/S3), persistence and response cache ---
    # Each provider defaults to the sandbox; production sets the provider's own address.
    # Azure Speech (azure-cognitiveservices-speech): KEY+REGION for Azure itself, or HOST for
    # anything that speaks the SDK's websocket protocol (a Speech container, the sandbox).
    azure_speech_key: str = ""
    azure_speech_region: str | None = None
    azure_speech_host: str | None = None  # default ws://127.0.0.1:{sandbox_port}
    azure_speech_timeout_seconds: float = 60.0  # our own deadline: the SDK's waits have none
    azure_speech_retry_after_seconds: float = 2.0  # the SDK hides a 429's Retry-After
    # Azure AI Vision Read API v3.2 (httpx)
    azure_vision_endpoint: str | None = None  # default http://127.0.0.1:{sandbox_port}
    azure_vision_key: str = "sandbox"
    azure_vision_timeout_seconds: float = 60.0  # submit plus polling, in all
    azure_vision_poll_seconds: float = 1.0  # when the service sends no Retry-After
    azure_vision_max_polls: int = 120
    # AWS Polly and S3 (boto3)
    sandbox_aws_port: int | None = None  # the sandbox's moto port; default sandbox_port + 1
    aws_endpoint_url: str | None = None  # default http://127.0.0.1:{sandbox AWS port}; "" = AWS itself
    aws_region: str = "us-east-1"
    aws_access_key_id: str | None = None  # unset: boto3's own chain (or "sandbox" on the sandbox)
    aws_secret_access_key: str | None = None
    aws_timeout_seconds: float = 30.0
    polly_engine: str = "standard"  # standard | neural | long-form | generative
    polly_output_format: str = "mp3"
    tts_bucket: str = "unilingo-audio"
    # Users' files (PDF, image, audio) archived to this S3 bucket before their job runs; "" keeps
    # them in Redis for the job's lifetime only. `make run` and the Helm chart set it.
    uploads_bucket: str = ""
    tts_url_ttl_seconds: int = 3600
    # Where phones reach the storage endpoint: presigned URLs are signed for this address.
    # Unset: the address the workers use (AWS_ENDPOINT_URL, or AWS itself). The local stack's
    # 127.0.0.1 works from the iOS simulator; the Android emulator needs http://10.0.2.2:<port>.
    storage_public_url: str | None = None
    # Persistence (DATABASE_URL above): applied migrations live in schema_migrations
    database_connect_timeout_seconds: float = 5.0
    # Response cache in Redis
    cache_enabled: bool = True
    cache_ttl_seconds: int = 24 * 3600

    def azure_speech_endpoint(self) -> str:
        return self.azure_speech_host or f"ws://127.0.0.1:{self.sandbox_port}"

    def azure_vision_base(self) -> str:
        return (self.azure_vision_endpoint or f"http://127.0.0.1:{self.sandbox_port}").rstrip("/")

    def storage_public_base(self) -> str | None:
        """The storage address in the URLs handed to clients; None means AWS itself."""
        return (self.storage_public_url or "").rstrip("/") or self.aws_endpoint()

    def aws_endpoint(self) -> str | None:
        """The AWS endpoint boto3 uses; None means AWS itself (AWS_ENDPOINT_URL="", or production)."""
        if self.aws_endpoint_url is not None:
            return self.aws_endpoint_url or None
        if self.unilingo_env == "production":
            return None
        return f"http://127.0.0.1:{self.aws_sandbox_port()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
