"""Request and response models of the HTTP API (DESIGN.md, Contracts: HTTP).

Unknown fields are refused (``422``), so a misspelt field never silently does nothing. The
long text fields are limited by configuration (``413 text_too_long``, checked in the route);
the short ones carry their limit in the schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StringConstraints

from api.config import SUBJECT_MAX_CHARS, TOPIC_MAX_CHARS
from api.errors import code_table
from api.validation import check_unicode, clean_text
from unilingo import results
from unilingo.errors import JOB_ERROR_CODES

# BCP 47 language tags as the providers take them: "en", "es", "en-US", "zh-Hans-CN".
Language = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$", max_length=35),
    Field(description="BCP 47 language tag, e.g. `en`, `es`, `en-US`", examples=["en-US"]),
]
Text = Annotated[str, Field(min_length=1), AfterValidator(clean_text)]
ShortText = Annotated[str, AfterValidator(clean_text)]
WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        description="Called (signed, with retries) when the job succeeds or fails; https or http to a public address",
    ),
    AfterValidator(check_unicode),
]
Level = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _\-]{0,31}$"),
    Field(description="e.g. `beginner`, `intermediate`, `advanced`, `B1`", examples=["beginner"]),
]
Voice = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$"), Field(examples=["Joanna"])]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlashcardsRequest(_Request):
    content: Text = Field(description="Source text (at most MAX_TEXT_CHARS characters, 50,000 by default)")
    subject: Annotated[ShortText, Field(max_length=SUBJECT_MAX_CHARS)] | None = None
    count: Annotated[int, Strict(), Field(ge=1, le=100)] | None = Field(None, description="How many cards (default 10)")
    language: Language | None = None
    webhook_url: WebhookUrl | None = None


class LessonRequest(_Request):
    topic: Annotated[Text, Field(max_length=TOPIC_MAX_CHARS)]
    level: Level | None = None
    language: Language | None = None
    content: Text | None = Field(None, description="Optional source material (at most MAX_TEXT_CHARS characters)")
    webhook_url: WebhookUrl | None = None


class SpeechRequest(_Request):
    text: Text = Field(description="Text to speak (at most MAX_TTS_CHARS characters, 3,000 by default)")
    voice: Voice | None = None
    language: Language | None = None
    webhook_url: WebhookUrl | None = None


class PronunciationFields(_Request):
    reference_text: Text
    language: Language
    webhook_url: WebhookUrl | None = None


class ImageFields(_Request):
    language: Language | None = None
    webhook_url: WebhookUrl | None = None


class PdfFields(_Request):
    webhook_url: WebhookUrl | None = None


# --- responses (documentation: the routes answer with plain dicts) --------------------------


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    status_url: str
    events_url: str


class JobErrorView(BaseModel):
    code: str = Field(description="Machine-readable; one of:\n\n" + code_table(JOB_ERROR_CODES))
    message: str


class WaitingView(BaseModel):
    """Present while a queued job waits for its provider rather than for a free worker."""

    reason: Literal["rate", "tokens", "in_flight", "paused", "breaker_open", "suspended", "budget", "retry"] = Field(
        description="rate, tokens, in_flight: the provider's shared budget or concurrency cap is spent; "
        "budget: the provider's daily or monthly spend budget is spent (until: the next UTC day or month); "
        "paused: the provider answered 429 with Retry-After; breaker_open: the provider is failing and "
        "the shared circuit breaker is open; suspended: an operator suspended the provider; "
        "retry: waiting out the backoff after a transient provider failure"
    )
    provider: str | None = Field(None, description="openai, azure-speech, azure-vision, aws-polly or storage")
    until: str = Field(description="when the job is due to be tried again (ISO 8601, UTC)")


class _JobViewBase(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    error: JobErrorView | None = Field(None, description="Set when the job failed or was cancelled")
    waiting: WaitingView | None = None
    attempts: int
    cache_hit: bool = Field(False, description="Answered from the response cache: no provider call")
    created_at: str
    updated_at: str


_PROGRESS = "While it runs (absent from list summaries)"
_RESULT = "Once it succeeded (absent from list summaries)"


class FlashcardsJob(_JobViewBase):
    type: Literal["flashcards"]
    progress: results.FlashcardsProgress | None = Field(None, description=_PROGRESS)
    result: results.FlashcardsResult | None = Field(None, description=_RESULT)


class LessonJob(_JobViewBase):
    type: Literal["lesson"]
    progress: results.LessonProgress | None = Field(None, description=_PROGRESS)
    result: results.LessonResult | None = Field(None, description=_RESULT)


class PronunciationJob(_JobViewBase):
    type: Literal["pronunciation"]
    progress: results.PronunciationProgress | None = Field(None, description=_PROGRESS)
    result: results.PronunciationResult | None = Field(None, description=_RESULT)


class OcrJob(_JobViewBase):
    type: Literal["ocr"]
    progress: results.OcrProgress | None = Field(None, description=_PROGRESS)
    result: results.OcrResult | None = Field(None, description=_RESULT)


class PdfJob(_JobViewBase):
    type: Literal["pdf"]
    progress: results.PdfProgress | None = Field(None, description=_PROGRESS)
    result: results.PdfResult | None = Field(None, description=_RESULT)


class TtsJob(_JobViewBase):
    type: Literal["tts"]
    progress: results.TtsProgress | None = Field(None, description=_PROGRESS)
    result: results.TtsResult | None = Field(None, description=_RESULT)


# The job as GET /api/jobs/{id} shows it: `type` says which result and progress it carries.
JobView = Annotated[
    Union[FlashcardsJob, LessonJob, PronunciationJob, OcrJob, PdfJob, TtsJob],  # noqa: UP007
    Field(discriminator="type"),
]


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last one")


class Health(BaseModel):
    status: Literal["ok"]


# --- multipart request bodies (OpenAPI only; the routes parse the form themselves) ---------


def _multipart(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": required,
                        "properties": properties,
                        "additionalProperties": False,
                    },
                    "encoding": {
                        name: {"contentType": "application/octet-stream"}
                        for name, p in properties.items()
                        if p.get("format") == "binary"
                    },
                }
            },
        }
    }


_LANGUAGE_SCHEMA = {"type": "string", "pattern": r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$", "maxLength": 35}
_WEBHOOK_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 2048}
_FILE = {"type": "string", "format": "binary"}

PRONUNCIATION_BODY = _multipart(
    ["audio", "reference_text", "language"],
    {
        "audio": {
            **_FILE,
            "description": "M4A/AAC, WEBM or OGG (Opus, Vorbis), MP3, FLAC or WAV at any sample rate and channel "
            "count, recognised by its bytes; at most MAX_AUDIO_BYTES (10 MiB) and MAX_AUDIO_SECONDS (120 s)",
        },
        "reference_text": {"type": "string", "minLength": 1, "description": "What the speaker was asked to say"},
        "language": _LANGUAGE_SCHEMA,
        "webhook_url": _WEBHOOK_SCHEMA,
    },
)
IMAGE_BODY = _multipart(
    ["image"],
    {
        "image": {
            **_FILE,
            "description": "JPEG (EXIF orientation honoured), PNG, HEIC/HEIF, WEBP, GIF, BMP or TIFF, recognised by "
            "its bytes; at most MAX_IMAGE_BYTES (10 MiB) and MAX_IMAGE_PIXELS (50 million)",
        },
        "language": _LANGUAGE_SCHEMA,
        "webhook_url": _WEBHOOK_SCHEMA,
    },
)
PDF_BODY = _multipart(
    ["file"],
    {"file": {**_FILE, "description": "A PDF (recognised by its bytes)"}, "webhook_url": _WEBHOOK_SCHEMA},
)
