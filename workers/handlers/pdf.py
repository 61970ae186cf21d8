"""PDF text extraction with pypdf, within budgets checked as it goes.

A PDF job may read at most ``max_pdf_pages`` pages, inflate at most
``max_pdf_decompressed_bytes`` of page contents (summed over the pages: a content stream
shared by 200 pages counts 200 times, as it is parsed 200 times) and spend at most
``max_pdf_cpu_seconds`` of CPU time (checked before each page and every few hundred content
operators; pypdf parses a page's content stream whole before visiting its operators, so the
decompressed budget is what bounds that one step). Over a budget the job ends at once, failed
with the code that says which
(``pdf_too_many_pages``, ``pdf_decompressed_too_large``, ``pdf_cpu_time_exceeded``), rather than
holding a worker slot until the job timeout.
"""

from __future__ import annotations

import io
import time

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, LimitReachedError, PdfReadError

from unilingo.errors import PermanentError
from unilingo.settings import get_settings

CPU_CHECK_EVERY = 256  # content operators between CPU-time checks (a check costs ~0.2 µs)


class _Budget:
    def __init__(self, max_bytes: int, max_cpu_seconds: float):
        self.max_bytes, self.max_cpu_seconds = max_bytes, max_cpu_seconds
        self.started = time.thread_time()  # this thread's CPU time: waiting on others is not ours
        self.inflated = 0
        self.operators = 0

    def cpu(self) -> None:
        if time.thread_time() - self.started > self.max_cpu_seconds:
            raise PermanentError(
                f"reading the PDF took more than {self.max_cpu_seconds:g} s of CPU time", code="pdf_cpu_time_exceeded"
            )

    def operator(self, *_) -> None:
        self.operators += 1
        if self.operators % CPU_CHECK_EVERY == 0:
            self.cpu()

    def contents(self, size: int) -> None:
        self.inflated += size
        if self.inflated > self.max_bytes:
            raise PermanentError(
                f"the PDF's page contents inflate to more than {self.max_bytes} bytes",
                code="pdf_decompressed_too_large",
            )


def _too_inflated(limit: int) -> PermanentError:
    return PermanentError(
        f"a stream of the PDF inflates to more than the limit ({limit} bytes)", code="pdf_decompressed_too_large"
    )


def extract(ctx) -> dict:
    settings = get_settings()
    data = ctx.upload()
    if len(data) > settings.max_pdf_bytes:
        raise PermanentError(f"the PDF is larger than {settings.max_pdf_bytes} bytes", code="pdf_too_large")
    budget = _Budget(settings.max_pdf_decompressed_bytes, settings.max_pdf_cpu_seconds)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise PermanentError("the PDF is encrypted", code="pdf_encrypted")
        pages = len(reader.pages)
        if pages > settings.max_pdf_pages:
            raise PermanentError(
                f"the PDF has {pages} pages; the limit is {settings.max_pdf_pages}", code="pdf_too_many_pages"
            )
        texts = []
        for number, page in enumerate(reader.pages, start=1):
            contents = page.get_contents()
            budget.contents(len(contents.get_data()) if contents is not None else 0)
            budget.cpu()
            texts.append(page.extract_text(visitor_operand_before=budget.operator) or "")
            if number % 10 == 0:
                ctx.progress(pages_done=number, pages=pages)
    except FileNotDecryptedError as exc:
        raise PermanentError("the PDF is encrypted", code="pdf_encrypted") from exc
    except PermanentError:
        raise
    except LimitReachedError as exc:  # pypdf's own cap on one stream, below ours for the whole job
        raise _too_inflated(settings.max_pdf_decompressed_bytes) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise PermanentError(f"the PDF could not be read: {exc}", code="pdf_corrupt") from exc
    text = "\n\n".join(t.strip() for t in texts).strip()
    if not text:
        raise PermanentError("the PDF has no text layer (a scan? try /api/process-image)", code="pdf_no_text")
    return {"text": text, "pages": pages, "characters": len(text)}
