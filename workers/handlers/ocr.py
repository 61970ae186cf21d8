"""OCR: the uploaded image read by Azure AI Vision (Read API), lines and words with boxes."""

from __future__ import annotations

from unilingo.errors import PermanentError
from workers.providers import azure_vision


def read_image(ctx) -> dict:
    image = ctx.upload()
    language = read_language(ctx.params.get("language"))
    result = azure_vision.layout(azure_vision.read(ctx, image, language))
    if not result["text"].strip():
        raise PermanentError("no text was found in the image", code="no_text")
    result["language"] = language
    return result


def read_language(language: str | None) -> str | None:
    """Read v3.2 takes BCP-47 primary tags ("en", "es"), plus zh-Hans/zh-Hant and sr-Cyrl/sr-Latn."""
    if not language:
        return None
    head, _, tail = language.strip().partition("-")
    if head.lower() in ("zh", "sr") and tail:
        return f"{head.lower()}-{tail[:1].upper()}{tail[1:].lower()}"
    return head.lower()
