"""The API tier's configuration: the shared ``Settings`` plus what the API derives from them."""

from __future__ import annotations

from dataclasses import dataclass

from api.validation import MULTIPART_OVERHEAD
from unilingo.settings import Settings, get_settings

__all__ = ["ApiConfig", "Settings", "get_settings"]

REFERENCE_TEXT_MAX_CHARS = 1_000  # pronunciation reference text (a sentence or a short paragraph)
TOPIC_MAX_CHARS = 500
SUBJECT_MAX_CHARS = 200
JOB_LIST_MAX = 200

UPLOAD_PATHS = {
    "/api/pronunciation-assess": "max_audio_bytes",
    "/api/process-image": "max_image_bytes",
    "/api/process-pdf": "max_pdf_bytes",
}


@dataclass(frozen=True)
class ApiConfig:
    settings: Settings
    body_caps: dict[str, int]  # request body byte caps by path (uploads)
    json_body_cap: int  # every other request body

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiConfig:
        caps = {path: getattr(settings, name) + MULTIPART_OVERHEAD for path, name in UPLOAD_PATHS.items()}
        # A JSON string may escape each character as \\uXXXX (twice for a surrogate pair).
        longest_text = max(settings.max_text_chars, settings.max_tts_chars)
        json_cap = max(256 * 1024, longest_text * 12 + 64 * 1024)
        return cls(settings=settings, body_caps=caps, json_body_cap=json_cap)

    def url(self, path: str) -> str:
        return f"{self.settings.public_base_url.rstrip('/')}{path}"
