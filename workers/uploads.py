"""Users' files (PDF, image, audio) archived to object storage before their job runs.

The API keeps an upload in Redis only for the job's lifetime; the archive is what outlives it
(Unilingo v1's "User uploads" in Supabase Storage; here S3 through boto3, the same path as the
generated audio). It goes under a ``storage`` permit like any provider call.
"""

from __future__ import annotations

from unilingo.settings import get_settings
from workers.providers import polly


def archive(ctx) -> dict:
    """Store the job's upload under ``uploads/<owner>/<job_id>`` (idempotent: a retry overwrites it)."""
    stored = polly.store(
        ctx,
        f"uploads/{ctx.job.owner}/{ctx.job.job_id}",
        ctx.upload(),
        "application/octet-stream",
        bucket=get_settings().uploads_bucket,
    )
    return {"bucket": stored["bucket"], "key": stored["key"]}
