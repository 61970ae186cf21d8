"""Azure AI Vision's Read API v3.2: submit an image, then poll the operation for its text.

    POST /vision/v3.2/read/analyze            image bytes  ->  202, Operation-Location
    GET  /vision/v3.2/read/analyzeResults/{id}             ->  notStarted | running | succeeded | failed

Both calls count against the free tier's 20 calls a minute, as they do at Azure. The
operation takes the seed's 1-3 s (scaled) to finish; what it reads is described in
``sandbox.images``. An image whose magic bytes are right but whose header is damaged
passes the upload check and then fails in analysis, like a corrupt file at Azure.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox.azure_common import access_denied, error_response, has_credentials
from sandbox.images import NotAnImage, identify, png_text
from sandbox.profiles import AZURE_VISION, LATENCIES
from sandbox.runtime import Sandbox, stable_fraction

MAX_IMAGE_BYTES = 4 * 1024 * 1024  # free tier
MIN_SIDE, MAX_SIDE = 50, 10_000
SUBMIT_S = 0.15  # the POST itself answers quickly; the reading happens after it
POLL_S = 0.05
RESULT_RETENTION_S = 48 * 3600  # Azure keeps results for 48 hours
MAX_OPERATIONS = 10_000
MODEL_VERSION = "2022-04-30"


@dataclass
class Operation:
    created_at: float  # monotonic
    created_wall: float
    starts_at: float
    finishes_at: float
    result: dict | None  # analyzeResult; None: the analysis fails


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


def read_result(data: bytes, width: int, height: int) -> dict:
    """``analyzeResult`` for one page: lines and words laid out top to bottom."""
    text = png_text(data) or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line_height = height / (len(lines) + 1) if lines else height
    glyph_width = (width * 0.9) / max((len(line) for line in lines), default=1)
    left = int(width * 0.05)
    json_lines = []
    for row, line in enumerate(lines):
        top = int(line_height * (row + 0.5))
        bottom = int(top + line_height * 0.8)
        words, cursor = [], 0
        for word in line.split():
            start = line.index(word, cursor)
            cursor = start + len(word)
            x1, x2 = int(left + start * glyph_width), int(left + cursor * glyph_width)
            confidence = round(0.9 + 0.099 * stable_fraction(word, row, start), 3)
            words.append({"boundingBox": _box(x1, top, x2, bottom), "text": word, "confidence": confidence})
        json_lines.append(
            {
                "boundingBox": _box(left, top, int(left + len(line) * glyph_width), bottom),
                "text": line,
                "appearance": {"style": {"name": "other", "confidence": 1.0}},
                "words": words,
            }
        )
    return {
        "version": "3.2.0",
        "modelVersion": MODEL_VERSION,
        "readResults": [
            {"page": 1, "angle": 0, "width": width, "height": height, "unit": "pixel", "lines": json_lines}
        ],
    }


def _box(x1: int, y1: int, x2: int, y2: int) -> list[int]:
    """Azure's quadrilateral: top-left, top-right, bottom-right, bottom-left."""
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def processing_s(data: bytes) -> float:
    """The seed's 1-3 s: more for a bigger image and more text."""
    text = png_text(data) or ""
    return LATENCIES[AZURE_VISION].clamp(1.0 + len(data) / 2_000_000 + len(text) / 1_000 + stable_fraction(data[:4096]))


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
        work_s = sandbox.scaled(processing_s(data))
        damaged = info.width is None or info.height is None
        operation_id = operations.add(
            Operation(
                created_at=now,
                created_wall=time.time(),
                starts_at=now + 0.15 * work_s,
                finishes_at=now + work_s,
                result=None if damaged else read_result(data, info.width, info.height),
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
        now = time.monotonic()
        body: dict = {"createdDateTime": _iso(operation.created_wall)}
        if now < operation.starts_at:
            body.update(status="notStarted", lastUpdatedDateTime=_iso(operation.created_wall))
        elif now < operation.finishes_at:
            body.update(status="running", lastUpdatedDateTime=_iso(time.time()))
        else:
            finished_wall = operation.created_wall + (operation.finishes_at - operation.created_at)
            body["lastUpdatedDateTime"] = _iso(finished_wall)
            if operation.result is None:
                body["status"] = "failed"
            else:
                body.update(status="succeeded", analyzeResult=operation.result)
        return Response(orjson.dumps(body), media_type="application/json; charset=utf-8")

    return router
