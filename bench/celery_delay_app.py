"""The submit endpoint a Python team would write first, for comparison only.

FastAPI with the same token check (``api.security.TokenVerifier``) and the same client quotas
(the address's and the user's AI quota in one ``unilingo.quota`` script on a ``redis.asyncio``
client), the job recorded as a Redis hash, and the work queued with Celery's ``delay()`` on a
Redis broker: the documented way, called from the async route as the documentation shows it.
No fair share, no idempotency, no enqueue in the same step as the record.

``python -m bench.celery_delay_app`` serves it on ``CELERY_APP_PORT``; ``WEB_CONCURRENCY``
processes as uvicorn runs them.
"""

from __future__ import annotations

import os
import time
import uuid

import redis.asyncio as aioredis
import uvicorn
from celery import Celery
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from api.errors import ApiError
from api.security import TokenVerifier
from unilingo.quota import AsyncClientQuota, parse_rate
from unilingo.settings import get_settings

QUEUE = "bench-celery-delay"  # consumed by nobody: the bench empties it between runs

settings = get_settings()
celery = Celery("bench", broker=settings.redis_url)
celery.conf.task_default_queue = QUEUE


@celery.task(name="bench.generate_flashcards")
def generate_flashcards(job_id: str) -> None:  # runs nowhere in the bench
    pass


app = FastAPI()
redis = aioredis.Redis.from_url(
    settings.redis_url,
    socket_connect_timeout=settings.redis_connect_timeout_seconds,
    socket_timeout=settings.redis_socket_timeout_seconds,
)
verifier = TokenVerifier(settings)
quota = AsyncClientQuota(redis)
IP_RATE, AI_RATE = parse_rate(settings.quota_ip), parse_rate(settings.quota_user_ai)


class FlashcardsRequest(BaseModel):
    content: str
    subject: str | None = None
    count: int = 10
    language: str | None = None


@app.post("/api/ai/generate-flashcards", status_code=202)
async def generate(body: FlashcardsRequest, request: Request):
    header = request.headers.get("authorization", "")
    try:
        user = await verifier.verify(header[7:] if header.lower().startswith("bearer ") else None)
    except ApiError as exc:
        raise HTTPException(exc.status_code, exc.code) from None
    address = request.client.host if request.client else "unknown"
    results = await quota.hit_all([("ip", address, IP_RATE), ("user_ai", user.user_id, AI_RATE)])
    if not all(r.allowed for r in results):
        raise HTTPException(429, "rate_limited", headers={"Retry-After": "1"})
    job_id = uuid.uuid4().hex
    now = time.time()
    key = f"bench:job:{job_id}"
    await redis.hset(
        key,
        mapping={
            "type": "flashcards",
            "status": "queued",
            "owner": user.user_id,
            "params": body.model_dump_json(),
            "created_at": now,
            "updated_at": now,
        },
    )
    await redis.expire(key, 7 * 24 * 3600)
    generate_flashcards.delay(job_id)
    return {"job_id": job_id, "status": "queued", "status_url": f"/api/jobs/{job_id}"}


if __name__ == "__main__":
    uvicorn.run(
        "bench.celery_delay_app:app",
        host="127.0.0.1",
        port=int(os.environ["CELERY_APP_PORT"]),
        workers=int(os.environ.get("WEB_CONCURRENCY", "1")) or None,
        loop="uvloop",  # as the platform's API runs
        http="httptools",
        access_log=False,
        log_level="warning",
    )
