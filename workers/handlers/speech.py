"""Pronunciation assessment: the uploaded recording, in any format phones record, scored against the reference text."""

from __future__ import annotations

from unilingo.errors import PermanentError
from unilingo.settings import get_settings
from workers.media import audio as media_audio
from workers.providers import azure_speech


def pronunciation(ctx) -> dict:
    params = ctx.params
    reference = " ".join(str(params.get("reference_text") or "").split())
    if not reference:
        raise PermanentError("reference_text is required", code="invalid_input")
    granularity = str(params.get("granularity") or "Phoneme")
    if granularity not in azure_speech.GRANULARITIES:
        raise PermanentError(
            f"granularity must be one of {', '.join(azure_speech.GRANULARITIES)}", code="invalid_input"
        )
    miscue = params.get("miscue")
    request = azure_speech.AssessmentRequest(
        reference_text=reference,
        language=azure_speech.locale(params.get("language")),
        granularity=granularity,
        miscue=True if miscue is None else bool(miscue),
    )
    # Decoded before any provider call: undecodable, silent or too long fails here, unpaid.
    decoded = media_audio.decode(ctx.upload(), get_settings().max_audio_seconds)
    audio = decoded.audio
    ctx.progress(step="assessing", audio_seconds=round(audio.seconds, 2))
    result = azure_speech.assess(ctx, audio, request)
    result["audio_seconds"] = round(audio.seconds, 2)
    result["audio_codec"] = decoded.codec
    return result
