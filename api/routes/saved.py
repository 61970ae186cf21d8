"""What the caller's jobs made, read back from PostgreSQL: lessons, flashcard sets, audio lessons.

Readable for good, long after the job records expire (7 days). Another user's item is the
same ``404`` as one that does not exist. Lists page like ``GET /api/jobs``: newest first,
``next_cursor`` to continue.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg.errors
from fastapi import APIRouter, Depends, Query, Request

from api.deps import Caller, read_guard, response_headers
from api.errors import JOB_RESPONSES, ApiError, _responses
from api.responses import JSON
from api.validation import cursor_position
from unilingo import paging, saved

router = APIRouter(prefix="/api", tags=["saved content"], responses={**JOB_RESPONSES, **_responses(501)})

ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
PAGE_MAX = 100
Reader = Callable[..., Awaitable[tuple[list[Any], paging.Position | None]]]


async def _page(
    request: Request, caller: Caller, reader: Reader, list_name: str, limit: int, cursor: str | None
) -> JSON:
    after = cursor_position(list_name, cursor)
    async with caller.services.database() as conn:
        try:
            items, position = await reader(conn, caller.user.user_id, limit, after)
        except psycopg.errors.UndefinedTable:  # no worker has migrated the database yet: nothing saved
            items, position = [], None
    body = {
        list_name: [item.model_dump(mode="json") for item in items],
        "next_cursor": paging.encode(list_name, position) if position else None,
    }
    return JSON(body, headers=response_headers(request))


async def _one(request: Request, caller: Caller, reader: Reader, item_id: str, what: str) -> JSON:
    items: list[Any] = []
    if ITEM_ID.match(item_id):
        async with caller.services.database() as conn:
            try:
                items, _ = await reader(conn, caller.user.user_id, 1, None, job_id=item_id)
            except psycopg.errors.UndefinedTable:
                items = []
    if not items:
        raise ApiError(404, "not_found", f"no such {what}")
    return JSON(items[0].model_dump(mode="json"), headers=response_headers(request))


_LIMIT = Query(20, ge=1, le=PAGE_MAX, description="Items per page (at most 100)")
_CURSOR = Query(None, max_length=512, description="`next_cursor` of the previous page")


@router.get(
    "/lessons",
    response_model=saved.LessonPage,
    summary="The caller's saved lessons with their vocabulary, newest first",
)
async def list_lessons(
    request: Request, limit: int = _LIMIT, cursor: str | None = _CURSOR, caller: Caller = Depends(read_guard)
) -> JSON:
    return await _page(request, caller, saved.lessons, "lessons", limit, cursor)


@router.get("/lessons/{lesson_id}", response_model=saved.SavedLesson, summary="One saved lesson with its vocabulary")
async def get_lesson(lesson_id: str, request: Request, caller: Caller = Depends(read_guard)) -> JSON:
    return await _one(request, caller, saved.lessons, lesson_id, "lesson")


@router.get(
    "/flashcard-sets", response_model=saved.FlashcardSetPage, summary="The caller's saved flashcard sets, newest first"
)
async def list_flashcard_sets(
    request: Request, limit: int = _LIMIT, cursor: str | None = _CURSOR, caller: Caller = Depends(read_guard)
) -> JSON:
    return await _page(request, caller, saved.flashcard_sets, "flashcard_sets", limit, cursor)


@router.get("/flashcard-sets/{set_id}", response_model=saved.SavedFlashcardSet, summary="One saved flashcard set")
async def get_flashcard_set(set_id: str, request: Request, caller: Caller = Depends(read_guard)) -> JSON:
    return await _one(request, caller, saved.flashcard_sets, set_id, "flashcard set")


@router.get(
    "/audio-lessons",
    response_model=saved.AudioLessonPage,
    summary="The caller's saved audio lessons, each with a fresh URL, newest first",
)
async def list_audio_lessons(
    request: Request, limit: int = _LIMIT, cursor: str | None = _CURSOR, caller: Caller = Depends(read_guard)
) -> JSON:
    return await _page(request, caller, _audio_reader(caller), "audio_lessons", limit, cursor)


@router.get(
    "/audio-lessons/{audio_id}",
    response_model=saved.SavedAudioLesson,
    summary="One saved audio lesson, with a fresh URL",
)
async def get_audio_lesson(audio_id: str, request: Request, caller: Caller = Depends(read_guard)) -> JSON:
    return await _one(request, caller, _audio_reader(caller), audio_id, "audio lesson")


def _audio_reader(caller: Caller) -> Reader:
    """Audio lessons with URLs signed for this deployment's public storage address."""
    return functools.partial(saved.audio_lessons, settings=caller.services.config.settings)
