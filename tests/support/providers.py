"""Provider adapters driven in this process against the sandbox: settings pointed at it, the
process's cached clients dropped, and a claimed job's context as the runner would hand it."""

from __future__ import annotations

import httpx
import redis

from tests.support.jobs import submit
from unilingo.jobs import JobStore, JobType
from unilingo.limiter import Limiter
from workers.runner import JobContext, _Heartbeat


def job_context(
    redis_url: str, job_type: JobType, params: dict | None = None, upload: bytes | None = None, owner: str = "alice"
) -> JobContext:
    """A claimed job and the context the runner would hand its handler (heartbeat not started)."""
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    job_id = submit(store, job_type, params, upload, owner)
    claim = store.claim(job_id, 30)
    assert claim.claimed
    heartbeat = _Heartbeat(store, job_id, claim.run_token, 30, 10)
    return JobContext(
        job=store.get(job_id), store=store, run_token=claim.run_token, limiter=Limiter(client), heartbeat=heartbeat
    )


class Sandbox:
    """The sandbox's control endpoints: statistics and faults."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def stats(self) -> dict:
        return self.http.get("/_sandbox/stats").json()

    def requests(self, provider: str) -> int:
        return self.stats()[provider]["requests"]

    def fault(self, provider: str, mode: str, duration_s: float = 30, **extra) -> None:
        response = self.http.post(
            "/_sandbox/faults", json={"provider": provider, "mode": mode, "duration_s": duration_s, **extra}
        )
        assert response.status_code in (200, 201), response.text

    def clear(self) -> None:
        self.http.delete("/_sandbox/faults")


def reset_process_caches() -> None:
    """Drop the settings and provider clients this process cached, so new settings take effect."""
    from unilingo import storage
    from unilingo.settings import get_settings
    from workers import runner
    from workers.providers import azure_vision, openai_chat, polly

    get_settings.cache_clear()
    polly._clients.cache_clear()
    storage._signer.cache_clear()
    polly._buckets_ready.clear()
    azure_vision._client.cache_clear()
    openai_chat.client.cache_clear()
    runner._client = None


def configure(monkeypatch, sandbox_service, redis_url: str, **extra: str) -> Sandbox:
    """Point this process's settings at the test sandbox and Redis."""
    port = sandbox_service.url.rsplit(":", 1)[1]
    env = {
        "REDIS_URL": redis_url,
        "SANDBOX_PORT": port,
        "SANDBOX_AWS_PORT": sandbox_service.env["SANDBOX_AWS_PORT"],
        "AZURE_VISION_POLL_SECONDS": "0.02",
        # Tesseract and PocketSphinx really read and listen: seconds each on a busy 2-core machine.
        "AZURE_VISION_TIMEOUT_SECONDS": "30",
        "AZURE_SPEECH_TIMEOUT_SECONDS": "30",
        "AWS_TIMEOUT_SECONDS": "3",
        **extra,
    }
    for name in (
        "AZURE_SPEECH_HOST",
        "AZURE_SPEECH_REGION",
        "AWS_ENDPOINT_URL",
        "AZURE_VISION_ENDPOINT",
        "OPENAI_BASE_URL",
        "DATABASE_URL",
        "CACHE_ENABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_process_caches()
    return Sandbox(sandbox_service.url)
