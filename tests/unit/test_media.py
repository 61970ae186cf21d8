"""Phones' recordings and photos turned into what the providers take: no I/O, PyAV and Pillow in-process."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.samples import PHONE_AUDIO, encode_audio, speech_like, wav_bytes
from unilingo.errors import PermanentError
from workers.media import audio, images

TONE = wav_bytes(speech_like(1.2, rate=22_050), rate=22_050)


@pytest.mark.parametrize("name", sorted(PHONE_AUDIO))
def test_every_phone_format_decodes_to_16k_mono_pcm(name):
    decoded = audio.decode(encode_audio(TONE, *PHONE_AUDIO[name]), max_seconds=60)
    assert decoded.audio.sample_rate == 16_000
    assert decoded.source_rate == PHONE_AUDIO[name][2]
    assert decoded.source_channels == (2 if PHONE_AUDIO[name][3] == "stereo" else 1)
    assert 1.2 < decoded.audio.seconds < 2.2  # codec padding adds a little
    assert audio.peak(decoded.audio.pcm) > audio.SILENCE_PEAK


def test_silence_fails_as_silent_audio():
    silence = encode_audio(wav_bytes([0] * 16_000), *PHONE_AUDIO["m4a-aac"])
    with pytest.raises(PermanentError) as err:
        audio.decode(silence, max_seconds=60)
    assert err.value.code == "silent_audio"


@pytest.mark.parametrize(
    "data",
    [
        b"OggS" + b"\x00" * 200,  # a container header and nothing behind it
        b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x13\x37" * 300,
        b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 4,
        encode_audio(TONE, *PHONE_AUDIO["m4a-aac"])[:200],  # cut off before its first sample
    ],
)
def test_undecodable_audio_fails_as_undecodable_audio(data):
    with pytest.raises(PermanentError) as err:
        audio.decode(data, max_seconds=60)
    assert err.value.code == "undecodable_audio"


def test_a_recording_over_the_duration_limit_fails_as_audio_too_long():
    long_opus = encode_audio(wav_bytes(speech_like(12.0)), *PHONE_AUDIO["webm-opus"])  # WebM: no duration in the header
    with pytest.raises(PermanentError) as err:
        audio.decode(long_opus, max_seconds=5)
    assert err.value.code == "audio_too_long"
    with pytest.raises(PermanentError) as err:
        audio.decode(wav_bytes(speech_like(12.0)), max_seconds=5)  # WAV: refused from its header
    assert err.value.code == "audio_too_long"


# --- images ------------------------------------------------------------------------------------


def photo(width: int, height: int, fmt: str, **save) -> bytes:
    """A photo-like picture: dark top-left quadrant, so orientation can be checked after turning."""
    image = Image.new("RGB", (width, height), (250, 250, 250))
    image.paste((10, 10, 10), (0, 0, width // 2, height // 2))
    out = io.BytesIO()
    if fmt == "HEIF":
        from pillow_heif import from_pillow

        from_pillow(image).save(out, quality=80, **save)
    else:
        image.save(out, fmt, **save)
    return out.getvalue()


def dark_corner(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as image:
        grey = image.convert("L")
        w, h = grey.size
        corners = {
            "top-left": (w // 8, h // 8),
            "top-right": (w - w // 8, h // 8),
            "bottom-left": (w // 8, h - h // 8),
            "bottom-right": (w - w // 8, h - h // 8),
        }
        return min(corners, key=lambda name: grey.getpixel(corners[name]))


@pytest.mark.parametrize("fmt", ["HEIF", "WEBP", "GIF"])
def test_heic_webp_and_gif_become_jpeg(fmt):
    prepared = images.prepare(photo(320, 200, fmt), max_pixels=10_000_000)
    assert prepared.converted and prepared.content_type == "image/jpeg"
    assert prepared.source_format == fmt
    assert (prepared.width, prepared.height) == (320, 200)
    assert prepared.data[:3] == b"\xff\xd8\xff"
    assert dark_corner(prepared.data) == "top-left"


def test_a_jpeg_with_exif_orientation_is_turned_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": how a phone held upright writes it
    sideways = photo(320, 200, "JPEG", exif=exif.tobytes())
    prepared = images.prepare(sideways, max_pixels=10_000_000)
    assert prepared.converted and (prepared.width, prepared.height) == (200, 320)
    assert dark_corner(prepared.data) == "top-right"  # the top-left corner, turned 90° clockwise


def test_an_upright_png_or_jpeg_goes_as_it_came():
    for fmt in ("PNG", "JPEG"):
        data = photo(320, 200, fmt)
        prepared = images.prepare(data, max_pixels=10_000_000)
        assert not prepared.converted and prepared.data == data


def test_a_decompression_bomb_is_refused_from_its_header():
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    # 60,000 x 60,000 pixels claimed by a file of a few hundred bytes.
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0))
    bomb += chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    with pytest.raises(PermanentError) as err:
        images.prepare(bomb, max_pixels=50_000_000)
    assert err.value.code == "image_too_large"
    big_heic = photo(1200, 1000, "HEIF")
    with pytest.raises(PermanentError) as err:
        images.prepare(big_heic, max_pixels=1_000_000)
    assert err.value.code == "image_too_large"


def test_tiny_and_broken_images_are_refused():
    with pytest.raises(PermanentError) as err:
        images.prepare(photo(40, 30, "WEBP"), max_pixels=10_000_000)
    assert err.value.code == "image_too_small"
    with pytest.raises(PermanentError) as err:
        images.prepare(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40, max_pixels=10_000_000)
    assert err.value.code == "unsupported_image"
