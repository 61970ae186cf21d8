"""Azure Speech's REST API for short audio, with pronunciation assessment.

    POST /speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed
    Ocp-Apim-Subscription-Key: ...
    Content-Type: audio/wav; codecs=audio/pcm; samplerate=16000
    Pronunciation-Assessment: base64({"ReferenceText": ..., "GradingSystem": ..., ...})

English (``en-US``, ``en-GB``...) is recognised for real (``sandbox.recognition``:
PocketSphinx and its US English model): the transcript is what the engine heard, and the
reference text is lined up against it word by word; a word heard as the reference has it
scores by how alike their phones are, a reference word not heard is omitted, a heard word
not in the reference is inserted. Fluency comes from the voice activity (pauses, speaking
rate), clarity from the signal to noise. Say something else and the accuracy and
completeness fall.

Other languages have no recognition model in any package here, so they fall back to
judging only what can be measured without one: where the speaker is voiced, how long for,
how loud over the pauses. Against the reference text that gives what was said (voice for
the whole text, or only its start: the rest is omitted; far more voice than the text
needs: insertions); the transcript is then the reference's words, not a recognition. The
REST answer's ``X-Sandbox-Recognizer`` header says which was used.

Scores are deterministic for a given recording and text. Silence answers
``InitialSilenceTimeout`` (5 s or more of it) or ``NoMatch``, as Azure does, and so does
English speech in which the engine hears no word.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox import recognition
from sandbox.audio import Pcm, UnsupportedAudio, VoiceActivity, read_wav, voice_activity
from sandbox.azure_common import access_denied, error_response, has_credentials
from sandbox.profiles import AZURE_SPEECH, LATENCIES
from sandbox.runtime import Sandbox, stable_fraction

TICKS_PER_S = 10_000_000  # Azure reports offsets and durations in 100 ns ticks
INITIAL_SILENCE_TIMEOUT_S = 5.0
MISPRONUNCIATION_BELOW = 60  # Azure's accuracy threshold for ErrorType "Mispronunciation"
HESITATION_S = 0.4  # a pause inside speech longer than this breaks fluency
PLACEHOLDER_WORD_S = 0.35
PLACEHOLDER_WORDS = ("hello", "thank", "you", "good", "morning", "please", "water", "friend", "today", "study")
FILLERS = ("um", "uh")
GRADING_SYSTEMS = ("HundredMark", "FivePoint")
GRANULARITIES = ("Phoneme", "Word", "FullText")
RECOGNITION_MODES = ("conversation", "interactive", "dictation")


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class AssessmentConfig:
    reference_text: str = ""
    grading_system: str = "HundredMark"
    granularity: str = "Phoneme"
    enable_miscue: bool = False


def parse_assessment_header(value: str) -> AssessmentConfig:
    try:
        params = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as error:
        raise BadRequest("Pronunciation-Assessment header must be base64-encoded JSON") from error
    if not isinstance(params, dict):
        raise BadRequest("Pronunciation-Assessment header must encode a JSON object")
    config = AssessmentConfig(
        reference_text=str(params.get("ReferenceText") or ""),
        grading_system=params.get("GradingSystem", "HundredMark"),
        granularity=params.get("Granularity", "Phoneme"),
        enable_miscue=params.get("EnableMiscue") in (True, "True", "true"),
    )
    if config.grading_system not in GRADING_SYSTEMS:
        raise BadRequest(f"GradingSystem must be one of {', '.join(GRADING_SYSTEMS)}")
    if config.granularity not in GRANULARITIES:
        raise BadRequest(f"Granularity must be one of {', '.join(GRANULARITIES)}")
    return config


# ---------------------------------------------------------------- assessment


@dataclass
class AssessedWord:
    word: str
    error_type: str  # None, Omission, Insertion, Mispronunciation
    accuracy: float
    spoken: bool = True
    start_s: float = 0.0
    duration_s: float = 0.0


def expected_duration_s(word: str) -> float:
    """How long a fluent speaker takes over a word: roughly 65 ms a letter plus an onset."""
    return 0.1 + 0.065 * len(word)


def _ticks(seconds: float) -> int:
    return int(round(seconds * TICKS_PER_S))


def _voiced_to_absolute(activity: VoiceActivity, voiced_s: float) -> float:
    """Where in the recording the speaker had been voiced for ``voiced_s`` seconds."""
    for stretch in activity.stretches:
        if voiced_s <= stretch.duration_s:
            return stretch.start_s + voiced_s
        voiced_s -= stretch.duration_s
    return activity.stretches[-1].end_s


def _no_speech(pcm: Pcm) -> dict:
    status = "InitialSilenceTimeout" if pcm.duration_s >= INITIAL_SILENCE_TIMEOUT_S else "NoMatch"
    return {
        "RecognitionStatus": status,
        "Offset": _ticks(min(pcm.duration_s, INITIAL_SILENCE_TIMEOUT_S)),
        "Duration": 0,
    }


def listen(pcm: Pcm, language: str | None) -> tuple[VoiceActivity, list[recognition.HeardWord] | None]:
    """Voice activity, and the words heard where there is a model for the language (blocking)."""
    activity = voice_activity(pcm)
    if not recognition.has_model(language) or not activity.stretches:
        return activity, None
    return activity, recognition.recognise(pcm)


def recognizer_name(heard: list | None) -> str:
    return recognition.ENGINE if heard is not None else "voice-activity"


def assess(
    pcm: Pcm, activity: VoiceActivity, config: AssessmentConfig | None, heard: list[recognition.HeardWord] | None = None
) -> dict:
    """The recognition result Azure would give (``format=detailed``).

    ``heard``: the recogniser's words; None where the language has no model (the fallback).
    """
    stretches = activity.stretches
    if not stretches or stretches[0].start_s >= INITIAL_SILENCE_TIMEOUT_S:
        return _no_speech(pcm)
    if heard is not None:
        return _assess_heard(pcm, activity, config, heard)

    voiced_s = activity.voiced_s
    reference = re.findall(r"[\w'’-]+", config.reference_text.lower()) if config else []
    if not reference:
        count = max(1, round(voiced_s / PLACEHOLDER_WORD_S))
        reference = [
            PLACEHOLDER_WORDS[int(stable_fraction(pcm.digest, i) * len(PLACEHOLDER_WORDS))] for i in range(count)
        ]
    miscue = bool(config and config.enable_miscue)
    expected_s = sum(expected_duration_s(word) for word in reference)
    coverage = voiced_s / expected_s

    # Voice for under three quarters of the text: the speaker stopped early.
    spoken_count = len(reference) if coverage >= 0.75 else max(1, math.floor(len(reference) * coverage / 0.75))
    # Far more voice than the text needs: words that are not in it.
    inserted_count = min(len(reference), round((coverage - 1.3) * len(reference))) if miscue and coverage > 1.6 else 0

    clarity = min(1.0, max(0.0, (activity.snr_db - 10.0) / 25.0))
    spoken_expected_s = sum(expected_duration_s(word) for word in reference[:spoken_count])
    rate = voiced_s / (spoken_expected_s + inserted_count * 0.3)
    rate_penalty = 15.0 * abs(math.log(rate))

    words: list[AssessedWord] = []
    for index, word in enumerate(reference):
        if index >= spoken_count:
            # Without miscue detection Azure does not mark omissions; the word just scores badly.
            words.append(AssessedWord(word, "Omission" if miscue else "Mispronunciation", 0.0, spoken=False))
            continue
        jitter = 25.0 * stable_fraction(pcm.digest, word, index) - 20.0
        accuracy = round(min(100.0, max(0.0, 60.0 + 38.0 * clarity + jitter - rate_penalty)))
        words.append(AssessedWord(word, "None" if accuracy >= MISPRONUNCIATION_BELOW else "Mispronunciation", accuracy))
    words += [AssessedWord(FILLERS[i % len(FILLERS)], "Insertion", 0.0) for i in range(inserted_count)]

    # Lay the pronounced words (and insertions) over the voiced time, in proportion to length.
    pronounced = [word for word in words if word.spoken]
    total = sum(expected_duration_s(word.word) for word in pronounced) or 1.0
    elapsed = 0.0
    for word in pronounced:
        share = expected_duration_s(word.word) / total * voiced_s
        start = _voiced_to_absolute(activity, elapsed)
        word.start_s, word.duration_s = start, _voiced_to_absolute(activity, elapsed + share) - start
        elapsed += share

    gaps = [b.start_s - a.end_s for a, b in zip(stretches, stretches[1:], strict=False)]
    hesitations = sum(1 for gap in gaps if gap > HESITATION_S)
    fluency = min(100.0, max(0.0, 100.0 - 10.0 * hesitations - 60.0 * abs(math.log(rate))))
    assessed = [word for word in words if word.error_type != "Insertion"]
    completeness = 100.0 * spoken_count / len(reference)
    said = [word for word in assessed if word.spoken]
    accuracy = sum(word.accuracy for word in said) / len(said) if said else 0.0
    return _recognized(
        " ".join(word.word for word in pronounced),
        confidence=0.55 + 0.4 * clarity * min(1.0, coverage),
        scores=(accuracy, fluency, completeness),
        words=words,
        span=(stretches[0].start_s, stretches[-1].end_s),
        config=config,
        pcm=pcm,
        activity=activity,
    )


def _recognized(
    lexical: str,
    *,
    confidence: float,
    scores: tuple[float, float, float],
    words: list[AssessedWord],
    span: tuple[float, float],
    config: AssessmentConfig | None,
    pcm: Pcm,
    activity: VoiceActivity,
) -> dict:
    """Azure's ``Success`` answer: the best hypothesis, its scores when assessed, its words."""
    accuracy, fluency, completeness = scores
    pron = 0.6 * accuracy + 0.2 * fluency + 0.2 * completeness
    display = (lexical[:1].upper() + lexical[1:] + ".") if lexical else ""
    best: dict = {
        "Confidence": round(confidence, 8),
        "Lexical": lexical,
        "ITN": lexical,
        "MaskedITN": lexical,
        "Display": display,
    }
    if config is not None:
        grade = _grader(config.grading_system)
        best.update(
            AccuracyScore=grade(accuracy),
            FluencyScore=grade(fluency),
            CompletenessScore=grade(completeness),
            PronScore=grade(pron),
        )
    best["Words"] = [_word_json(word, config, pcm.digest) for word in words]
    start, end = span
    return {
        "RecognitionStatus": "Success",
        "Offset": _ticks(start),
        "Duration": _ticks(end - start),
        "DisplayText": display,
        "SNR": activity.snr_db,
        "NBest": [best],
    }


def _fluency(activity: VoiceActivity, expected_s: float) -> tuple[float, float]:
    """(fluency, speaking-rate ratio): pauses inside speech and a pace far from fluent cost."""
    stretches = activity.stretches
    rate = activity.voiced_s / max(expected_s, 0.1)
    gaps = [b.start_s - a.end_s for a, b in zip(stretches, stretches[1:], strict=False)]
    hesitations = sum(1 for gap in gaps if gap > HESITATION_S)
    return min(100.0, max(0.0, 100.0 - 10.0 * hesitations - 60.0 * abs(math.log(rate)))), rate


def _assess_heard(
    pcm: Pcm, activity: VoiceActivity, config: AssessmentConfig | None, heard: list[recognition.HeardWord]
) -> dict:
    """Scores from what the recogniser heard, lined up against the reference text."""
    if not heard:
        return _no_speech(pcm)
    reference = re.findall(r"[\w'’-]+", config.reference_text.lower()) if config else []
    miscue = bool(config and config.enable_miscue)
    clarity = min(1.0, max(0.0, (activity.snr_db - 10.0) / 25.0))
    words: list[AssessedWord] = []
    if reference:
        for pair in recognition.align(reference, heard):
            if pair.reference is not None and pair.heard is not None:
                accuracy = round(100.0 * pair.similarity * (0.85 + 0.15 * clarity))
                error = "None" if accuracy >= MISPRONUNCIATION_BELOW else "Mispronunciation"
                words.append(
                    AssessedWord(
                        pair.reference, error, accuracy, True, pair.heard.start_s, pair.heard.end_s - pair.heard.start_s
                    )
                )
            elif pair.reference is not None:
                # Without miscue detection Azure does not mark omissions; the word just scores badly.
                words.append(
                    AssessedWord(pair.reference, "Omission" if miscue else "Mispronunciation", 0.0, spoken=False)
                )
            elif miscue and pair.heard is not None:
                words.append(
                    AssessedWord(
                        pair.heard.word,
                        "Insertion",
                        0.0,
                        True,
                        pair.heard.start_s,
                        pair.heard.end_s - pair.heard.start_s,
                    )
                )
    else:
        words = [AssessedWord(w.word, "None", 100.0, True, w.start_s, w.end_s - w.start_s) for w in heard]

    assessed = [word for word in words if word.error_type != "Insertion"]
    said = [word for word in assessed if word.spoken]
    completeness = 100.0 * len(said) / len(assessed) if assessed else 0.0
    accuracy = sum(word.accuracy for word in said) / len(said) if said else 0.0
    # Fluency is how the speaker spoke, whatever they said: pauses, and pace against the heard words.
    fluency, _rate = _fluency(activity, sum(expected_duration_s(word.word) for word in heard))
    return _recognized(
        " ".join(word.word for word in heard),
        confidence=0.55 + 0.4 * clarity * completeness / 100.0,
        scores=(accuracy, fluency, completeness),
        words=words,
        span=(heard[0].start_s, heard[-1].end_s),
        config=config,
        pcm=pcm,
        activity=activity,
    )


def _grader(grading_system: str):
    if grading_system == "FivePoint":
        return lambda score: round(score / 20.0, 1)
    return lambda score: round(score, 1)


def _word_json(word: AssessedWord, config: AssessmentConfig | None, digest: str) -> dict:
    entry: dict = {
        "Word": word.word,
        "Offset": _ticks(word.start_s),
        "Duration": _ticks(word.duration_s),
        "Confidence": 0.0,
    }
    if config is None or config.granularity == "FullText":
        return entry
    grade = _grader(config.grading_system)
    entry["AccuracyScore"] = grade(word.accuracy)
    entry["ErrorType"] = word.error_type
    if config.granularity == "Phoneme" and word.spoken and word.error_type != "Insertion":
        # Letter groups stand in for phonemes: the sandbox has no pronunciation lexicon.
        sounds = re.findall(r"[aeiouy]+|[^aeiouy]+", word.word) or [word.word]
        step = word.duration_s / len(sounds)
        entry["Phonemes"] = [
            {
                "Phoneme": sound,
                "AccuracyScore": grade(
                    min(100.0, max(0.0, word.accuracy + 20 * stable_fraction(digest, word.word, i) - 10))
                ),
                "Offset": _ticks(word.start_s + i * step),
                "Duration": _ticks(step),
            }
            for i, sound in enumerate(sounds)
        ]
    return entry


def real_latency(pcm: Pcm) -> float:
    """Azure takes about half the audio's length on top of a start-up cost."""
    return LATENCIES[AZURE_SPEECH].clamp(2.0 + 0.5 * pcm.duration_s + stable_fraction("latency", pcm.digest))


def simple_result(result: dict) -> dict:
    """``format=simple``: the same recognition, without NBest."""
    return {key: result[key] for key in ("RecognitionStatus", "DisplayText", "Offset", "Duration") if key in result}


# ---------------------------------------------------------------- route


def create_router(sandbox: Sandbox) -> APIRouter:
    router = APIRouter()

    @router.post("/speech/recognition/{mode}/cognitiveservices/v1")
    async def recognize(mode: str, request: Request) -> Response:
        if mode not in RECOGNITION_MODES:
            return error_response(404, "NotFound", f"Unknown recognition mode {mode!r}")
        sandbox.gate.arrive(AZURE_SPEECH)
        if not has_credentials(request):
            return access_denied()
        try:
            pcm, config, detailed = await _read_request(request)
        except BadRequest as error:
            return error_response(400, "BadRequest", str(error))
        latency_s = sandbox.scaled(real_latency(pcm))
        with sandbox.gate.admit(AZURE_SPEECH, expected_s=latency_s) as ticket:
            started = asyncio.get_running_loop().time()
            # Recognition takes up to about the audio's length: off the loop, and out of the
            # provider's latency rather than on top of it.
            activity, heard = await asyncio.to_thread(listen, pcm, request.query_params.get("language"))
            result = assess(pcm, activity, config, heard)
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, latency_s + ticket.extra_delay_s - elapsed))
        body = result if detailed else simple_result(result)
        return Response(
            orjson.dumps(body),
            media_type="application/json; charset=utf-8",
            headers={"X-Sandbox-Recognizer": recognizer_name(heard)},
        )

    return router


async def _read_request(request: Request) -> tuple[Pcm, AssessmentConfig | None, bool]:
    language = request.query_params.get("language", "")
    if not re.fullmatch(r"[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*", language):
        raise BadRequest("The 'language' query parameter is missing or is not a language code such as en-US")
    output_format = request.query_params.get("format", "simple").lower()
    if output_format not in ("simple", "detailed"):
        raise BadRequest("The 'format' query parameter must be 'simple' or 'detailed'")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("audio/wav", "audio/x-wav", "audio/wave"):
        raise BadRequest(
            f"Unsupported Content-Type {content_type or '(none)'!r}: the sandbox accepts "
            "'audio/wav; codecs=audio/pcm; samplerate=16000'"
        )
    header = request.headers.get("pronunciation-assessment")
    config = parse_assessment_header(header) if header else None
    data = await request.body()
    try:
        pcm = await asyncio.to_thread(read_wav, data)
    except UnsupportedAudio as error:
        raise BadRequest(f"Invalid audio: {error}") from error
    return pcm, config, output_format == "detailed"
