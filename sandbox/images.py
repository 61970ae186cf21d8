"""Recognising an uploaded image by its bytes, and drawing text into one for tests and demos.

``identify`` checks what Azure checks before it accepts an upload (format by magic bytes,
size from the header); the reading itself is Tesseract's (``sandbox.ocr``).
``png_with_text`` draws lines of text with Pillow, black on white, as a phone photo of a
printed page would show them at best: what tests and demos send to the OCR.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class NotAnImage(ValueError):
    pass


@dataclass(frozen=True)
class ImageInfo:
    format: str  # png, jpeg, bmp, tiff, gif
    width: int | None  # None when the header is damaged
    height: int | None


def identify(data: bytes) -> ImageInfo:
    """The image's format by its magic bytes, and its size from its header."""
    if data.startswith(PNG_SIGNATURE):
        return ImageInfo("png", *_png_size(data))
    if data.startswith(b"\xff\xd8\xff"):
        return ImageInfo("jpeg", *_jpeg_size(data))
    if data.startswith(b"BM"):
        return ImageInfo("bmp", *_unpack_size(data, 18, "<ii"))
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ImageInfo("gif", *_unpack_size(data, 6, "<HH"))
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return ImageInfo("tiff", *_tiff_size(data))
    raise NotAnImage("Input data is not a valid image.")


def _unpack_size(data: bytes, offset: int, layout: str) -> tuple[int | None, int | None]:
    try:
        width, height = struct.unpack_from(layout, data, offset)
    except struct.error:
        return None, None
    return abs(width), abs(height)  # a BMP stored top-down has a negative height


def _png_size(data: bytes) -> tuple[int | None, int | None]:
    if data[12:16] != b"IHDR":
        return None, None
    return _unpack_size(data, 16, ">II")


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            return None, None
        marker = data[position + 1]
        # Start-of-frame markers carry the size; C4, C8 and CC are other segments in that range.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack_from(">HH", data, position + 5)
            return width, height
        (length,) = struct.unpack_from(">H", data, position + 2)
        position += 2 + length
    return None, None


def _tiff_size(data: bytes) -> tuple[int | None, int | None]:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (entries,) = struct.unpack_from(order + "H", data, ifd)
        size: dict[int, int] = {}
        for index in range(entries):
            tag, kind, _count = struct.unpack_from(order + "HHI", data, ifd + 2 + 12 * index)
            if tag in (256, 257):  # ImageWidth, ImageLength
                layout = "H" if kind == 3 else "I"
                (size[tag],) = struct.unpack_from(order + layout, data, ifd + 2 + 12 * index + 8)
    except struct.error:
        return None, None
    return size.get(256), size.get(257)


# Debian's fonts-dejavu-core (scripts/bootstrap.sh) has the accented letters the app's
# languages need; Pillow's own font has ASCII alone.
TEST_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.truetype(TEST_FONT, size)
    except OSError:
        return ImageFont.load_default(size=size)


def png_with_text(width: int, height: int, text: str | None = None) -> bytes:
    """A white PNG with ``text`` drawn on it, one line per line, as large as fits."""
    from PIL import Image, ImageDraw  # Pillow: only tests and demos draw images

    image = Image.new("L", (width, height), 255)
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if lines:
        draw = ImageDraw.Draw(image)
        size = 12
        # The largest font that fits the lines in 90% of the width and, with their spacing, the height.
        for candidate in range(12, 121, 2):
            font = _font(candidate)
            widest = max(draw.textlength(line, font=font) for line in lines)
            if widest > 0.9 * width or candidate * 1.6 * len(lines) > 0.9 * height:
                break
            size = candidate
        font = _font(size)
        top = (height - size * 1.6 * len(lines)) / 2 + 0.3 * size
        for row, line in enumerate(lines):
            draw.text((0.05 * width, top + row * size * 1.6), line, font=font, fill=0)
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()
