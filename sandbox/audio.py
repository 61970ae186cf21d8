"""Reading short-audio WAV uploads and finding where someone is speaking.

Voice activity is judged by loudness: 20 ms frames whose RMS is above a threshold are
voiced; voiced frames separated by less than a short gap form one stretch of speech
(words run together in real speech, so a stretch is often several words).
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
import wave
from array import array
from dataclasses import dataclass

FRAME_S = 0.02
# About -40 dBFS: quieter than any voice close to a phone's microphone, louder than the
# hiss of a quiet room.
SILENCE_RMS = 330.0
# Gaps shorter than this are inside a stretch of speech, not between stretches.
JOIN_GAP_S = 0.15
# Shorter voiced blips are clicks or breath, not speech.
MIN_SPEECH_S = 0.06
SUPPORTED_RATES = (8_000, 16_000)
MAX_DURATION_S = 60.0  # Azure's REST API for short audio takes at most 60 s


class UnsupportedAudio(ValueError):
    pass


@dataclass(frozen=True)
class Pcm:
    sample_rate: int
    samples: array  # signed 16-bit mono
    digest: str  # identifies the recording, to derive deterministic scores from it

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Stretch:
    """A stretch of continuous speech."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class VoiceActivity:
    stretches: list[Stretch]
    snr_db: float  # loudness of speech over loudness of the pauses

    @property
    def voiced_s(self) -> float:
        return sum(stretch.duration_s for stretch in self.stretches)


def read_wav(data: bytes) -> Pcm:
    """The samples of a PCM WAV as Azure's short-audio REST API accepts it: 16-bit mono."""
    try:
        with wave.open(io.BytesIO(data)) as recording:
            channels, width, rate = recording.getnchannels(), recording.getsampwidth(), recording.getframerate()
            frames = recording.readframes(recording.getnframes())
    except (wave.Error, EOFError) as error:
        raise UnsupportedAudio(f"not a PCM WAV file ({error})") from error
    if width != 2 or channels != 1 or rate not in SUPPORTED_RATES:
        raise UnsupportedAudio(
            f"audio must be 16-bit mono PCM at {' or '.join(map(str, SUPPORTED_RATES))} Hz; "
            f"got {width * 8}-bit, {channels} channel(s), {rate} Hz"
        )
    samples = array("h")
    samples.frombytes(frames[: len(frames) - len(frames) % 2])
    if sys.byteorder == "big":
        samples.byteswap()  # WAV is little-endian
    pcm = Pcm(rate, samples, hashlib.sha256(frames).hexdigest())
    if pcm.duration_s > MAX_DURATION_S:
        raise UnsupportedAudio(f"audio is {pcm.duration_s:.1f} s long; at most {MAX_DURATION_S:.0f} s is accepted")
    return pcm


def voice_activity(pcm: Pcm) -> VoiceActivity:
    frame_length = max(1, int(pcm.sample_rate * FRAME_S))
    loudness = []
    for start in range(0, len(pcm.samples), frame_length):
        frame = pcm.samples[start : start + frame_length]
        loudness.append(math.sqrt(sum(sample * sample for sample in frame) / len(frame)))

    stretches: list[Stretch] = []
    for index, rms in enumerate(loudness):
        if rms < SILENCE_RMS:
            continue
        start, end = index * FRAME_S, (index + 1) * FRAME_S
        if stretches and start - stretches[-1].end_s < JOIN_GAP_S:
            stretches[-1] = Stretch(stretches[-1].start_s, end)
        else:
            stretches.append(Stretch(start, end))
    stretches = [stretch for stretch in stretches if stretch.duration_s >= MIN_SPEECH_S]

    voiced = [rms for rms in loudness if rms >= SILENCE_RMS]
    quiet = [rms for rms in loudness if rms < SILENCE_RMS]
    speech_level = sum(voiced) / len(voiced) if voiced else 0.0
    # Digital silence has no noise at all; treat it as a floor of 1 (about -90 dBFS).
    noise_level = max(1.0, sum(quiet) / len(quiet)) if quiet else 1.0
    snr_db = 20 * math.log10(speech_level / noise_level) if speech_level else 0.0
    return VoiceActivity(stretches, round(snr_db, 2))
