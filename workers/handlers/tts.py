"""Text to speech: Polly synthesises, S3 keeps the audio, the job returns a presigned URL."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from unilingo.errors import PermanentError
from unilingo.settings import get_settings
from workers.providers import polly

MAX_SSML_CHARS = 6_000  # Polly's limit on the whole request text, tags included


def synthesize(ctx) -> dict:
    settings = get_settings()
    text = str(ctx.params.get("text") or "").strip()
    if not text:
        raise PermanentError("text is required", code="invalid_input")
    ssml = polly.is_ssml(text)
    if ssml:
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError as exc:
            raise PermanentError(f"the SSML is not well-formed: {exc}", code="invalid_ssml") from exc
        spoken = "".join(root.itertext())
        if len(text) > MAX_SSML_CHARS:
            raise PermanentError(f"the SSML is longer than {MAX_SSML_CHARS} characters", code="text_too_long")
    else:
        spoken = text
    if len(spoken) > settings.max_tts_chars:
        raise PermanentError(f"the text is longer than {settings.max_tts_chars} characters", code="text_too_long")
    voice, language = polly.voice_for(ctx.params.get("language"), ctx.params.get("voice"))
    audio, content_type = polly.synthesize(ctx, text, voice, language)
    if not audio:
        raise PermanentError("Polly returned no audio", code="tts_empty")
    ctx.progress(step="uploading", bytes=len(audio))
    extension = polly.EXTENSIONS.get(settings.polly_output_format, "bin")
    # Keyed by the job's random id alone: a URL handed to a phone names no user.
    stored = polly.store(ctx, f"tts/{ctx.job.job_id}.{extension}", audio, content_type)
    return {
        **stored,
        "voice": voice,
        "language": language,
        "text_type": "ssml" if ssml else "text",
        "characters": len(spoken),
        "content_type": content_type,
        "bytes": len(audio),
    }
