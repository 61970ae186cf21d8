"""Closing an HTTP connection without an answer, as a provider that times out does.

ASGI has no message for "drop this connection": an app that returns without answering gets
a 500 from the server instead. So this middleware puts a ``hang_up()`` callable in the
scope. It aborts the socket through uvicorn's transport (reachable from its ``receive``
callable) and swallows whatever the app sends afterwards. Under a server that does not
expose its transport, it falls back to starting a response and never finishing it, which
makes the server close the connection mid-answer: the client still gets no usable reply.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCOPE_KEY = "sandbox.hang_up"


class HangUpMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        hung_up = False
        aborted = False

        def hang_up() -> None:
            nonlocal hung_up, aborted
            hung_up = True
            transport = getattr(getattr(receive, "__self__", None), "transport", None)
            if transport is not None and hasattr(transport, "abort"):
                transport.abort()
                aborted = True

        async def send_unless_hung_up(message: Message) -> None:
            if not hung_up:
                await send(message)

        scope[SCOPE_KEY] = hang_up
        await self.app(scope, receive, send_unless_hung_up)
        if not hung_up:
            return
        if aborted:
            # Let the server see the connection is lost before this call returns, or it
            # would try to answer the "unanswered" request with a 500.
            for _ in range(3):
                await asyncio.sleep(0)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})


def hang_up(scope: Scope) -> None:
    """Drop the connection of the request in ``scope`` (see ``HangUpMiddleware``)."""
    scope[SCOPE_KEY]()
