"""What Azure Cognitive Services share: the key header and the error JSON shape."""

from __future__ import annotations

import uuid

import orjson
from fastapi import Request
from fastapi.responses import Response

from sandbox.gate import Refusal


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
    body = {"error": {"code": code, "message": message, **extra}}
    headers = {"apim-request-id": str(uuid.uuid4()), **(headers or {})}
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def has_credentials(request: Request) -> bool:
    """A subscription key, or the bearer token a client exchanges its key for."""
    if request.headers.get("ocp-apim-subscription-key", "").strip():
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def access_denied() -> Response:
    return error_response(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
        "for an active subscription and use a correct regional API endpoint for your resource.",
    )


def refusal_response(refusal: Refusal, operation: str) -> Response:
    """Azure's throttling (429 + ``Retry-After``) or internal-error answer."""
    if refusal.status != 429:
        return error_response(
            500, "InternalServerError", "An internal server error occurred. Please retry the request."
        )
    retry_after = refusal.retry_after_s or 60
    if refusal.reason == "concurrency":
        message = (
            f"Too many concurrent requests to the {operation} operation. Please retry after {retry_after} seconds."
        )
    else:
        message = (
            f"Requests to the {operation} operation have exceeded the rate limit of your current pricing tier. "
            f"Please retry after {retry_after} seconds."
        )
    return error_response(429, "429", message, {"Retry-After": str(retry_after)})
