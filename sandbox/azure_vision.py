"""Azure AI Vision's Read API v3.2: submit an image, then poll the operation for its text.

    POST /vision/v3.2/read/analyze            image bytes  ->  202, Operation-Location
    GET  /vision/v3.2/read/analyzeResults/{id}             ->  notStarted | running | succeeded | failed

Both calls count against the free tier's 20 calls a minute, as they do at Azure. The
image is read for real by Tesseract (``sandbox.ocr``) while the operation runs; the
operation takes Unilingo v1's 1-3 s (scaled) to finish, and longer if Tesseract is still
reading then (it stays ``running``). An image whose magic bytes are right but whose header
is damaged, or that Tesseract cannot decode, passes the upload check and then fails in
analysis, like a corrupt file at Azure.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox import ocr
from sandbox.azure_common import access_denied, error_response, has_credentials
from sandbox.images import NotAnImage, identify
from sandbox.profiles import AZURE_VISION, LATENCIES
from sandbox.runtime import Sandbox, stable_fraction

MAX_IMAGE_BYTES = 4 * 1024 * 1024  # free tier
MIN_SIDE, MAX_SIDE = 50, 10_000
SUBMIT_S = 0.15  # the POST itself answers quickly; the reading happens after it
POLL_S = 0.05
RESULT_RETENTION_S = 48 * 3600  # Azure keeps results for 48 hours
MAX_OPERATIONS = 10_000
MODEL_VERSION = "2022-04-30"
READING_RETRY_AFTER_S = 1
log = logging.getLogger(__name__)


@dataclass
class Operation:
    created_at: float  # monotonic
    created_wall: float
    starts_at: float
    data_size: int
    jitter: float  # the image's own share of Unilingo v1's latency spread
    width: int
    height: int
    reading: Future | None  # Tesseract's lines; None: the header is damaged, the analysis fails
    finishes_at: float | None = None  # known once the text is: the latency grows with it

    def outcome(self, scaled) -> tuple[str, dict | None]:
        """``notStarted``, ``running``, ``succeeded`` (with the analyzeResult) or ``failed``;
        ``reading`` is ``running`` while Tesseract is still at it."""
        now = time.monotonic()
        if now < self.starts_at:
            return "notStarted", None
        if self.reading is not None and not self.reading.done():
            return "reading", None
        if self.reading is None or self.reading.exception() is not None:
            if self.reading is not None and self.finishes_at is None:
                log.warning("sandbox: Tesseract could not read an image: %s", self.reading.exception())
            lines = None
            text_length = 0
        else:
            lines = self.reading.result()
            text_length = sum(len(word.text) + 1 for line in lines for word in line)
        if self.finishes_at is None:
            self.finishes_at = self.created_at + scaled(processing_s(self.data_size, text_length, self.jitter))
        if now < self.finishes_at:
            return "running", None
        if lines is None:
            return "failed", None
        return "succeeded", ocr.read_page(lines, self.width, self.height, MODEL_VERSION)


class OperationStore:
    """Read operations by id, forgotten after Azure's retention or when there are too many."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: OrderedDict[str, Operation] = OrderedDict()

    def add(self, operation: Operation) -> str:
        operation_id = str(uuid.uuid4())
        with self._lock:
            self._operations[operation_id] = operation
            horizon = time.monotonic() - RESULT_RETENTION_S
            while self._operations and (
                len(self._operations) > MAX_OPERATIONS or next(iter(self._operations.values())).created_at < horizon
            ):
                self._operations.popitem(last=False)
        return operation_id

    def get(self, operation_id: str) -> Operation | None:
        with self._lock:
            return self._operations.get(operation_id)


def processing_s(data_size: int, text_length: int, jitter: float) -> float:
    """Unilingo v1's 1-3 s: more for a bigger image and more text."""
    return LATENCIES[AZURE_VISION].clamp(1.0 + data_size / 2_000_000 + text_length / 1_000 + jitter)


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def create_router(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(prefix="/vision/v3.2/read")
    operations = OperationStore()

    @router.post("/analyze")
    async def analyze(request: Request) -> Response:
        sandbox.gate.arrive(AZURE_VISION)
        if not has_credentials(request):
            return access_denied()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        data = await request.body()
        if content_type == "application/json":
            return error_response(
                400,
                "InvalidImageUrl",
                "The sandbox does not download images: send the bytes as application/octet-stream.",
            )
        if not data:
            return error_response(400, "InvalidImageSize", "The input image is empty.")
        if len(data) > MAX_IMAGE_BYTES:
            return error_response(400, "InvalidImageSize", f"The input image is larger than {MAX_IMAGE_BYTES} bytes.")
        try:
            info = identify(data)
        except NotAnImage as error:
            return error_response(400, "InvalidImageFormat", str(error))
        if (
            info.width is not None
            and info.height is not None
            and not (MIN_SIDE <= info.width <= MAX_SIDE and MIN_SIDE <= info.height <= MAX_SIDE)
        ):
            return error_response(
                400,
                "InvalidImageDimension",
                f"Image dimensions must be between {MIN_SIDE}x{MIN_SIDE} and {MAX_SIDE}x{MAX_SIDE} pixels; "
                f"got {info.width}x{info.height}.",
            )

        latency_s = sandbox.scaled(SUBMIT_S)
        with sandbox.gate.admit(AZURE_VISION, expected_s=latency_s) as ticket:
            await asyncio.sleep(latency_s + ticket.extra_delay_s)
        now = time.monotonic()
        jitter = stable_fraction(data[:4096])
        damaged = info.width is None or info.height is None
        operation_id = operations.add(
            Operation(
                created_at=now,
                created_wall=time.time(),
                starts_at=now + 0.15 * sandbox.scaled(processing_s(len(data), 0, jitter)),
                data_size=len(data),
                jitter=jitter,
                width=info.width or 0,
                height=info.height or 0,
                reading=None if damaged else ocr.read_later(data, request.query_params.get("language")),
            )
        )
        location = f"{str(request.base_url).rstrip('/')}/vision/v3.2/read/analyzeResults/{operation_id}"
        return Response(status_code=202, headers={"Operation-Location": location, "apim-request-id": operation_id})

    @router.get("/analyzeResults/{operation_id}")
    async def analyze_results(operation_id: str, request: Request) -> Response:
        sandbox.gate.arrive(AZURE_VISION)
        if not has_credentials(request):
            return access_denied()
        latency_s = sandbox.scaled(POLL_S)
        with sandbox.gate.admit(AZURE_VISION, expected_s=latency_s) as ticket:
            await asyncio.sleep(latency_s + ticket.extra_delay_s)
        operation = operations.get(operation_id)
        if operation is None:
            return error_response(404, "NotFound", "The requested operation was not found or has expired.")
        status, result = operation.outcome(sandbox.scaled)
        headers = {}
        if status == "reading":
            # Tesseract takes a second or so: ask the client to poll no faster, as Azure's
            # long-running operations do, so the free tier's 20 calls go to readings, not polls.
            status, headers = "running", {"Retry-After": str(READING_RETRY_AFTER_S)}
        body: dict = {"createdDateTime": _iso(operation.created_wall), "status": status}
        if status == "notStarted":
            body["lastUpdatedDateTime"] = _iso(operation.created_wall)
        elif status == "running":
            body["lastUpdatedDateTime"] = _iso(time.time())
        else:
            assert operation.finishes_at is not None
            body["lastUpdatedDateTime"] = _iso(operation.created_wall + (operation.finishes_at - operation.created_at))
            if result is not None:
                body["analyzeResult"] = result
        return Response(orjson.dumps(body), media_type="application/json; charset=utf-8", headers=headers)

    return router
