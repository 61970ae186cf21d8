"""Saved content read back from PostgreSQL: a user's lessons (with vocabulary), flashcard sets
and audio lessons, as the app shows them after their jobs have expired.

Workers write the rows (``unilingo.persistence``); these reads take an async psycopg
connection (the API tier). Every query is scoped to its user: another user's item does not
exist for the caller. An item's id is the id of the job that made it (random, so it tells
nothing about how many others exist). Lists are newest first and paged with
``unilingo.paging`` positions of (created at in microseconds, id): exact, so no item is
shown twice or skipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from unilingo import paging, results, storage
from unilingo.settings import Settings

Kind = Literal["lesson", "flashcard_set", "audio_lesson"]
ROUTES: dict[str, str] = {
    "lesson": "/api/lessons",
    "flashcard_set": "/api/flashcard-sets",
    "audio_lesson": "/api/audio-lessons",
}
SAVED_BY_JOB_TYPE: dict[str, Kind] = {"lesson": "lesson", "flashcards": "flashcard_set", "tts": "audio_lesson"}


def link(job_type: str, job_id: str) -> dict[str, str] | None:
    """The ``saved`` field of a job's result: where what it made is kept for good."""
    kind = SAVED_BY_JOB_TYPE.get(job_type)
    if kind is None:
        return None
    return {"kind": kind, "id": job_id, "url": f"{ROUTES[kind]}/{job_id}"}


class _Saved(BaseModel):
    id: str = Field(description="The item's id (that of the job that made it)")
    created_at: str


class SavedLesson(_Saved):
    topic: str
    level: str | None = None
    language: str | None = None
    title: str
    objectives: list[str] = Field(default_factory=list)
    sections: list[str] = Field(default_factory=list)
    vocabulary: list[results.VocabularyItem] = Field(default_factory=list)
    exercises: list[results.Exercise] = Field(default_factory=list)


class SavedFlashcardSet(_Saved):
    subject: str | None = None
    language: str | None = None
    cards: list[results.Card] = Field(default_factory=list)
    card_count: int = 0


class SavedAudioLesson(_Saved):
    text: str
    language: str | None = None
    voice: str | None = None
    audio_url: str = Field(
        description="A presigned URL, fresh with each answer, that a phone can open until `expires_at`"
    )
    expires_at: int = Field(description="Unix time")
    content_type: str | None = None
    characters: int | None = None


class LessonPage(BaseModel):
    lessons: list[SavedLesson]
    next_cursor: str | None = None


class FlashcardSetPage(BaseModel):
    flashcard_sets: list[SavedFlashcardSet]
    next_cursor: str | None = None


class AudioLessonPage(BaseModel):
    audio_lessons: list[SavedAudioLesson]
    next_cursor: str | None = None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CREATED_US = "(extract(epoch FROM created_at) * 1000000)::bigint AS created_us"
# Rows strictly after a position in (created_at, job_id) descending order; exact in microseconds.
_AFTER = "AND (created_at, job_id) < ('epoch'::timestamptz + %s * interval '1 microsecond', %s)"


async def _rows(
    conn, table: str, columns: str, user_id: str, limit: int, after: paging.Position | None, job_id: str | None = None
) -> list[dict[str, Any]]:
    sql = f"SELECT {columns}, job_id, created_at, {_CREATED_US} FROM {table} WHERE user_id = %s"
    args: list[Any] = [user_id]
    if job_id is not None:
        sql += " AND job_id = %s"
        args.append(job_id)
    if after is not None:
        sql += " " + _AFTER
        args += [int(after[0]), after[1]]
    sql += " ORDER BY created_at DESC, job_id DESC LIMIT %s"
    args.append(limit)
    cursor = await conn.execute(sql, args)
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


def _page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], paging.Position | None]:
    """The first ``limit`` rows of ``limit + 1`` fetched, and the position after them if more remain."""
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], (float(last["created_us"]), last["job_id"])
    return rows, None


async def lessons(conn, user_id: str, limit: int, after: paging.Position | None = None, job_id: str | None = None):
    rows, position = _page(
        await _rows(
            conn,
            "esp_lessons",
            "id AS lesson_id, topic, level, language, title, objectives, sections, exercises",
            user_id,
            limit + 1,
            after,
            job_id,
        ),
        limit,
    )
    vocabulary: dict[int, list[dict[str, Any]]] = {row["lesson_id"]: [] for row in rows}
    if rows:
        cursor = await conn.execute(
            "SELECT lesson_id, term, translation, example FROM lesson_vocab WHERE lesson_id = ANY(%s) ORDER BY "
            "lesson_id, position",
            [list(vocabulary)],
        )
        for lesson_id, term, translation, example in await cursor.fetchall():
            vocabulary[lesson_id].append({"term": term, "translation": translation, "example": example})
    items = [
        SavedLesson(
            id=row["job_id"],
            created_at=_iso(row["created_at"]),
            topic=row["topic"],
            level=row["level"],
            language=row["language"],
            title=row["title"],
            objectives=row["objectives"] or [],
            sections=row["sections"] or [],
            exercises=row["exercises"] or [],
            vocabulary=vocabulary[row["lesson_id"]],
        )
        for row in rows
    ]
    return items, position


async def flashcard_sets(
    conn, user_id: str, limit: int, after: paging.Position | None = None, job_id: str | None = None
):
    rows, position = _page(
        await _rows(
            conn,
            "flashcard_sets",
            "subject, language, cards, card_count",
            user_id,
            limit + 1,
            after,
            job_id,
        ),
        limit,
    )
    items = [
        SavedFlashcardSet(
            id=row["job_id"],
            created_at=_iso(row["created_at"]),
            subject=row["subject"],
            language=row["language"],
            cards=row["cards"] or [],
            card_count=row["card_count"],
        )
        for row in rows
    ]
    return items, position


async def audio_lessons(
    conn,
    user_id: str,
    limit: int,
    after: paging.Position | None = None,
    job_id: str | None = None,
    settings: Settings | None = None,
):
    rows, position = _page(
        await _rows(
            conn,
            "audio_lessons",
            "text, language, voice, storage_bucket, storage_key, content_type, characters",
            user_id,
            limit + 1,
            after,
            job_id,
        ),
        limit,
    )
    items = []
    for row in rows:
        url, expires_at = storage.presigned_get(row["storage_bucket"], row["storage_key"], settings)
        items.append(
            SavedAudioLesson(
                id=row["job_id"],
                created_at=_iso(row["created_at"]),
                text=row["text"],
                language=row["language"],
                voice=row["voice"],
                audio_url=url,
                expires_at=expires_at,
                content_type=row["content_type"],
                characters=row["characters"],
            )
        )
    return items, position
