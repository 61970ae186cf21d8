"""The six submit endpoints. Each: auth → quota → validate → record + enqueue → ``202``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from api import schemas
from api.config import REFERENCE_TEXT_MAX_CHARS
from api.deps import Caller, ai_guard, pronunciation_guard, submit_guard
from api.errors import SUBMIT_RESPONSES
from api.responses import JSON
from api.submission import job_params, submit, submit_upload
from api.validation import check_text
from unilingo.jobs import JobType

router = APIRouter(prefix="/api", tags=["submit"], responses=SUBMIT_RESPONSES)

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": schemas.JobAccepted, "description": "Queued; follow `status_url` or `events_url`"},
    200: {"model": schemas.JobAccepted, "description": "The job this Idempotency-Key already created"},
}
_IDEMPOTENCY = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Repeat a submission safely: the same key returns the same job for 24 h",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
        },
        {
            "name": "Job-Priority",
            "in": "header",
            "required": False,
            "description": "0-9, higher runs sooner among the jobs waiting on the same queue. Defaults to the "
            "caller's tier's priority (TIER_PRIORITIES: free 5, premium 7) and may only lower it: a value above "
            "it is refused with 403 priority_above_tier. A lowered job lets other users' jobs go first, ten turns "
            "per level, and is never starved.",
            "schema": {"type": "integer", "minimum": 0, "maximum": 9},
        },
    ]
}


@router.post(
    "/ai/generate-flashcards",
    status_code=202,
    responses=_ACCEPTED,
    openapi_extra=_IDEMPOTENCY,
    summary="Generate flashcards from text",
)
async def generate_flashcards(
    body: schemas.FlashcardsRequest,
    request: Request,
    caller: Caller = Depends(ai_guard),
) -> JSON:
    check_text("content", body.content, caller.services.config.settings.max_text_chars)
    return await submit(request, caller, JobType.FLASHCARDS, job_params(body), webhook_url=body.webhook_url)


@router.post(
    "/ai/generate-lesson",
    status_code=202,
    responses=_ACCEPTED,
    openapi_extra=_IDEMPOTENCY,
    summary="Generate a lesson",
)
async def generate_lesson(
    body: schemas.LessonRequest,
    request: Request,
    caller: Caller = Depends(ai_guard),
) -> JSON:
    check_text("content", body.content, caller.services.config.settings.max_text_chars)
    return await submit(request, caller, JobType.LESSON, job_params(body), webhook_url=body.webhook_url)


@router.post(
    "/audio/generate",
    status_code=202,
    responses=_ACCEPTED,
    openapi_extra=_IDEMPOTENCY,
    summary="Synthesise speech (text to speech)",
)
async def generate_audio(
    body: schemas.SpeechRequest,
    request: Request,
    caller: Caller = Depends(submit_guard),
) -> JSON:
    check_text("text", body.text, caller.services.config.settings.max_tts_chars)
    return await submit(request, caller, JobType.TTS, job_params(body), webhook_url=body.webhook_url)


@router.post(
    "/pronunciation-assess",
    status_code=202,
    responses=_ACCEPTED,
    openapi_extra={**schemas.PRONUNCIATION_BODY, **_IDEMPOTENCY},
    summary="Assess the pronunciation of a recording",
)
async def pronunciation_assess(request: Request, caller: Caller = Depends(pronunciation_guard)) -> JSON:
    return await submit_upload(
        request,
        caller,
        JobType.PRONUNCIATION,
        schemas.PronunciationFields,
        "audio",
        "audio",
        caller.services.config.settings.max_audio_bytes,
        check_fields=lambda fields: check_text("reference_text", fields.reference_text, REFERENCE_TEXT_MAX_CHARS),
    )


@router.post(
    "/process-image",
    status_code=202,
    responses=_ACCEPTED,
    openapi_extra={**schemas.IMAGE_BODY, **_IDEMPOTENCY},
    summary="Read the text in an image (OCR)",
)
async def process_image(request: Request, caller: Caller = Depends(submit_guard)) -> JSON:
    return await submit_upload(
        request,
        caller,
        JobType.OCR,
        schemas.ImageFields,
        "image",
        "image",
        caller.services.config.settings.max_image_bytes,
    )


@router.post(
    "/process-pdf",
    status_code=202,
    responses=_ACCEPTED,
    openapi_extra={**schemas.PDF_BODY, **_IDEMPOTENCY},
    summary="Extract the text of a PDF",
)
async def process_pdf(request: Request, caller: Caller = Depends(submit_guard)) -> JSON:
    return await submit_upload(
        request, caller, JobType.PDF, schemas.PdfFields, "file", "pdf", caller.services.config.settings.max_pdf_bytes
    )
