"""Reading the text of an image with Tesseract (Debian's ``tesseract-ocr`` and its language packs).

Tesseract's TSV output gives every word with its box and confidence, grouped into blocks,
paragraphs and lines; ``read_page`` turns it into one page of Azure Read 3.2's
``analyzeResult``. Azure takes a ``language`` hint (``de``, ``pt-BR``...) and otherwise
detects the language itself; Tesseract needs to be told, so without a hint the sandbox reads
with the languages in ``DEFAULT_LANGUAGES`` (each extra model costs time, so they are few).

Tesseract runs in a subprocess with one thread (``OMP_THREAD_LIMIT=1``), at most
``MAX_PARALLEL`` at once on a pool of their own: a burst of uploads queues there instead of
taking every core or the threads the other providers' handlers run on.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

# Azure Read's language codes (and the locales the app teaches) -> Tesseract's models.
TESSERACT_LANGUAGES = {
    "en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "pt": "por", "nl": "nld",
    "pl": "pol", "ru": "rus", "sv": "swe", "tr": "tur", "da": "dan", "nb": "nor", "no": "nor",
    "nn": "nor", "ro": "ron", "ja": "jpn", "ko": "kor", "zh": "chi_sim", "zh-hans": "chi_sim",
    "cmn": "chi_sim", "ar": "ara", "arb": "ara", "cy": "cym", "is": "isl",
}  # fmt: skip
# Without a hint: English, whose model also knows the accented Latin letters of the
# Western European languages well enough for a sandbox.
DEFAULT_LANGUAGES = "eng"
MAX_PARALLEL = 2
TIMEOUT_S = 60.0
MIN_CONFIDENCE = 10.0  # Tesseract's guesses below this are specks and noise, not words

_pool = ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="sandbox-ocr")


class OcrUnavailable(RuntimeError):
    """Tesseract is not installed (``scripts/bootstrap.sh`` installs it)."""


class UnreadableImage(ValueError):
    """Tesseract could not decode the image."""


@dataclass(frozen=True)
class Word:
    text: str
    left: int
    top: int
    width: int
    height: int
    confidence: float  # 0..100, Tesseract's


def tesseract_languages(language: str | None) -> str:
    """The ``-l`` argument for an Azure ``language`` hint; unknown hints read as the default."""
    if not language:
        return DEFAULT_LANGUAGES
    code = language.strip().lower()
    return TESSERACT_LANGUAGES.get(code) or TESSERACT_LANGUAGES.get(code.split("-")[0]) or DEFAULT_LANGUAGES


def recognise(data: bytes, language: str | None = None) -> list[list[Word]]:
    """The image's lines of words, in Tesseract's reading order."""
    binary = shutil.which("tesseract")
    if binary is None:
        raise OcrUnavailable("tesseract is not installed: run scripts/bootstrap.sh")
    command = [binary, "stdin", "stdout", "-l", tesseract_languages(language), "--psm", "3", "tsv"]
    environment = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    completed = subprocess.run(command, input=data, capture_output=True, timeout=TIMEOUT_S, env=environment)
    if completed.returncode != 0:
        raise UnreadableImage(completed.stderr.decode("utf-8", "replace").strip()[-300:])
    lines: dict[tuple[str, str, str, str], list[Word]] = {}
    rows = csv.DictReader(
        io.StringIO(completed.stdout.decode("utf-8", "replace")), delimiter="\t", quoting=csv.QUOTE_NONE
    )
    for row in rows:
        text = (row.get("text") or "").strip()
        if row.get("level") != "5" or not text or float(row.get("conf") or -1) < MIN_CONFIDENCE:
            continue
        key = (row["page_num"], row["block_num"], row["par_num"], row["line_num"])
        lines.setdefault(key, []).append(
            Word(text, int(row["left"]), int(row["top"]), int(row["width"]), int(row["height"]), float(row["conf"]))
        )
    return list(lines.values())


def read_later(data: bytes, language: str | None = None) -> Future:
    """``recognise`` on the OCR pool: the future's result is the lines, or its exception."""
    return _pool.submit(recognise, data, language)


def box(left: int, top: int, right: int, bottom: int) -> list[int]:
    """Azure's quadrilateral: top-left, top-right, bottom-right, bottom-left."""
    return [left, top, right, top, right, bottom, left, bottom]


def read_page(lines: list[list[Word]], width: int, height: int, model_version: str) -> dict:
    """``analyzeResult`` for one page, as Azure Read 3.2 lays it out."""
    json_lines = []
    for words in lines:
        left = min(word.left for word in words)
        top = min(word.top for word in words)
        right = max(word.left + word.width for word in words)
        bottom = max(word.top + word.height for word in words)
        json_lines.append(
            {
                "boundingBox": box(left, top, right, bottom),
                "text": " ".join(word.text for word in words),
                "appearance": {"style": {"name": "other", "confidence": 1.0}},
                "words": [
                    {
                        "boundingBox": box(word.left, word.top, word.left + word.width, word.top + word.height),
                        "text": word.text,
                        "confidence": round(min(1.0, max(0.001, word.confidence / 100)), 3),
                    }
                    for word in words
                ],
            }
        )
    return {
        "version": "3.2.0",
        "modelVersion": model_version,
        "readResults": [
            {"page": 1, "angle": 0, "width": width, "height": height, "unit": "pixel", "lines": json_lines}
        ],
    }
