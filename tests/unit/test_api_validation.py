"""File recognition by bytes, text checks and request models: no I/O."""

from __future__ import annotations

import struct

import pytest
from pydantic import ValidationError

from api.errors import ApiError
from api.schemas import FlashcardsRequest, LessonRequest, PronunciationFields, SpeechRequest
from api.validation import check_file, check_text, sniff

SAMPLES = {
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16,
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "gif": b"GIF89a\x01\x00\x01\x00",
    "webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    "bmp": b"BM" + struct.pack("<I", 70) + b"\x00\x00\x00\x00" + struct.pack("<I", 54) + b"\x28" + b"\x00" * 20,
    "tiff": b"II*\x00\x08\x00\x00\x00",
    "wav": b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00",
    "ogg": b"OggS\x00\x02" + b"\x00" * 20,
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x21" + b"\x00" * 10,
    "flac": b"fLaC\x00\x00\x00\x22",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01",
    "m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00",
    "aac": b"\xff\xf1\x50\x80\x02\x1f\xfc",  # ADTS, AAC LC, 44.1 kHz
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    "heif": b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic",
}


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_each_format_is_recognised_by_its_bytes(fmt):
    kind = sniff(SAMPLES[fmt])
    assert kind is not None and kind.format == fmt


def test_mp3_without_id3_is_recognised_by_its_frame_header():
    assert sniff(b"\xff\xfb\x90\x64" + b"\x00" * 30).format == "mp3"  # MPEG-1 layer III, 128 kbit/s
    assert sniff(b"\xff\xff\xff\xff" + b"\x00" * 30) is None  # sync bits, but reserved fields


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"RIFF\x00\x00\x00\x00AVI LIST", b"\x00\x00\x00\x20ftypqt3d", b"<html>", b"PK\x03\x04"],
)
def test_other_bytes_are_not_recognised(data):
    assert sniff(data) is None


def test_a_png_sent_as_a_pdf_is_415():
    with pytest.raises(ApiError) as err:
        check_file("file", SAMPLES["png"], "pdf", 1000)
    assert err.value.status_code == 415 and err.value.code == "unsupported_file_type"
    assert "PNG" in err.value.message


def test_audio_and_image_categories_do_not_mix():
    with pytest.raises(ApiError):
        check_file("audio", SAMPLES["webp"], "audio", 1000)  # RIFF, but WEBP
    with pytest.raises(ApiError):
        check_file("image", SAMPLES["wav"], "image", 1000)
    assert check_file("audio", SAMPLES["wav"], "audio", 1000).mime == "audio/wav"


def test_file_size_and_emptiness():
    with pytest.raises(ApiError) as err:
        check_file("file", SAMPLES["pdf"] + b"x" * 100, "pdf", 50)
    assert err.value.status_code == 413
    with pytest.raises(ApiError) as err:
        check_file("file", b"", "pdf", 50)
    assert err.value.status_code == 422 and err.value.code == "empty_file"


def test_text_too_long_is_413():
    check_text("content", "x" * 10, 10)
    with pytest.raises(ApiError) as err:
        check_text("content", "x" * 11, 10)
    assert err.value.status_code == 413 and err.value.code == "text_too_long"


@pytest.mark.parametrize(
    "body",
    [
        {},  # missing content
        {"content": "   "},  # blank
        {"content": "\u202e\u200b"},  # only invisible characters: a right-to-left override and a zero-width space
        {
            "content": "\u00a0\u2003\u3000\ufeff\u2060\u3164\u0301"
        },  # Unicode spaces, BOM, word joiner, filler, lone mark
        {"content": 5},  # wrong type
        {"content": "ok", "count": "5"},  # strict int
        {"content": "ok", "count": 0},
        {"content": "ok", "count": 101},
        {"content": "ok", "language": "english please"},
        {"content": "ok", "unknown": 1},  # unknown fields are refused
        {"content": "a\x00b"},
        {"content": "\ud800"},  # unpaired surrogate: would break JSON encoding later
    ],
)
def test_flashcards_request_rejects(body):
    with pytest.raises(ValidationError):
        FlashcardsRequest.model_validate(body)


def test_request_models_accept_the_contract_fields():
    FlashcardsRequest.model_validate(
        {
            "content": "x",
            "subject": "Medicine",
            "count": 40,
            "language": "en-US",
            "webhook_url": "https://example.com/h",
        }
    )
    LessonRequest.model_validate({"topic": "Past tense", "level": "B1", "language": "es", "content": "text"})
    SpeechRequest.model_validate({"text": "Hola", "voice": "Lupe", "language": "es-US"})
    PronunciationFields.model_validate({"reference_text": "hello", "language": "en-US"})
    with pytest.raises(ValidationError):
        PronunciationFields.model_validate({"reference_text": "hello"})  # language is required


@pytest.mark.parametrize(
    "model, field", [(FlashcardsRequest, "content"), (SpeechRequest, "text"), (PronunciationFields, "reference_text")]
)
def test_invisible_only_text_is_refused_by_every_text_model(model, field):
    body = {field: "\u202e\u200b", "language": "en-US"} if model is PronunciationFields else {field: "\u202e\u200b"}
    with pytest.raises(ValidationError, match="blank"):
        model.model_validate(body)


@pytest.mark.parametrize("text", ["\u202eabc", "日本語", "\u0915\u094d\u0937", "a\u200b"])
def test_text_with_a_visible_character_is_accepted(text):
    FlashcardsRequest.model_validate({"content": text})
