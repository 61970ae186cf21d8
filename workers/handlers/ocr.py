"""OCR: the uploaded photo, made upright and Read-API-ready, read by Azure AI Vision: lines and words with boxes."""

from __future__ import annotations

from unilingo.errors import PermanentError
from unilingo.settings import get_settings
from workers.media import images
from workers.providers import azure_vision


def read_image(ctx) -> dict:
    # Converted before any provider call: an unreadable, huge or tiny image fails here, unpaid.
    image = images.prepare(ctx.upload(), get_settings().max_image_pixels)
    language = read_language(ctx.params.get("language"))
    result = azure_vision.layout(azure_vision.read(ctx, image.data, language))
    if not result["text"].strip():
        raise PermanentError("no text was found in the image", code="no_text")
    result["language"] = language
    result["image"] = {
        "source_format": image.source_format.lower(),
        "converted": image.converted,
        "width": image.width,
        "height": image.height,
    }
    return result


def read_language(language: str | None) -> str | None:
    """Read v3.2 takes BCP-47 primary tags ("en", "es"), plus zh-Hans/zh-Hant and sr-Cyrl/sr-Latn."""
    if not language:
        return None
    head, _, tail = language.strip().partition("-")
    if head.lower() in ("zh", "sr") and tail:
        return f"{head.lower()}-{tail[:1].upper()}{tail[1:].lower()}"
    return head.lower()
