"""Azure AI Vision Read API v3.2 over httpx: submit the image, poll the operation until done.

    POST {endpoint}/vision/v3.2/read/analyze      image bytes → 202 + Operation-Location
    GET  Operation-Location                        → notStarted | running | succeeded | failed

httpx rather than an SDK: the Read v3.2 SDK (``azure-cognitiveservices-vision-computervision``)
is retired, and Image Analysis 4.0's SDK speaks a different API. Each HTTP call is its own
provider call (``azure-vision``), because Azure counts every poll against the resource's
calls per minute, as the limiter must. The operation's URL is kept in the job's progress:
a job deferred or retried between polls resumes polling rather than paying for a new
analysis (Azure keeps results for 48 hours).
"""

from __future__ import annotations

import time
from functools import lru_cache

import httpx

from unilingo.errors import PermanentError, Throttled, TransientError
from unilingo.settings import get_settings
from workers.providers import sent

PROVIDER = "azure-vision"
READ_PATH = "/vision/v3.2/read/analyze"
# Azure's answer codes for an image it cannot take: bad input, never worth a retry.
IMAGE_ERRORS = {
    "InvalidImageFormat": "unsupported_image",
    "InvalidImageSize": "image_too_large",
    "InvalidImageDimension": "unsupported_image",
    "InvalidImage": "unsupported_image",
    "InvalidImageUrl": "unsupported_image",
    "NotSupportedLanguage": "unsupported_language",
}
OPERATION_MAX_AGE_S = 24 * 3600  # well inside Azure's 48 h retention


@lru_cache
def _client(timeout: float) -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0), event_hooks={"request": [sent.httpx_hook]})


def client() -> httpx.Client:
    return _client(get_settings().azure_vision_timeout_seconds)


def _headers() -> dict[str, str]:
    return {"Ocp-Apim-Subscription-Key": get_settings().azure_vision_key}


def _retry_after(response: httpx.Response, default: float = 1.0) -> float:
    try:
        return max(0.05, float(response.headers.get("retry-after")))
    except (TypeError, ValueError):
        return default


def _error_code(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or ""), str(error.get("message") or response.text[:200])
    except ValueError:
        return "", response.text[:200]


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code < 400:
        return
    code, message = _error_code(response)
    if response.status_code == 429:
        raise Throttled(PROVIDER, _retry_after(response), "provider_429")
    if response.status_code >= 500:
        raise TransientError(f"Azure Vision {what}: {response.status_code} {message}", code="provider_error")
    if code in IMAGE_ERRORS:
        raise PermanentError(f"Azure Vision cannot read the image: {message}", code=IMAGE_ERRORS[code])
    if response.status_code in (401, 403):
        raise PermanentError(f"Azure Vision refused the credentials: {message}", code="provider_rejected")
    raise PermanentError(f"Azure Vision {what}: {response.status_code} {code} {message}", code="provider_bad_request")


def _call(ctx, method: str, url: str, what: str, expected: tuple[int, ...] = (), **kwargs) -> httpx.Response:
    http = client()
    with ctx.provider_call(PROVIDER) as permit:
        try:
            with sent.measured(permit):
                response = http.request(method, url, headers={**_headers(), **kwargs.pop("headers", {})}, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(f"Azure Vision {what} timed out: {exc!r}", code="provider_timeout") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"Azure Vision {what} unreachable: {exc!r}", code="provider_unavailable") from exc
        if response.status_code not in expected:
            _check(response, what)
    return response


def submit(ctx, image: bytes, language: str | None) -> str:
    """Start a Read operation; its URL."""
    params = {"readingOrder": "natural"}
    if language:
        params["language"] = language
    response = _call(
        ctx,
        "POST",
        get_settings().azure_vision_base() + READ_PATH,
        "submit",
        params=params,
        content=image,
        headers={"Content-Type": "application/octet-stream"},
    )
    location = response.headers.get("operation-location")
    if response.status_code != 202 or not location:
        raise TransientError(
            f"Azure Vision answered {response.status_code} without an Operation-Location", code="provider_error"
        )
    return location


class OperationLost(Exception):
    """The operation is gone (expired or unknown): start a new one."""


def poll(ctx, location: str) -> dict:
    """Poll until the operation ends; its ``analyzeResult``."""
    settings = get_settings()
    deadline = time.monotonic() + settings.azure_vision_timeout_seconds
    interval = settings.azure_vision_poll_seconds
    for _ in range(settings.azure_vision_max_polls):
        time.sleep(interval)
        response = _call(ctx, "GET", location, "poll", expected=(404,))
        if response.status_code == 404:
            raise OperationLost(location)
        body = response.json()
        status = body.get("status")
        if status == "succeeded":
            return body.get("analyzeResult") or {}
        if status == "failed":
            raise PermanentError("Azure Vision could not analyse the image (a damaged file?)", code="ocr_failed")
        if time.monotonic() > deadline:
            break
        interval = _retry_after(response, settings.azure_vision_poll_seconds)
    raise TransientError("Azure Vision's Read operation did not finish in time", code="provider_timeout")


RESULTS_PATH = "/vision/v3.2/read/analyzeResults/"


def read(ctx, image: bytes, language: str | None) -> dict:
    """Lines and words with their boxes, resuming an operation this job already started.

    The job's progress keeps the operation's id (clients see progress: not the endpoint).
    """
    progress = ctx.job.progress or {}
    location = None
    if progress.get("operation") and time.time() - float(progress.get("operation_started", 0)) < OPERATION_MAX_AGE_S:
        location = get_settings().azure_vision_base() + RESULTS_PATH + str(progress["operation"])
    for _ in range(2):
        if not location:
            location = submit(ctx, image, language)
            operation_id = location.rstrip("/").rsplit("/", 1)[-1]
            ctx.progress(step="analysing", operation=operation_id, operation_started=time.time())
        try:
            return poll(ctx, location)
        except OperationLost:
            location = None
    raise TransientError("Azure Vision lost the Read operation twice", code="provider_error")


def layout(analyze_result: dict) -> dict:
    """Our result shape: pages of lines of words, each with its bounding box."""
    pages, texts, words_total = [], [], 0
    for page in analyze_result.get("readResults") or []:
        lines = []
        for line in page.get("lines") or []:
            words = [
                {"text": w.get("text", ""), "bounding_box": w.get("boundingBox"), "confidence": w.get("confidence")}
                for w in line.get("words") or []
            ]
            words_total += len(words)
            lines.append({"text": line.get("text", ""), "bounding_box": line.get("boundingBox"), "words": words})
            texts.append(line.get("text", ""))
        pages.append(
            {
                "page": page.get("page"),
                "width": page.get("width"),
                "height": page.get("height"),
                "unit": page.get("unit"),
                "angle": page.get("angle"),
                "lines": lines,
            }
        )
    return {
        "text": "\n".join(texts),
        "pages": pages,
        "line_count": len(texts),
        "word_count": words_total,
        "model_version": analyze_result.get("modelVersion"),
    }
