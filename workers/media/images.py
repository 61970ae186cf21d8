"""Photos as phones take them, turned into what Azure Vision's Read API takes.

The Read API (v3.2) takes JPEG, PNG, BMP and TIFF from 50x50 to 10,000x10,000 pixels and
ignores EXIF orientation. iPhones shoot HEIC, Android and browsers often send WEBP, and a
phone held upright writes a sideways JPEG with an EXIF note to turn it. So: HEIC/HEIF
(pillow-heif), WEBP, GIF and any image whose EXIF says to turn it are decoded with Pillow,
turned upright, scaled to fit the Read API's largest side and sent as JPEG; an upright PNG,
JPEG, BMP or TIFF within the limits goes as it came.

Decompression bombs: the pixel count is read from the header and checked against
``MAX_IMAGE_PIXELS`` before anything is decoded (a 10 kB PNG can claim 50,000 x 50,000
pixels); Pillow's own guard is set to the same limit as a second line.

Failures before any provider call: ``unsupported_image`` (not an image we can decode),
``image_too_large`` (over the pixel limit), ``image_too_small`` (under 50 px a side).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import lru_cache

from unilingo.errors import PermanentError

MIN_SIDE = 50  # the Read API's limits
MAX_SIDE = 10_000
AS_IS = {"PNG", "JPEG", "BMP", "TIFF"}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "TIFF": "image/tiff"}
JPEG_QUALITY = 92  # text edges stay sharp enough for OCR
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    data: bytes
    content_type: str
    width: int
    height: int
    source_format: str  # JPEG, PNG, WEBP, HEIF, GIF, BMP, TIFF
    converted: bool


@lru_cache
def _pillow():
    from PIL import Image, ImageOps
    from pillow_heif import register_heif_opener

    register_heif_opener()
    return Image, ImageOps


def prepare(data: bytes, max_pixels: int) -> PreparedImage:
    Image, ImageOps = _pillow()
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(None, max_pixels) from None
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise PermanentError(f"the image could not be read ({exc})", code="unsupported_image") from None
    with image:
        source = image.format or "unknown"
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large((width, height), max_pixels)
        orientation = image.getexif().get(_ORIENTATION, 1)
        if (
            source in AS_IS
            and orientation in (1, None)
            and MIN_SIDE <= min(width, height)
            and max(width, height) <= MAX_SIDE
        ):
            return PreparedImage(data, CONTENT_TYPES[source], width, height, source, converted=False)
        try:
            image.seek(0)  # an animated GIF or WEBP, or a HEIF burst: the first picture
            turned = ImageOps.exif_transpose(image)
            width, height = turned.size
            if min(width, height) < MIN_SIDE:
                raise PermanentError(
                    f"the image is {width}x{height} pixels; the smallest side must be at least {MIN_SIDE}",
                    code="image_too_small",
                )
            if max(width, height) > MAX_SIDE:
                turned.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            rgb = _flatten(turned, Image)
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        except (OSError, ValueError, SyntaxError) as exc:
            raise PermanentError(f"the image could not be decoded ({exc})", code="unsupported_image") from None
    return PreparedImage(out.getvalue(), "image/jpeg", rgb.width, rgb.height, source, converted=True)


def _flatten(image, Image):
    """RGB (or greyscale) on white: JPEG has no transparency, and OCR wants dark on light."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _too_large(size: tuple[int, int] | None, max_pixels: int) -> PermanentError:
    what = f"{size[0]}x{size[1]} pixels" if size else "more pixels than allowed"
    return PermanentError(f"the image is {what}; the limit is {max_pixels:,} pixels", code="image_too_large")
