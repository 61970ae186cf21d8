"""The sandbox's ASGI application: every emulated provider plus the control endpoints.

``create_app`` is what ``python -m sandbox`` serves and what a test can serve itself.
Given ``aws_port``, the app's lifespan also runs moto (Polly and S3) on that port.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from sandbox import azure_common, azure_speech, azure_vision, control, openai_api, recognition
from sandbox.aws import AwsServer
from sandbox.gate import HangUp, Refusal
from sandbox.hangup import HangUpMiddleware, hang_up
from sandbox.profiles import AZURE_SPEECH, AZURE_VISION, OPENAI
from sandbox.runtime import Sandbox

# Each provider's refusals in that provider's own error shape.
REFUSAL_RESPONSES = {
    OPENAI: openai_api.refusal_response,
    AZURE_SPEECH: lambda refusal: azure_common.refusal_response(refusal, "Speech recognition"),
    AZURE_VISION: lambda refusal: azure_common.refusal_response(refusal, "Read"),
}


def create_app(
    latency_scale: float = 1.0,
    aws_port: int | None = None,
    host: str = "127.0.0.1",
    sandbox: Sandbox | None = None,
) -> FastAPI:
    sandbox = sandbox or Sandbox(latency_scale=latency_scale)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        recognition.warm_up()
        aws = AwsServer(sandbox, host, aws_port) if aws_port is not None else None
        if aws is not None:
            await asyncio.to_thread(aws.start)
            sandbox.aws_endpoint = aws.endpoint
        try:
            yield
        finally:
            if aws is not None:
                await asyncio.to_thread(aws.stop)

    app = FastAPI(
        title="Unilingo provider sandbox",
        lifespan=lifespan,
        # Out of the way of the emulated providers' own paths.
        docs_url="/_sandbox/docs",
        openapi_url="/_sandbox/openapi.json",
    )
    app.state.sandbox = sandbox
    app.add_middleware(HangUpMiddleware)

    @app.exception_handler(Refusal)
    async def refused(request: Request, refusal: Refusal) -> Response:
        return REFUSAL_RESPONSES[refusal.provider](refusal)

    @app.exception_handler(HangUp)
    async def hung_up(request: Request, fault: HangUp) -> Response:
        await asyncio.sleep(fault.hold_s)
        hang_up(request.scope)
        return Response(status_code=504)  # never sent: the connection is already gone

    for module in (control, openai_api, azure_speech, azure_vision):
        app.include_router(module.create_router(sandbox))
    from sandbox import speech_ws  # Azure Speech over ws:// for the real SDK, as a Speech container serves it

    app.include_router(speech_ws.create_router(sandbox))
    return app
