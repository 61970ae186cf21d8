"""Response cache in Redis: an identical request within the TTL is answered without a provider.

"Identical" is decided by a key: the sha256 of the job type, the normalised input (text with
whitespace collapsed and case folded, options in a canonical order), the digest of the
uploaded file if any, and the model that would answer (OpenAI model and output cap, Polly
engine and format...), so that changing the model never serves an old model's answer.

The runner consults it after claiming a job (``cached``): a hit finishes the job with
``cache_hit=True`` and takes no provider permit; a miss runs the handler and stores its
result. The cache is best effort: Redis trouble here never fails a job.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from unilingo import keys
from unilingo.jobs import Job, JobType
from unilingo.settings import Settings, get_settings

log = logging.getLogger(__name__)

VERSION = 1  # bump when a handler's result shape changes: old entries then never match
# Job parameters that do not change the answer.
IGNORED_PARAMS = frozenset({"webhook_url", "idempotency_key"})
# A result carrying an ``expires_at`` (a presigned URL) is kept at most until this long before it.
EXPIRY_MARGIN_S = 300


def model_for(job_type: JobType, settings: Settings) -> str:
    if job_type in (JobType.FLASHCARDS, JobType.LESSON):
        return f"openai:{settings.openai_model}:{settings.openai_max_output_tokens}"
    if job_type == JobType.PRONUNCIATION:
        return "azure-speech:pronunciation-assessment"
    if job_type == JobType.OCR:
        return "azure-vision:read-3.2"
    if job_type == JobType.TTS:
        return f"aws-polly:{settings.polly_engine}:{settings.polly_output_format}:{settings.tts_bucket}"
    return f"{job_type.value}:local"


def normalise(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    return value


def digest(job: Job, upload: bytes | None, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    params = {k: v for k, v in job.params.items() if k not in IGNORED_PARAMS}
    payload = {
        "v": VERSION,
        "type": job.type.value,
        "model": model_for(job.type, settings),
        "params": normalise(params),
        "upload": hashlib.sha256(upload).hexdigest() if upload is not None else None,
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _key(client, job: Job) -> str:
    upload = client.get(keys.job_input(job.job_id))
    return keys.cache(digest(job, upload))


def lookup(client, job: Job) -> dict | None:
    """The cached result for this job's request, or None."""
    if not get_settings().cache_enabled:
        return None
    try:
        raw = client.get(_key(client, job))
    except redis.RedisError:
        log.warning("response cache unavailable; calling the provider", exc_info=True)
        return None
    return orjson.loads(raw) if raw else None


def store(client, job: Job, result: dict, key: str | None = None) -> None:
    settings = get_settings()
    if not settings.cache_enabled:
        return
    ttl = settings.cache_ttl_seconds
    expires_at = result.get("expires_at")
    if isinstance(expires_at, (int, float)):
        ttl = min(ttl, int(expires_at - time.time() - EXPIRY_MARGIN_S))
    if ttl <= 0:
        return
    try:
        client.set(key or _key(client, job), orjson.dumps(result), ex=ttl)
    except redis.RedisError:
        log.warning("response cache unavailable; result not cached", exc_info=True)


def cached(client, job: Job, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """``(result, hit)``: the cached answer, or ``compute()``'s, which is then cached."""
    if not get_settings().cache_enabled:
        return compute(), False
    try:
        key = _key(client, job)
        raw = client.get(key)
    except redis.RedisError:
        log.warning("response cache unavailable; calling the provider", exc_info=True)
        return compute(), False
    if raw:
        return orjson.loads(raw), True
    result = compute()
    store(client, job, result, key)
    return result, False
