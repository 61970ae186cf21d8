"""Pronunciation assessment through the official ``azure-cognitiveservices-speech`` SDK.

The SDK speaks its websocket protocol to Azure (``AZURE_SPEECH_KEY`` + ``AZURE_SPEECH_REGION``)
or to any host that speaks it (``AZURE_SPEECH_HOST``: a Speech container, the sandbox's
``ws://`` endpoint). Audio goes through a push stream as 16 kHz mono 16-bit PCM, which
``workers.media.audio`` decodes from whatever the phone recorded.

Recognition runs in continuous mode (what Microsoft recommends for assessments longer than
one utterance) and the phrases are aggregated; the SDK's own blocking calls have no
deadline, so this adapter keeps its own (``AZURE_SPEECH_TIMEOUT_SECONDS``) and hands a
recogniser that overran it to a background thread to be torn down.

Errors: the SDK reports failures as a cancellation with an error code. ``TooManyRequests``
is a provider 429 (``Throttled``; the SDK does not expose ``Retry-After``, so the configured
pause applies); connection failures, timeouts and service errors are ``TransientError``;
``BadRequest`` and authentication failures fail once. No speech in the audio (``NoMatch``)
fails with ``no_speech``; audio the service cannot take fails with ``unsupported_audio``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from unilingo.errors import PermanentError, Throttled, TransientError
from unilingo.settings import get_settings
from workers.media.audio import PcmAudio

PROVIDER = "azure-speech"

# Short language codes the API accepts, mapped to the locale the service wants.
LOCALES = {
    "en": "en-US",
    "es": "es-ES",
    "fr": "fr-FR",
    "de": "de-DE",
    "it": "it-IT",
    "pt": "pt-BR",
    "ja": "ja-JP",
    "zh": "zh-CN",
    "ko": "ko-KR",
    "nl": "nl-NL",
    "ru": "ru-RU",
    "ar": "ar-SA",
    "hi": "hi-IN",
    "pl": "pl-PL",
    "sv": "sv-SE",
    "da": "da-DK",
    "fi": "fi-FI",
    "nb": "nb-NO",
    "tr": "tr-TR",
    "vi": "vi-VN",
    "th": "th-TH",
    "ca": "ca-ES",
    "ms": "ms-MY",
    "ta": "ta-IN",
}
GRANULARITIES = ("Phoneme", "Word", "FullText")


def locale(language: str | None) -> str:
    language = (language or "en-US").strip()
    if "-" in language:
        head, _, tail = language.partition("-")
        return f"{head.lower()}-{tail.upper()}"
    return LOCALES.get(language.lower(), "en-US")


# ------------------------------------------------------------------------- the call


@dataclass(frozen=True)
class AssessmentRequest:
    reference_text: str
    language: str = "en-US"
    granularity: str = "Phoneme"
    miscue: bool = True


# Properties of the SDK's native core, set by name (the Python API does not expose them):
# no reconnection attempts of its own (a 429 or 5xx at the websocket upgrade is otherwise
# retried 4 more times within a second: retrying is the runner's business, under the
# shared limiter), and a short wait for the service when stopping a session.
SDK_PROPERTIES = {
    "SPEECH-Error-MaxRetryCount": "0",
    "SPEECH-StopRecognitionTimeoutInSeconds": "2",
}


def _speech_config(speechsdk):
    settings = get_settings()
    if settings.azure_speech_region and not settings.azure_speech_host:
        config = speechsdk.SpeechConfig(subscription=settings.azure_speech_key, region=settings.azure_speech_region)
    elif settings.azure_speech_key:
        config = speechsdk.SpeechConfig(host=settings.azure_speech_endpoint(), subscription=settings.azure_speech_key)
    else:
        config = speechsdk.SpeechConfig(host=settings.azure_speech_endpoint())
    for name, value in SDK_PROPERTIES.items():
        config.set_property_by_name(name, value)
    return config


def assess(ctx, audio: PcmAudio, request: AssessmentRequest) -> dict:
    """One pronunciation assessment, under a provider permit. Returns the aggregated result."""
    with ctx.provider_call(PROVIDER) as permit:
        permit.sent()  # the SDK's websocket session starts now
        phrases = recognise(audio, request)
    return aggregate(phrases, request)


def recognise(audio: PcmAudio, request: AssessmentRequest) -> list[dict]:
    """The detailed JSON of every recognised phrase, or one of our errors.

    The SDK session runs in ``_session``, which returns plain data and has torn its SDK
    objects down before anything is raised here: an exception's traceback keeps frames
    alive, and an SDK object released later by the garbage collector blocks whichever
    thread happens to collect it while the SDK waits out its own shutdown.
    """
    settings = get_settings()
    outcome = _session(audio, request, settings.azure_speech_timeout_seconds)
    if outcome.timed_out:
        raise TransientError(
            f"Azure Speech gave no answer within {settings.azure_speech_timeout_seconds}s", code="provider_timeout"
        )
    if outcome.failure:
        raise _error(*outcome.failure)
    if not outcome.phrases:
        reason = outcome.no_match or "NotRecognized"
        raise PermanentError(f"no speech was recognised in the audio ({reason})", code="no_speech")
    return outcome.phrases


@dataclass
class _Outcome:
    phrases: list[dict]
    no_match: str | None = None
    failure: tuple[str, str] | None = None
    timed_out: bool = False


def _session(audio: PcmAudio, request: AssessmentRequest, timeout: float) -> _Outcome:
    import azure.cognitiveservices.speech as speechsdk

    config = _speech_config(speechsdk)
    config.speech_recognition_language = request.language
    stream = speechsdk.audio.PushAudioInputStream(
        stream_format=speechsdk.audio.AudioStreamFormat(
            samples_per_second=audio.sample_rate, bits_per_sample=16, channels=1
        )
    )
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=config, audio_config=speechsdk.audio.AudioConfig(stream=stream)
    )
    granularity = {
        "Phoneme": speechsdk.PronunciationAssessmentGranularity.Phoneme,
        "Word": speechsdk.PronunciationAssessmentGranularity.Word,
        "FullText": speechsdk.PronunciationAssessmentGranularity.FullText,
    }[request.granularity]
    speechsdk.PronunciationAssessmentConfig(
        reference_text=request.reference_text,
        grading_system=speechsdk.PronunciationAssessmentGradingSystem.HundredMark,
        granularity=granularity,
        enable_miscue=request.miscue,
    ).apply_to(recognizer)

    done = threading.Event()
    outcome = _Outcome(phrases=[])

    def recognized(evt) -> None:
        result = evt.result
        if result.reason == speechsdk.ResultReason.RecognizedSpeech:
            raw = result.properties.get(speechsdk.PropertyId.SpeechServiceResponse_JsonResult)
            if raw:
                outcome.phrases.append(json.loads(raw))
        elif result.reason == speechsdk.ResultReason.NoMatch and outcome.no_match is None:
            outcome.no_match = result.no_match_details.reason.name

    def canceled(evt) -> None:
        details = evt.cancellation_details
        if details.reason == speechsdk.CancellationReason.Error and outcome.failure is None:
            outcome.failure = (details.code.name, details.error_details or "")
        done.set()  # or EndOfStream: all the audio was processed

    recognizer.recognized.connect(recognized)
    recognizer.canceled.connect(canceled)
    recognizer.session_stopped.connect(lambda evt: done.set())
    try:
        recognizer.start_continuous_recognition_async().get()
        stream.write(audio.pcm)
        stream.close()
        outcome.timed_out = not done.wait(timeout)
        if outcome.timed_out or outcome.failure is not None:
            # Stopping a session whose service hangs waits for it, and releasing one that
            # failed waits out the SDK's shutdown: either way, not on the job's thread.
            _release_in_background([recognizer, stream, config], stop=outcome.timed_out)
        else:
            recognizer.stop_continuous_recognition_async().get()
            _disconnect(recognizer)
    finally:
        del recognizer, stream, config  # released here, in this order (unless handed over)
    return outcome


def _disconnect(recognizer) -> None:
    for signal in (recognizer.recognized, recognizer.canceled, recognizer.session_stopped):
        signal.disconnect_all()


def _release_in_background(objects: list, stop: bool) -> None:
    """Release (after stopping, if asked) a recogniser's SDK objects off the job's thread.

    After an error the SDK has stopped by itself, and stopping again would make the release
    wait out its 10 s shutdown timeout. Not a daemon thread: killing native SDK threads at
    interpreter exit aborts the process.
    """

    def release() -> None:
        try:
            if stop:
                objects[0].stop_continuous_recognition_async().get()
            _disconnect(objects[0])
        except Exception:
            pass
        objects.clear()

    threading.Thread(target=release, name="azure-speech-release").start()


def _error(code: str, details: str) -> Exception:
    if code == "TooManyRequests":
        return Throttled(PROVIDER, get_settings().azure_speech_retry_after_seconds, "provider_429")
    if code in (
        "ConnectionFailure",
        "ServiceTimeout",
        "ServiceError",
        "ServiceUnavailable",
        "RuntimeError",
        "ServiceRedirectTemporary",
    ):
        return TransientError(f"Azure Speech: {code}: {details}", code="provider_unavailable")
    if code == "BadRequest" and "audio" in details.lower():
        return PermanentError(f"Azure Speech could not take the audio: {details}", code="unsupported_audio")
    if code == "BadRequest":
        return PermanentError(f"Azure Speech refused the request: {details}", code="provider_bad_request")
    return PermanentError(f"Azure Speech: {code}: {details}", code="provider_rejected")


# ------------------------------------------------------------------------- the result


def _seconds(ticks: int | None) -> float:
    return round((ticks or 0) / 10_000_000, 3)


def aggregate(phrases: list[dict], request: AssessmentRequest) -> dict:
    """Scores, words and per-word errors over all phrases, as the app shows them."""
    words: list[dict] = []
    texts: list[str] = []
    weighted = {"accuracy": 0.0, "fluency": 0.0, "pronunciation": 0.0, "completeness": 0.0}
    total = 0.0
    for phrase in phrases:
        best = (phrase.get("NBest") or [{}])[0]
        texts.append(best.get("Display") or phrase.get("DisplayText") or "")
        pa = best.get("PronunciationAssessment") or {}
        weight = max(_seconds(phrase.get("Duration")), 0.001)
        total += weight
        weighted["accuracy"] += weight * float(pa.get("AccuracyScore", 0.0))
        weighted["fluency"] += weight * float(pa.get("FluencyScore", 0.0))
        weighted["pronunciation"] += weight * float(pa.get("PronScore", 0.0))
        weighted["completeness"] += weight * float(pa.get("CompletenessScore", 0.0))
        for word in best.get("Words") or []:
            wpa = word.get("PronunciationAssessment") or {}
            entry = {
                "word": word.get("Word", ""),
                "accuracy": wpa.get("AccuracyScore"),
                "error_type": wpa.get("ErrorType", "None"),
                "offset_s": _seconds(word.get("Offset")),
                "duration_s": _seconds(word.get("Duration")),
            }
            if word.get("Phonemes"):
                entry["phonemes"] = [
                    {
                        "phoneme": p.get("Phoneme", ""),
                        "accuracy": (p.get("PronunciationAssessment") or {}).get("AccuracyScore"),
                    }
                    for p in word["Phonemes"]
                ]
            words.append(entry)
    scores = {name: round(value / total, 1) for name, value in weighted.items()}
    if len(phrases) > 1 and request.reference_text and request.miscue:
        reference_words = len(request.reference_text.split())
        said = sum(1 for w in words if w["error_type"] in ("None", "Mispronunciation"))
        scores["completeness"] = round(min(100.0, 100.0 * said / max(1, reference_words)), 1)
    errors = [
        {"word": w["word"], "error_type": w["error_type"], "accuracy": w["accuracy"]}
        for w in words
        if w["error_type"] not in ("None", None)
    ]
    counts: dict[str, int] = {}
    for error in errors:
        counts[error["error_type"]] = counts.get(error["error_type"], 0) + 1
    return {
        "reference_text": request.reference_text,
        "language": request.language,
        "granularity": request.granularity,
        "miscue": request.miscue,
        "recognized_text": " ".join(t for t in texts if t).strip(),
        "scores": {
            "accuracy": scores["accuracy"],
            "fluency": scores["fluency"],
            "completeness": scores["completeness"],
            "pronunciation": scores["pronunciation"],
        },
        "words": words,
        "errors": errors,
        "error_counts": counts,
    }
