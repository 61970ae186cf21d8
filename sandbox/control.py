"""The sandbox's own endpoints under ``/_sandbox``: health, stats, faults, quotas, reset."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from sandbox.faults import FaultSpec, describe_validation_error
from sandbox.profiles import PROVIDERS
from sandbox.quotas import QuotaSpec
from sandbox.runtime import Sandbox


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, code: str, message: str, **extra) -> Response:
    return _json({"error": {"code": code, "message": message, **extra}}, status)


def create_router(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(prefix="/_sandbox")
    gate = sandbox.gate

    @router.get("/health")
    async def health() -> Response:
        return _json(
            {
                "status": "ok",
                "providers": list(PROVIDERS),
                "latency_scale": sandbox.latency_scale,
                "aws_endpoint": sandbox.aws_endpoint,
            }
        )

    @router.get("/stats")
    async def stats() -> Response:
        return _json(gate.stats.snapshot())

    @router.post("/stats/reset")
    @router.delete("/stats")
    async def reset_stats() -> Response:
        gate.stats.reset()
        return _json(gate.stats.snapshot())

    @router.post("/reset")
    async def reset_everything() -> Response:
        """Stats, quota windows and limits, and faults, as if the sandbox had just started."""
        gate.reset()
        return _json({"status": "reset"})

    @router.get("/faults")
    async def list_faults() -> Response:
        return _json({"faults": gate.faults.active()})

    @router.post("/faults")
    async def inject_fault(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "invalid_json", "The body must be a JSON object describing the fault.")
        try:
            spec = FaultSpec.model_validate(body)
        except ValidationError as error:
            details = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in error.errors()]
            return _error(422, "invalid_fault", describe_validation_error(error), details=details)
        return _json(gate.faults.inject(spec), 201)

    @router.get("/quotas")
    async def list_quotas() -> Response:
        return _json({"quotas": gate.quotas.limits()})

    @router.post("/quotas")
    async def set_quota(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "invalid_json", "The body must be a JSON object describing the quota.")
        try:
            spec = QuotaSpec.model_validate(body)
        except ValidationError as error:
            details = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in error.errors()]
            return _error(422, "invalid_quota", describe_validation_error(error), details=details)
        quota = gate.quotas[spec.provider]
        quota.configure(spec.requests_per_minute, spec.tokens_per_minute)
        return _json({"provider": spec.provider, **quota.limits()})

    @router.delete("/quotas")
    async def reset_quotas() -> Response:
        """Every provider back to its default quota (the windows keep what they counted)."""
        gate.quotas.restore_defaults()
        return _json({"quotas": gate.quotas.limits()})

    @router.delete("/faults")
    async def clear_faults(provider: str | None = None) -> Response:
        if provider is not None and provider not in PROVIDERS:
            return _error(400, "unknown_provider", f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
        return _json({"cleared": gate.faults.clear(provider)})

    return router
