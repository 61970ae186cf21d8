"""Recordings as phones make them, decoded to the PCM that Azure Speech takes.

iOS records AAC in MP4 (m4a), Android and browsers Opus in WebM or Ogg; others send MP3,
FLAC, Vorbis or WAV at any rate and channel count. PyAV (FFmpeg's decoders, shipped inside
its wheels: no system ffmpeg) decodes each, and its resampler mixes down to mono 16-bit PCM
at 16 kHz, the format Microsoft documents for pronunciation assessment.

Failures before any provider call, each with its own code:
``undecodable_audio`` (not audio FFmpeg can decode, or damaged), ``audio_too_long`` (past
``MAX_AUDIO_SECONDS``, checked as the samples come, so a small file that would decode to
hours of audio stops early), ``silent_audio`` (no sample above the silence floor: a muted
microphone, a recording of nothing).
"""

from __future__ import annotations

import io
from array import array
from dataclasses import dataclass

from unilingo.errors import PermanentError

SAMPLE_RATE = 16_000  # what Azure Speech wants: 16 kHz, 16-bit, mono PCM
# Peak below 1/200 of full scale (-46 dBFS): a phone microphone's own noise is about this
# loud, the quietest speech far louder.
SILENCE_PEAK = 32768 // 200


@dataclass(frozen=True)
class PcmAudio:
    sample_rate: int
    pcm: bytes  # 16-bit little-endian mono

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.sample_rate)


@dataclass(frozen=True)
class DecodedAudio:
    audio: PcmAudio
    codec: str  # what was in the upload: aac, opus, vorbis, mp3, flac, pcm_s16le, ...
    source_rate: int
    source_channels: int


def _undecodable(detail: str) -> PermanentError:
    return PermanentError(
        f"the audio could not be decoded ({detail}); send WAV, M4A/AAC, WEBM or OGG (Opus, Vorbis), MP3 or FLAC",
        code="undecodable_audio",
    )


def decode(data: bytes, max_seconds: float) -> DecodedAudio:
    """``data`` as 16 kHz mono 16-bit PCM, or one of the errors above."""
    import av

    limit = int(max_seconds * SAMPLE_RATE) * 2
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError) as exc:
        raise _undecodable(str(exc)) from None
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise _undecodable("no audio track")
        if container.duration is not None and container.duration / av.time_base > max_seconds + 1:
            raise _too_long(container.duration / av.time_base, max_seconds)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pcm = bytearray()
        codec = stream.codec_context.name
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pcm += bytes(out.planes[0])[: out.samples * 2]
                if len(pcm) > limit:
                    raise _too_long(len(pcm) / (2 * SAMPLE_RATE), max_seconds)
            for out in resampler.resample(None):
                pcm += bytes(out.planes[0])[: out.samples * 2]
        except av.FFmpegError as exc:
            if not pcm:
                raise _undecodable(str(exc)) from None
            # A recording cut short (the app stopped mid-write): what decoded is assessed.
    if len(pcm) > limit:
        raise _too_long(len(pcm) / (2 * SAMPLE_RATE), max_seconds)
    if not pcm:
        raise _undecodable("no audio samples")
    if peak(pcm) < SILENCE_PEAK:
        raise PermanentError("the recording is silent (check the microphone)", code="silent_audio")
    return DecodedAudio(PcmAudio(SAMPLE_RATE, bytes(pcm)), codec, rate or 0, channels or 0)


def _too_long(seconds: float, max_seconds: float) -> PermanentError:
    return PermanentError(
        f"the recording is longer than {max_seconds:g} s (about {seconds:.0f} s)", code="audio_too_long"
    )


def peak(pcm: bytes | bytearray) -> int:
    samples = array("h")
    samples.frombytes(bytes(pcm[: len(pcm) - len(pcm) % 2]))
    if not samples:
        return 0
    return max(max(samples), -min(samples))
