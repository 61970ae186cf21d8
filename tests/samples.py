"""Sample inputs built in code (no binary fixtures in the repo)."""

from __future__ import annotations

import math
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


def speech_like(seconds: float, rate: int = 16_000, lead_s: float = 0.2) -> list[int]:
    """Tone bursts with short gaps, loud enough to count as voice: "speech" to the sandbox."""
    samples = [0] * int(lead_s * rate)
    t = 0.0
    while t < seconds:
        burst = int(0.25 * rate)
        freq = 180 + 40 * (len(samples) % 7)
        samples += [int(6000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(burst)]
        samples += [0] * int(0.06 * rate)
        t += 0.31
    return samples + [0] * int(0.2 * rate)
