"""Every error is JSON: ``{"error": {"code": "<machine-readable>", "message": "<human>"}}``.

Validation errors are ``422`` and add ``details`` (one entry per field: ``field``,
``message``, ``type``). Bad input never becomes a ``5xx``; an unexpected exception becomes a
``500`` whose body names no internals (the traceback goes to the log); an unreachable Redis
is a ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.responses import JSON

log = logging.getLogger("api.errors")

# Default codes for statuses raised by the framework itself (no route, wrong method, ...).
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    501: "not_implemented",
    503: "service_unavailable",
}


class ApiError(StarletteHTTPException):
    """An error answer. Raise it anywhere in a request (also from ``receive``)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ):
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details


# Every code an error answer can carry (``error.code``), and what it means; listed in OpenAPI.
API_ERROR_CODES: dict[str, str] = {
    "bad_request": "400: the request could not be parsed",
    "unauthorized": "401: the request is not signed in",
    "missing_token": "401: no bearer token",
    "invalid_token": "401: the token is forged, malformed or for another audience",
    "token_expired": "401: the token has expired: refresh it",
    "forbidden": "403: the route needs a role the caller lacks (admin)",
    "priority_above_tier": "403: Job-Priority is above the caller's tier's priority (it may only be lowered)",
    "ip_not_allowed": "403: the admin route is not open to the caller's address",
    "not_found": "404: no such route, or no such item (or not the caller's)",
    "job_not_found": "404: no such job, or another user's",
    "method_not_allowed": "405: the route does not take that method",
    "not_acceptable": "406: the Accept header asks for what the route cannot give",
    "request_timeout": "408: the request body did not arrive in time (REQUEST_BODY_TIMEOUT_SECONDS); the connection "
    "is closed",
    "conflict": "409: the request conflicts with the resource's state",
    "job_terminal": "409: the job has already ended and cannot be cancelled",
    "idempotency_key_expired": "409: the Idempotency-Key's job no longer exists; use a new key",
    "length_required": "411: the upload needs a length",
    "payload_too_large": "413: the request body is larger than the route takes",
    "file_too_large": "413: the file is larger than its limit (MAX_*_BYTES)",
    "text_too_long": "413: a text field is longer than its limit",
    "unsupported_file_type": "415: the file's bytes are not of a type the route takes",
    "unsupported_media_type": "415: the request's Content-Type is not one the route takes",
    "validation_error": "422: a field is missing or invalid; `details` names each",
    "empty_file": "422: the file is empty",
    "invalid_idempotency_key": "422: Idempotency-Key is not 1-255 visible ASCII characters",
    "idempotency_key_reused": "422: the Idempotency-Key was used with a different request",
    "invalid_priority": "422: Job-Priority is not an integer from 0 to 9",
    "invalid_cursor": "422: the paging cursor is malformed or from another listing",
    "webhook_invalid_url": "422: webhook_url is not a valid URL",
    "webhook_invalid_scheme": "422: webhook_url is not https or http",
    "webhook_unresolvable": "422: webhook_url's host does not resolve",
    "webhook_target_refused": "422: webhook_url points at a private, loopback or link-local address",
    "rate_limited": "429: a quota is used up; see Retry-After and RateLimit-*",
    "client_disconnected": "499: the client hung up before its request was read (logged and counted, never seen by it)",
    "internal_error": "500: a bug in Unilingo; reported to the operators",
    "not_implemented": "501: the job type is not available on this deployment",
    "auth_unavailable": "503: the signing keys cannot be fetched; retry",
    "service_unavailable": "503: Redis (or the database) is unreachable; retry",
}


def code_table(codes: dict[str, str]) -> str:
    """Markdown list of codes and meanings, for OpenAPI descriptions."""
    return "\n".join(f"- `{code}`: {meaning}" for code, meaning in codes.items())


# --- OpenAPI models (documentation; responses are built as plain dicts) -----------------


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorInfo(BaseModel):
    code: str = Field(description="Machine-readable; one of:\n\n" + code_table(API_ERROR_CODES))
    message: str
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    error: ErrorInfo


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"code": code, "message": message}
    if details:
        info["details"] = details
    return {"error": info}


def error_response(status_code: int, code: str, message: str, headers=None, details=None) -> JSON:
    return JSON(error_body(code, message, details), status_code=status_code, headers=headers)


def _with_quota(request: Request, headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """An error after the quota was taken still tells the client where it stands."""
    state = request.scope.get("state") or {}
    quota_headers = state.get("quota_headers")
    if not quota_headers:
        return headers
    return {**quota_headers, **(headers or {})}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed request",
        401: "Missing, forged or expired token",
        403: "The caller lacks the role (admin) or address the route needs",
        404: "Not found (or not yours)",
        409: "Conflict",
        413: "Payload or text too large",
        415: "File type not recognised from its bytes",
        422: "Validation error",
        429: "Quota exceeded (Retry-After, RateLimit-* headers)",
        501: "Not available on this deployment (a job type, or saved content without a database)",
        503: "Redis unreachable; retry",
    }
    return {s: {"model": ErrorBody, "description": descriptions.get(s, "Error")} for s in statuses}


AUTH_RESPONSES = _responses(401, 429, 503)
SUBMIT_RESPONSES = _responses(400, 401, 409, 413, 415, 422, 429, 501, 503)
JOB_RESPONSES = _responses(401, 404, 422, 429, 503)


# --- handlers ------------------------------------------------------------------------------


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie") and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    details = []
    for err in errors:
        message = str(err.get("msg", "invalid"))
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        details.append(
            {"field": _field(err.get("loc", ())), "message": message, "type": str(err.get("type", "invalid"))}
        )
    return details


async def api_error_handler(request: Request, exc: ApiError) -> JSON:
    return error_response(
        exc.status_code, exc.code, exc.message, headers=_with_quota(request, exc.headers), details=exc.details
    )


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSON:
    code = STATUS_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "no such resource"
    if exc.status_code >= 500:
        message = "the server could not complete the request"
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSON:
    details = validation_details(list(exc.errors()))
    if details:
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    else:
        summary = "the request is invalid"
    return error_response(422, "validation_error", summary, headers=_with_quota(request, None), details=details)


async def redis_error_handler(request: Request, exc: Exception) -> JSON:
    log.warning("redis unavailable during %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503, "service_unavailable", "the job store is unreachable; retry shortly", headers={"Retry-After": "1"}
    )


async def unhandled_error_handler(request: Request, exc: Exception) -> JSON:
    log.exception("unhandled error during %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server could not complete the request")


# What every signed-in route can answer, documented on each (the routes' own lists add to it).
SIGNED_IN_STATUSES = (401, 403, 404, 429)


def document_signed_in_errors(app: FastAPI) -> None:
    """Every operation that takes the bearer token documents 401, 403, 404 and 429."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        ref = {"$ref": "#/components/schemas/ErrorBody"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if not operation.get("security"):
                    continue
                responses = operation.setdefault("responses", {})
                for status, entry in _responses(*SIGNED_IN_STATUSES).items():
                    responses.setdefault(
                        str(status),
                        {
                            "description": entry["description"],
                            "content": {"application/json": {"schema": ref}},
                        },
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    # The decorator form keeps each handler's own exception type (``add_exception_handler``
    # would type every handler as taking a bare ``Exception``).
    app.exception_handler(ApiError)(api_error_handler)
    app.exception_handler(StarletteHTTPException)(http_error_handler)
    app.exception_handler(RequestValidationError)(validation_error_handler)
    app.exception_handler(redis.exceptions.ConnectionError)(redis_error_handler)
    app.exception_handler(redis.exceptions.TimeoutError)(redis_error_handler)
    app.exception_handler(Exception)(unhandled_error_handler)
    document_signed_in_errors(app)
