"""What each job type makes and how far it has got: one pydantic model per type, for clients.

A job's public view (``Job.public``, hence ``GET /api/jobs/{id}``, the SSE stream and the
webhook) passes its result and progress through these models, so every answer has one
stable shape an app can generate types from: lists are present when empty, flags are
``false`` rather than absent, and what is internal (storage buckets and keys, a provider's
operation id, checkpoint bookkeeping) never reaches a client. The OpenAPI document is built
from the same models (``api.schemas``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _defaults_for_nulls(cls, data: Any) -> Any:
        """A provider's null (a word without a box, say) takes the field's default: [] not null."""
        if isinstance(data, dict):
            return {name: value for name, value in data.items() if value is not None}
        return data


Usage = dict[str, int]
_USAGE: Any = Field(
    default_factory=dict,
    description="Provider units this job used: OpenAI tokens, Polly characters (empty on a cache hit)",
)


class SavedRef(_View):
    """Where the made content is kept for good (PostgreSQL), readable after the job expires."""

    kind: Literal["lesson", "flashcard_set", "audio_lesson"]
    id: str = Field(description="The saved item's id")
    url: str = Field(description="Its read-back route, e.g. `/api/lessons/{id}`")


class UploadInfo(_View):
    archived: bool = Field(False, description="The uploaded file is kept in object storage beyond the job's lifetime")

    @model_validator(mode="before")
    @classmethod
    def _archived_when_stored(cls, data: Any) -> Any:
        """The runner records where it archived the file; clients learn only that it did."""
        if isinstance(data, dict) and data.get("key"):
            return {"archived": True}
        return data


# --- flashcards ---------------------------------------------------------------------------------


class Card(_View):
    front: str
    back: str


class FlashcardsResult(_View):
    cards: list[Card] = Field(default_factory=list)
    count: int = 0
    parts: int = Field(1, description="How many pieces long content was split into")
    usage: Usage = _USAGE
    saved: SavedRef | None = None


class FlashcardsPart(_View):
    cards: list[Card] = Field(default_factory=list)


class FlashcardsProgress(_View):
    step: str | None = None
    steps_done: int = 0
    steps: int = 1
    parts: dict[str, FlashcardsPart] = Field(default_factory=dict, description="Cards of the parts done so far")


# --- lessons ------------------------------------------------------------------------------------


class VocabularyItem(_View):
    term: str
    translation: str | None = None
    example: str | None = None


class Exercise(_View):
    prompt: str
    answer: str


class LessonResult(_View):
    title: str
    objectives: list[str] = Field(default_factory=list)
    sections: list[str] = Field(default_factory=list)
    vocabulary: list[VocabularyItem] = Field(default_factory=list)
    exercises: list[Exercise] = Field(default_factory=list)
    usage: Usage = _USAGE
    saved: SavedRef | None = None


class LessonOutline(_View):
    title: str
    objectives: list[str] = Field(default_factory=list)
    sections: list[str] = Field(default_factory=list)


class LessonVocabularyPart(_View):
    items: list[VocabularyItem] = Field(default_factory=list)


class LessonExercisesPart(_View):
    items: list[Exercise] = Field(default_factory=list)


class LessonParts(_View):
    outline: LessonOutline | None = None
    vocabulary: LessonVocabularyPart | None = None
    exercises: LessonExercisesPart | None = None


class LessonProgress(_View):
    step: Literal["outline", "vocabulary", "exercises"] | None = None
    steps_done: int = 0
    steps: int = 3
    parts: LessonParts = Field(default_factory=LessonParts, description="The parts done so far, to show early")


# --- pronunciation ------------------------------------------------------------------------------

ErrorType = Literal["None", "Mispronunciation", "Omission", "Insertion", "UnexpectedBreak", "MissingBreak", "Monotone"]


class Phoneme(_View):
    phoneme: str
    accuracy: float | None = None


class AssessedWord(_View):
    word: str
    accuracy: float | None = None
    error_type: ErrorType = "None"
    offset_s: float = 0.0
    duration_s: float = 0.0
    phonemes: list[Phoneme] = Field(
        default_factory=list, description="Empty for an omitted word or without phoneme granularity"
    )


class WordError(_View):
    word: str
    error_type: ErrorType
    accuracy: float | None = None


class PronunciationScores(_View):
    accuracy: float
    fluency: float
    completeness: float
    pronunciation: float


class PronunciationResult(_View):
    reference_text: str
    language: str
    granularity: Literal["Phoneme", "Word", "FullText"] = "Phoneme"
    miscue: bool = True
    recognized_text: str = ""
    scores: PronunciationScores
    words: list[AssessedWord] = Field(default_factory=list)
    errors: list[WordError] = Field(default_factory=list)
    error_counts: dict[str, int] = Field(default_factory=dict, description="Words per error type")
    audio_seconds: float = 0.0
    audio_codec: str = Field(
        "", description="What the recording was encoded with: aac, opus, vorbis, mp3, flac, pcm_s16le, ..."
    )
    upload: UploadInfo = Field(default_factory=UploadInfo)
    usage: Usage = _USAGE


class PronunciationProgress(_View):
    step: Literal["assessing"] | None = None
    audio_seconds: float | None = None


# --- OCR ----------------------------------------------------------------------------------------


class OcrWord(_View):
    text: str
    bounding_box: list[float] = Field(
        default_factory=list, description="x,y of the four corners, clockwise from top-left"
    )
    confidence: float | None = None


class OcrLine(_View):
    text: str
    bounding_box: list[float] = Field(default_factory=list)
    words: list[OcrWord] = Field(default_factory=list)


class OcrPage(_View):
    page: int
    width: float | None = None
    height: float | None = None
    unit: str | None = None
    angle: float | None = None
    lines: list[OcrLine] = Field(default_factory=list)


class ImageInfo(_View):
    source_format: str = Field(description="What was uploaded: jpeg, png, heif, webp, gif, bmp, tiff")
    converted: bool = Field(False, description="Turned upright or re-encoded before the Read API saw it")
    width: int
    height: int


class OcrResult(_View):
    text: str
    pages: list[OcrPage] = Field(default_factory=list)
    line_count: int = 0
    word_count: int = 0
    model_version: str | None = None
    language: str | None = None
    image: ImageInfo | None = None
    upload: UploadInfo = Field(default_factory=UploadInfo)
    usage: Usage = _USAGE


class OcrProgress(_View):
    step: Literal["analysing"] | None = None


# --- PDF ----------------------------------------------------------------------------------------


class PdfResult(_View):
    text: str
    pages: int
    characters: int
    upload: UploadInfo = Field(default_factory=UploadInfo)
    usage: Usage = _USAGE


class PdfProgress(_View):
    pages_done: int = 0
    pages: int | None = None


# --- text to speech -----------------------------------------------------------------------------


class TtsResult(_View):
    audio_url: str = Field(
        description="A presigned URL a phone can open until `expires_at`; "
        "`GET /api/audio-lessons/{id}` hands out a fresh one"
    )
    expires_at: int = Field(description="Unix time")
    voice: str
    language: str
    text_type: Literal["text", "ssml"] = "text"
    characters: int
    content_type: str
    bytes: int
    usage: Usage = _USAGE
    saved: SavedRef | None = None


class TtsProgress(_View):
    step: Literal["uploading"] | None = None
    bytes: int | None = None


RESULTS: dict[str, type[_View]] = {
    "flashcards": FlashcardsResult,
    "lesson": LessonResult,
    "pronunciation": PronunciationResult,
    "ocr": OcrResult,
    "pdf": PdfResult,
    "tts": TtsResult,
}
PROGRESS: dict[str, type[_View]] = {
    "flashcards": FlashcardsProgress,
    "lesson": LessonProgress,
    "pronunciation": PronunciationProgress,
    "ocr": OcrProgress,
    "pdf": PdfProgress,
    "tts": TtsProgress,
}


def _view(models: dict[str, type[_View]], job_type: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return models[job_type].model_validate(body).model_dump(mode="json")
    except ValidationError as exc:
        # A record from before a shape changed: shown as stored rather than not at all.
        log.warning("a %s job's stored %s does not fit its model: %s", job_type, models[job_type].__name__, exc)
        return body


def result_view(job_type: str, result: dict[str, Any]) -> dict[str, Any]:
    return _view(RESULTS, job_type, result)


def progress_view(job_type: str, progress: dict[str, Any]) -> dict[str, Any]:
    return _view(PROGRESS, job_type, progress)
