"""Input checks shared by the submit routes: text lengths, upload sizes, file types by bytes.

* Text: the long fields (``content``, ``text``, ``reference_text``) over their limit answer
  ``413 text_too_long``; blank text (whitespace and invisible characters only) is a ``422``.
* Uploads: the request body is counted while it is read (``api.middleware.BodyLimit``)
  and reading stops past the limit (``413 payload_too_large``); a file over its own limit
  is ``413 file_too_large``; an empty file ``422 empty_file``.
* File types are recognised by their first bytes, never by the name or the declared
  Content-Type: a PNG sent as a PDF is ``415 unsupported_file_type``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from api.errors import ApiError
from unilingo import paging

MAX_FORM_FIELD_BYTES = 64 * 1024  # any non-file multipart field
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small fields of an upload
PDF_HEADER_WINDOW = 1024  # like Acrobat, accept %PDF- within the first 1 KiB


@dataclass(frozen=True)
class FileKind:
    category: str  # pdf | image | audio
    format: str  # pdf, png, jpeg, ..., wav, mp3, ...
    mime: str


PDF = FileKind("pdf", "pdf", "application/pdf")

_IMAGE = {
    "png": FileKind("image", "png", "image/png"),
    "jpeg": FileKind("image", "jpeg", "image/jpeg"),
    "gif": FileKind("image", "gif", "image/gif"),
    "webp": FileKind("image", "webp", "image/webp"),
    "bmp": FileKind("image", "bmp", "image/bmp"),
    "tiff": FileKind("image", "tiff", "image/tiff"),
    "heic": FileKind("image", "heic", "image/heic"),
    "heif": FileKind("image", "heif", "image/heif"),
}
_AUDIO = {
    "wav": FileKind("audio", "wav", "audio/wav"),
    "ogg": FileKind("audio", "ogg", "audio/ogg"),
    "mp3": FileKind("audio", "mp3", "audio/mpeg"),
    "flac": FileKind("audio", "flac", "audio/flac"),
    "webm": FileKind("audio", "webm", "audio/webm"),
    "m4a": FileKind("audio", "m4a", "audio/mp4"),
    "aac": FileKind("audio", "aac", "audio/aac"),
}

# ISO base media brands that carry audio (M4A and the generic MP4/3GP brands phones record).
_MP4_AUDIO_BRANDS = {
    b"M4A ",
    b"M4B ",
    b"M4P ",
    b"mp41",
    b"mp42",
    b"isom",
    b"iso2",
    b"iso4",
    b"iso5",
    b"iso6",
    b"dash",
    b"3gp4",
    b"3gp5",
    b"3gp6",
    b"3g2a",
    b"MSNV",
    b"qt  ",
    b"F4A ",
    b"avc1",
}


# HEIF brands: HEVC-coded pictures (HEIC, what iPhones shoot) and the generic image brands.
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2"}


def _adts_frame(data: bytes) -> bool:
    """An AAC ADTS header (a raw .aac recording): 12 sync bits, layer 0, a valid sampling index."""
    return len(data) >= 7 and data[0] == 0xFF and (data[1] & 0xF6) == 0xF0 and ((data[2] >> 2) & 0x0F) < 13


def _mp3_frame(data: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, valid version, layer, bitrate, sample rate."""
    if len(data) < 4 or data[0] != 0xFF or (data[1] & 0xE0) != 0xE0:
        return False
    version = (data[1] >> 3) & 0b11
    layer = (data[1] >> 1) & 0b11
    bitrate = (data[2] >> 4) & 0b1111
    sample_rate = (data[2] >> 2) & 0b11
    return version != 0b01 and layer != 0b00 and bitrate != 0b1111 and sample_rate != 0b11


def sniff(data: bytes) -> FileKind | None:
    """What ``data`` is, judged from its leading bytes; None when it is none of ours."""
    head = data[:64]
    if head.startswith(b"%PDF-") or b"%PDF-" in data[:PDF_HEADER_WINDOW]:
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _IMAGE["png"]
    if head.startswith(b"\xff\xd8\xff"):
        return _IMAGE["jpeg"]
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _IMAGE["gif"]
    if len(head) >= 12 and head.startswith(b"RIFF"):
        if head[8:12] == b"WEBP":
            return _IMAGE["webp"]
        if head[8:12] == b"WAVE":
            return _AUDIO["wav"]
        return None
    if len(head) >= 26 and head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":
        return _IMAGE["bmp"]  # BITMAPFILEHEADER: reserved words are zero
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return _IMAGE["tiff"]
    if head.startswith(b"OggS"):
        return _AUDIO["ogg"]
    if head.startswith(b"fLaC"):
        return _AUDIO["flac"]
    if head.startswith(b"ID3") and len(head) >= 10:
        return _AUDIO["mp3"]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _AUDIO["webm"]  # EBML: WebM / Matroska
    if len(head) >= 12 and head[4:8] == b"ftyp":
        if head[8:12] in _HEIC_BRANDS:
            return _IMAGE["heic"]
        if head[8:12] in _HEIF_BRANDS:
            return _IMAGE["heif"]
        if head[8:12] in _MP4_AUDIO_BRANDS:
            return _AUDIO["m4a"]
        return None
    if _adts_frame(head):
        return _AUDIO["aac"]
    if _mp3_frame(head):
        return _AUDIO["mp3"]
    return None


_EXPECTED = {
    "pdf": "a PDF (starting with %PDF-)",
    "image": "an image: JPEG, PNG, HEIC/HEIF, WEBP, GIF, BMP or TIFF",
    "audio": "audio: M4A/AAC, WEBM or OGG (Opus, Vorbis), MP3, FLAC or WAV",
}


def check_file(field: str, data: bytes, category: str, limit: int) -> FileKind:
    if len(data) > limit:
        raise ApiError(413, "file_too_large", f"{field} is {len(data)} bytes; the limit is {limit} bytes")
    if not data:
        raise ApiError(422, "empty_file", f"{field} is empty")
    kind = sniff(data)
    if kind is None or kind.category != category:
        got = f"{kind.format.upper()} {kind.category}" if kind else "unrecognised bytes"
        raise ApiError(415, "unsupported_file_type", f"{field} must be {_EXPECTED[category]}; got {got}")
    return kind


def file_params(data: bytes, kind: FileKind, filename: str | None) -> dict:
    """What a job records about its upload (the bytes themselves go to their own key)."""
    params = {
        "format": kind.format,
        "mime": kind.mime,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if filename:
        clean = "".join(ch for ch in filename if ch.isprintable())[-200:]
        if clean:
            params["filename"] = clean
    return params


def cursor_position(list_name: str, cursor: str | None) -> paging.Position | None:
    """Where a page of ``list_name`` starts: after the item its ``next_cursor`` names."""
    if cursor is None:
        return None
    try:
        return paging.decode(list_name, cursor)
    except paging.InvalidCursor:
        raise ApiError(422, "invalid_cursor", "cursor is not a next_cursor of this list") from None


def check_text(field: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise ApiError(413, "text_too_long", f"{field} is {len(value)} characters; the limit is {limit}")


# Characters that show nothing on their own: controls, format characters (zero-width space,
# bidirectional overrides, the BOM), separators, marks without a base, and the letters and
# symbols Unicode defines as blank fillers.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me", "Mc"})
_BLANK_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u17b4\u17b5")


def is_blank(value: str) -> bool:
    """True when ``value`` has no visible character: whitespace and invisible characters only."""
    return all(
        ch.isspace() or ch in _BLANK_FILLERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in value
    )


def clean_text(value: str) -> str:
    """Pydantic validator body: refuses blank text (invisible characters included: it would be
    a paid provider call about nothing), NUL and unpaired surrogates."""
    if is_blank(value):
        raise ValueError("must not be blank (it has no visible character)")
    return check_unicode(value)


def check_unicode(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (unpaired surrogate)") from None
    return value


# --- multipart -----------------------------------------------------------------------------


def read_form(request: Request):
    """``async with read_form(request) as form``: the parsed multipart (or urlencoded) body.

    Its size is capped while it is read by the BodyLimit middleware; the spooled files are
    closed on leaving the block.
    """
    return request.form(max_files=4, max_fields=16, max_part_size=MAX_FORM_FIELD_BYTES)


def parse_form(form: FormData, model, file_field: str):
    """The form's text fields validated by ``model`` and its one file; all errors at once."""
    errors: list[dict] = []
    upload = form.get(file_field)
    if upload is None:
        errors.append({"type": "missing", "loc": ("body", file_field), "msg": "Field required"})
    elif not isinstance(upload, UploadFile):
        errors.append(
            {"type": "file_expected", "loc": ("body", file_field), "msg": "must be a file part (with a filename)"}
        )
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name == file_field:
            continue
        if isinstance(value, UploadFile):
            errors.append(
                {"type": "string_expected", "loc": ("body", name), "msg": "unexpected file; only one file is accepted"}
            )
        else:
            fields[name] = value
    parsed = None
    try:
        parsed = model.model_validate(fields)
    except ValidationError as exc:
        errors.extend(
            {**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False, include_context=False)
        )
    if errors:
        raise RequestValidationError(errors)
    return parsed, upload


async def read_upload(upload: UploadFile, limit: int, field: str) -> bytes:
    """The file's bytes, refusing more than ``limit`` without reading further."""
    if upload.size is not None and upload.size > limit:
        raise ApiError(413, "file_too_large", f"{field} is {upload.size} bytes; the limit is {limit} bytes")
    await upload.seek(0)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "file_too_large", f"{field} is larger than the limit of {limit} bytes")
    return data
