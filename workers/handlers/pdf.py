"""PDF text extraction with pypdf, within page and size limits."""

from __future__ import annotations

import io

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PdfReadError

from unilingo.errors import PermanentError
from unilingo.settings import get_settings


def extract(ctx) -> dict:
    settings = get_settings()
    data = ctx.upload()
    if len(data) > settings.max_pdf_bytes:
        raise PermanentError(f"the PDF is larger than {settings.max_pdf_bytes} bytes", code="pdf_too_large")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise PermanentError("the PDF is encrypted", code="pdf_encrypted")
        pages = len(reader.pages)
        if pages > settings.max_pdf_pages:
            raise PermanentError(f"the PDF has {pages} pages; the limit is {settings.max_pdf_pages}", code="pdf_too_many_pages")
        texts = []
        for number, page in enumerate(reader.pages, start=1):
            texts.append(page.extract_text() or "")
            if number % 10 == 0:
                ctx.progress(pages_done=number, pages=pages)
    except FileNotDecryptedError as exc:
        raise PermanentError("the PDF is encrypted", code="pdf_encrypted") from exc
    except PermanentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise PermanentError(f"the PDF could not be read: {exc}", code="pdf_corrupt") from exc
    text = "\n\n".join(t.strip() for t in texts).strip()
    if not text:
        raise PermanentError("the PDF has no text layer (a scan? try /api/process-image)", code="pdf_no_text")
    return {"text": text, "pages": pages, "characters": len(text)}
