"""Sample inputs built in code (no binary fixtures in the repo)."""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from array import array
from io import BytesIO


def pdf_with_text(pages: list[str]) -> bytes:
    """A minimal, valid PDF with one Helvetica text line per page."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font_id = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return pdf_from_objects(objects)


def wav_bytes(samples: list[int] | array, rate: int = 16_000, channels: int = 1, width: int = 2) -> bytes:
    out = BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes(array("h", samples).tobytes())
        else:
            w.writeframes(bytes((s >> 8) + 128 for s in samples))
    return out.getvalue()


COUNTING = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()


@functools.cache
def _espeak(text: str, voice: str, rate: int) -> tuple[int, ...]:
    """espeak-ng saying ``text``, as 16-bit mono samples at ``rate`` (sox resamples, undithered)."""
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/spoken.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "150", "-w", path],
            input=text.encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        raw = subprocess.run(
            [
                "sox",
                "-q",
                "-D",
                path,
                "-r",
                str(rate),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-t",
                "raw",
                "-L",
                "-",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    return tuple(array("h", raw))


def spoken(text: str, rate: int = 16_000, lead_s: float = 0.2, voice: str = "en-us") -> list[int]:
    """A real recording of ``text`` (espeak-ng's voice), with ``lead_s`` of silence before it."""
    return [0] * int(lead_s * rate) + list(_espeak(text, voice, rate)) + [0] * int(0.2 * rate)


def speech_like(seconds: float, rate: int = 16_000, lead_s: float = 0.2) -> list[int]:
    """About ``seconds`` of real speech: espeak-ng counting from one, for tests that need any voice."""
    words = max(1, min(len(COUNTING), round(seconds * 2.2)))
    return spoken(" ".join(COUNTING[:words]), rate, lead_s)


def spoken_wav(text: str, voice: str = "en-us") -> bytes:
    """``text`` spoken by Debian's espeak-ng: a real voice, as a 22.05 kHz mono WAV."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True, capture_output=True)
        return path.read_bytes()


# How phones and browsers record: (container, codec, sample rate, channel layout).
PHONE_AUDIO = {
    "m4a-aac": ("ipod", "aac", 44_100, "mono"),  # the iOS recorder (brand M4A)
    "3gp-amr": ("3gp", "libopencore_amrnb", 8_000, "mono"),  # older Android recorders
    "webm-opus": ("webm", "libopus", 48_000, "mono"),  # Android, Chrome's MediaRecorder
    "ogg-opus": ("ogg", "libopus", 48_000, "stereo"),  # Firefox's MediaRecorder
    "ogg-vorbis": ("ogg", "vorbis", 44_100, "stereo"),
    "mp3": ("mp3", "libmp3lame", 44_100, "stereo"),
    "flac": ("flac", "flac", 96_000, "stereo"),
    "wav-8k": ("wav", "pcm_s16le", 8_000, "mono"),
    "wav-48k-stereo": ("wav", "pcm_s16le", 48_000, "stereo"),
}


def encode_audio(wav: bytes, container: str, codec: str, rate: int, layout: str) -> bytes:
    """``wav`` re-encoded with PyAV (FFmpeg's encoders) as ``codec`` in ``container``."""
    import av

    out = BytesIO()
    with av.open(BytesIO(wav)) as source, av.open(out, mode="w", format=container) as target:
        stream = target.add_stream(codec, rate=rate, layout=layout)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        encoder_format = stream.codec_context.format.name
        resampler = av.AudioResampler(
            format=encoder_format, layout=layout, rate=rate, frame_size=stream.codec_context.frame_size or None
        )
        for frame in source.decode(audio=0):
            frame.pts = None
            for converted in resampler.resample(frame):
                target.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            target.mux(stream.encode(converted))
        target.mux(stream.encode(None))
    return out.getvalue()


def pdf_from_objects(objects: list[bytes]) -> bytes:
    """A PDF file of ``objects`` (object 1 the catalog), with its cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
