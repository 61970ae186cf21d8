"""PDF jobs within their budgets: the handler on crafted files, no I/O."""

from __future__ import annotations

import zlib

import pytest

from tests.samples import pdf_from_objects, pdf_with_text
from unilingo.errors import PermanentError
from unilingo.settings import get_settings
from workers.handlers import pdf


class Ctx:
    def __init__(self, data: bytes):
        self.data = data
        self.progress_seen: list[dict] = []

    def upload(self) -> bytes:
        return self.data

    def progress(self, **progress) -> None:
        self.progress_seen.append(progress)


def _pdf(page_count: int, contents: bytes, filtered: bool) -> bytes:
    """``page_count`` pages that all draw the one content stream ``contents``."""
    kids = " ".join(f"{4 + i} 0 R" for i in range(page_count))
    font = 4 + page_count
    stream_dict = b"<< /Length %d%s >>" % (len(contents), b" /Filter /FlateDecode" if filtered else b"")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {page_count} >>".encode(),
        stream_dict + b"\nstream\n" + contents + b"\nendstream",
        *(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
            for _ in range(page_count)
        ),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return pdf_from_objects(objects)


def shared_stream_pdf(pages: int = 200, stream_bytes: int = 5 * 1024 * 1024) -> bytes:
    """A small file whose every page draws one large content stream (the reported 50 KB, 200 pages, 5 MB)."""
    line = b"BT /F1 12 Tf 72 720 Td (Der Hund schlaeft.) Tj ET\n"
    return _pdf(pages, zlib.compress(line * (stream_bytes // len(line)), 9), filtered=True)


def bomb_pdf(inflated_bytes: int = 256 * 1024 * 1024) -> bytes:
    """One page whose content stream inflates a thousandfold."""
    packer = zlib.compressobj(9)
    chunk = b" " * (1024 * 1024)
    compressed = b"".join(packer.compress(chunk) for _ in range(inflated_bytes // len(chunk))) + packer.flush()
    return _pdf(1, compressed, filtered=True)


@pytest.fixture
def budgets(monkeypatch):
    def set_(**values):
        for name, value in values.items():
            monkeypatch.setenv(name.upper(), str(value))
        get_settings.cache_clear()

    yield set_
    get_settings.cache_clear()


def _code(data: bytes) -> str:
    with pytest.raises(PermanentError) as err:
        pdf.extract(Ctx(data))
    return err.value.code


def test_200_pages_sharing_one_5mb_stream_end_at_the_cpu_budget(budgets):
    data = shared_stream_pdf()  # the reported file: it held a worker slot for the 600 s job timeout
    assert len(data) < 100_000
    budgets(max_pdf_decompressed_bytes=10**12, max_pdf_cpu_seconds=1)
    assert _code(data) == "pdf_cpu_time_exceeded"


def test_a_content_stream_shared_by_200_pages_ends_at_the_decompressed_budget(budgets):
    budgets(max_pdf_decompressed_bytes=3 * 1024 * 1024 // 2, max_pdf_cpu_seconds=600)
    assert _code(shared_stream_pdf(stream_bytes=1024 * 1024)) == "pdf_decompressed_too_large"  # page 2 of 200


def test_a_stream_that_inflates_a_thousandfold_is_a_pdf_code_not_a_crash(budgets):
    data = bomb_pdf()
    assert len(data) < 1_000_000
    budgets()
    assert _code(data) == "pdf_decompressed_too_large"


def test_too_many_pages(budgets):
    budgets(max_pdf_pages=3)
    assert _code(pdf_with_text(["a", "b", "c", "d"])) == "pdf_too_many_pages"


def test_an_ordinary_pdf_is_read_within_its_budgets(budgets):
    budgets()
    result = pdf.extract(Ctx(pdf_with_text([f"Seite {i}: Die Katze spielt." for i in range(12)])))
    assert result["pages"] == 12 and "Seite 11" in result["text"]
