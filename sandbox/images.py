"""Recognising an uploaded image by its bytes, and reading the text a test embedded in it.

The sandbox has no OCR engine. A PNG can carry its text in a ``tEXt`` (Latin-1), ``iTXt``
(UTF-8) or ``zTXt`` chunk with the keyword ``sandbox-text``; the "recognised" text is that,
one line per line. Any other image reads as having no text. A test builds such a PNG with
``zlib`` and ``struct`` alone (see ``png_with_text``), so no imaging library is needed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

TEXT_KEYWORD = b"sandbox-text"
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


def png_text(data: bytes) -> str | None:
    """The text stored under ``sandbox-text`` in a PNG's text chunks, if any."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        payload = data[position + 8 : position + 8 + length]
        position += 12 + length
        keyword, _, rest = payload.partition(b"\x00")
        if keyword != TEXT_KEYWORD:
            continue
        try:
            if kind == b"tEXt":
                return rest.decode("latin-1")
            if kind == b"zTXt":
                return zlib.decompress(rest[1:]).decode("latin-1")
            if kind == b"iTXt":
                compressed, _method = rest[0], rest[1]
                _language, _, rest = rest[2:].partition(b"\x00")
                _translated, _, text = rest.partition(b"\x00")
                return (zlib.decompress(text) if compressed else text).decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            return None
    return None


def png_with_text(width: int, height: int, text: str | None = None) -> bytes:
    """A plain white PNG, with ``text`` in an ``iTXt`` chunk: what tests send to the OCR."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff" * width for _ in range(height)))
    chunks = [chunk(b"IHDR", header)]
    if text is not None:
        chunks.append(chunk(b"iTXt", TEXT_KEYWORD + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")))
    chunks += [chunk(b"IDAT", pixels), chunk(b"IEND", b"")]
    return PNG_SIGNATURE + b"".join(chunks)
