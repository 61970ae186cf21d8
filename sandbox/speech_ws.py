"""Azure Speech over ``ws://``, as a local Speech container answers the real SDK.

``speechsdk.SpeechConfig(host="ws://127.0.0.1:PORT")`` makes the SDK open a websocket
(subprotocol ``USP``) to ``/speech/recognition/{interactive|conversation|dictation}/
cognitiveservices/v1`` and speak Microsoft's "USP" protocol on it:

* client → service, text frames: ``Path:speech.config`` (SDK and audio description),
  ``Path:speech.context`` (the pronunciation assessment configuration under
  ``phraseDetection.enrichment.pronunciationAssessment``), ``Path:telemetry``;
* client → service, binary frames: a 2-byte big-endian header length, the headers
  (``Path:audio``, ``X-RequestId``, ``X-StreamId``...), then audio. The first frame of a
  turn carries the RIFF/WAVE header, an empty frame ends the audio;
* service → client, text frames with ``X-RequestId``, ``Path`` and ``Content-Type``
  headers, a blank line and a JSON body: ``turn.start``, ``speech.startDetected``,
  ``speech.hypothesis``, ``speech.phrase`` (``RecognitionStatus`` and, in the detailed
  format, ``NBest`` with ``PronunciationAssessment`` and per-word/per-phoneme scores),
  ``speech.endDetected``, ``turn.end``.

The recognition and its scores are the REST emulation's (``sandbox.azure_speech.listen``
and ``assess``: PocketSphinx for English, voice activity alone for the languages without a
model; the language is the URL's ``language``), so a recording scores the same through the SDK
and through the REST API; only the JSON shape differs (the SDK's nests the scores under
``PronunciationAssessment``). Silence answers ``InitialSilenceTimeout``/``NoMatch``, which
the SDK reports as ``ResultReason.NoMatch``; audio other than 16-bit PCM answers
``BadRequest``, which it reports as a cancellation with ``CancellationErrorCode.BadRequest``.

Quotas, faults and stats go through the sandbox's gate under ``azure-speech``, one
admission per connection (the SDK opens one per recogniser): a refusal is the HTTP answer
to the websocket upgrade (``429`` with ``Retry-After``, or ``500``), which the SDK reports
as ``TooManyRequests`` / ``ServiceError``; a "timeout" fault accepts the connection, holds
it without an answer and drops it. Unilingo v1's 2-10 s latency (scaled) passes between the
end of the audio and the final phrase.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
import sys
import uuid
from array import array
from dataclasses import dataclass, field

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.responses import Response

from sandbox import azure_speech as speech_rest
from sandbox.audio import Pcm
from sandbox.azure_speech import GRADING_SYSTEMS, GRANULARITIES, RECOGNITION_MODES, AssessmentConfig
from sandbox.gate import HangUp, Refusal
from sandbox.profiles import AZURE_SPEECH, LATENCIES
from sandbox.runtime import Sandbox, stable_fraction

MAX_TURN_BYTES = 64 * 1024 * 1024  # about 35 minutes of 16 kHz audio: plenty for one turn


# ------------------------------------------------------------------------- USP framing


def text_message(path: str, request_id: str, body: dict) -> str:
    return (
        f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\nPath:{path}\r\n\r\n"
        + json.dumps(body, separators=(",", ":"))
    )


def parse_text(message: str) -> tuple[dict[str, str], str]:
    head, _, body = message.partition("\r\n\r\n")
    return _headers(head), body


def parse_binary(message: bytes) -> tuple[dict[str, str], bytes]:
    if len(message) < 2:
        return {}, b""
    size = int.from_bytes(message[:2], "big")
    return _headers(message[2 : 2 + size].decode("utf-8", "replace")), message[2 + size :]


def _headers(head: str) -> dict[str, str]:
    out = {}
    for line in head.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


# ------------------------------------------------------------------------- audio


@dataclass
class Audio:
    sample_rate: int = 16_000
    channels: int = 1
    bits: int = 16
    fmt: int = 1  # WAVE_FORMAT_PCM
    pcm: bytearray = field(default_factory=bytearray)
    header_seen: bool = False

    def feed(self, chunk: bytes) -> None:
        if not self.header_seen and chunk[:4] == b"RIFF" and chunk[8:12] == b"WAVE":
            self.header_seen = True
            chunk = self._parse_header(chunk)
        self.pcm += chunk

    def _parse_header(self, chunk: bytes) -> bytes:
        pos = 12
        while pos + 8 <= len(chunk):
            kind, size = chunk[pos : pos + 4], struct.unpack("<I", chunk[pos + 4 : pos + 8])[0]
            if kind == b"fmt ":
                self.fmt, self.channels, self.sample_rate, _, _, self.bits = struct.unpack(
                    "<HHIIHH", chunk[pos + 8 : pos + 24]
                )
            elif kind == b"data":
                return chunk[pos + 8 :]
            pos += 8 + size + (size & 1)
        return b""

    @property
    def supported(self) -> bool:
        return self.fmt == 1 and self.bits == 16 and 1 <= self.channels <= 2 and 8_000 <= self.sample_rate <= 48_000


# ------------------------------------------------------------------------- assessment


def assessment_config(context: dict) -> AssessmentConfig | None:
    """``speech.context``'s pronunciation assessment, as the REST emulation takes it."""
    pa = ((context.get("phraseDetection") or {}).get("enrichment") or {}).get("pronunciationAssessment")
    if not isinstance(pa, dict):
        return None
    granularity = pa.get("granularity") or "Phoneme"
    grading = pa.get("gradingSystem") or "HundredMark"
    return AssessmentConfig(
        reference_text=str(pa.get("referenceText") or ""),
        grading_system=grading if grading in GRADING_SYSTEMS else "HundredMark",
        granularity=granularity if granularity in GRANULARITIES else "Phoneme",
        enable_miscue=bool(pa.get("enableMiscue")),
    )


_PHRASE_SCORES = ("AccuracyScore", "FluencyScore", "CompletenessScore", "PronScore")


def sdk_phrase(rest: dict) -> dict:
    """The REST API's detailed result in the shape the service sends the SDK over USP.

    Same recognition and scores (``sandbox.azure_speech.assess``); the SDK's JSON nests
    the scores under ``PronunciationAssessment`` at phrase, word and phoneme level.
    """
    phrase = json.loads(json.dumps(rest))
    for best in phrase.get("NBest") or []:
        scores = {key: best.pop(key) for key in _PHRASE_SCORES if key in best}
        if scores:
            best["PronunciationAssessment"] = scores
        for word in best.get("Words") or []:
            nested = {key: word.pop(key) for key in ("AccuracyScore", "ErrorType") if key in word}
            if nested:
                word["PronunciationAssessment"] = nested
            for phoneme in word.get("Phonemes") or []:
                if "AccuracyScore" in phoneme:
                    phoneme["PronunciationAssessment"] = {"AccuracyScore": phoneme.pop("AccuracyScore")}
    return phrase


def recognise(audio: Audio, config: AssessmentConfig | None, language: str | None = None) -> dict:
    """The ``speech.phrase`` body for one turn's audio (detailed format); blocking."""
    if not audio.supported:
        return {"RecognitionStatus": "BadRequest", "Offset": 0, "Duration": 0}
    samples = array("h")
    pcm = bytes(audio.pcm[: len(audio.pcm) - len(audio.pcm) % (2 * audio.channels)])
    samples.frombytes(pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    if audio.channels > 1:
        samples = samples[:: audio.channels]
    recording = Pcm(audio.sample_rate, samples, hashlib.sha256(pcm).hexdigest())
    activity, heard = speech_rest.listen(recording, language)
    return sdk_phrase(speech_rest.assess(recording, activity, config, heard))


# ------------------------------------------------------------------------- the endpoint


def create_router(sandbox: Sandbox) -> APIRouter:
    router = APIRouter()

    @router.websocket("/speech/recognition/{mode}/cognitiveservices/v1")
    async def recognition(websocket: WebSocket, mode: str) -> None:
        gate = sandbox.gate
        gate.arrive(AZURE_SPEECH)
        if mode not in RECOGNITION_MODES:
            await websocket.send_denial_response(Response(status_code=404))
            return
        try:
            ticket = gate.admit(AZURE_SPEECH, expected_s=sandbox.scaled(LATENCIES[AZURE_SPEECH].high_s))
        except Refusal as refusal:
            headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else {}
            await websocket.send_denial_response(Response(status_code=refusal.status, headers=headers))
            return
        except HangUp as hang:
            # Take the audio, never answer, then drop the connection.
            await websocket.accept(subprotocol="USP")
            with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
                await asyncio.wait_for(_drain(websocket), hang.hold_s)
            with contextlib.suppress(Exception):
                await websocket.close(code=1011, reason="timeout")
            return
        with ticket:
            await websocket.accept(subprotocol="USP")
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await _session(websocket, sandbox, ticket.extra_delay_s, websocket.query_params.get("language"))

    return router


async def _drain(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _session(websocket: WebSocket, sandbox: Sandbox, extra_delay_s: float, language: str | None) -> None:
    """One connection: any number of turns, each ended by an empty audio frame."""
    config: AssessmentConfig | None = None
    turn: Audio | None = None
    request_id = ""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            headers, body = parse_text(message["text"])
            if headers.get("path", "").lower() == "speech.context":
                try:
                    context = json.loads(body or "{}")
                    config = assessment_config(context if isinstance(context, dict) else {})
                except (ValueError, AttributeError):
                    await websocket.close(code=1007, reason="speech.context is not valid JSON")
                    return
            continue
        headers, payload = parse_binary(message.get("bytes") or b"")
        if headers.get("path", "").lower() != "audio":
            continue
        if turn is None:
            request_id = headers.get("x-requestid") or uuid.uuid4().hex
            turn = Audio()
            await websocket.send_text(
                text_message("turn.start", request_id, {"context": {"serviceTag": uuid.uuid4().hex}})
            )
        if payload:
            turn.feed(payload)
            if len(turn.pcm) > MAX_TURN_BYTES:
                await websocket.close(code=1007, reason="audio stream too long")
                return
            continue
        # An empty audio frame: the turn's audio is complete.
        await _answer(websocket, sandbox, request_id, turn, config, extra_delay_s, language)
        turn = None


async def _answer(
    websocket: WebSocket,
    sandbox: Sandbox,
    request_id: str,
    audio: Audio,
    config: AssessmentConfig | None,
    extra_delay_s: float,
    language: str | None,
) -> None:
    seconds = len(audio.pcm) / max(1, audio.sample_rate * audio.channels * 2)
    real_s = LATENCIES[AZURE_SPEECH].clamp(2.0 + 0.5 * seconds + stable_fraction("latency", request_id))
    started = asyncio.get_running_loop().time()
    # Recognition takes up to about the audio's length: off the loop, and inside the latency.
    phrase = await asyncio.to_thread(recognise, audio, config, language)
    elapsed = asyncio.get_running_loop().time() - started
    await asyncio.sleep(max(0.0, sandbox.scaled(real_s) + extra_delay_s - elapsed))
    send = websocket.send_text
    if phrase["RecognitionStatus"] == "Success":
        await send(text_message("speech.startDetected", request_id, {"Offset": phrase["Offset"]}))
        words = [w for w in phrase["NBest"][0].get("Words", []) if w.get("Duration")]
        for n in range(1, len(words) + 1):
            await send(
                text_message(
                    "speech.hypothesis",
                    request_id,
                    {
                        "Text": " ".join(w["Word"] for w in words[:n]),
                        "Offset": phrase["Offset"],
                        "Duration": words[n - 1]["Offset"] + words[n - 1]["Duration"] - phrase["Offset"],
                    },
                )
            )
        await send(text_message("speech.phrase", request_id, phrase))
        await send(text_message("speech.endDetected", request_id, {"Offset": phrase["Offset"] + phrase["Duration"]}))
    else:
        await send(text_message("speech.phrase", request_id, phrase))
    await send(text_message("turn.end", request_id, {}))
