"""Request body caps and deadline, enforced while the body is read.

A declared ``Content-Length`` over the cap is refused before a byte is read; otherwise the
bytes are counted as they arrive and reading stops at the first chunk past the cap. Either
way the answer is ``413 payload_too_large``.

The whole body must arrive within ``body_timeout`` seconds of the first read: a client that
trickles it (a byte every few seconds) or stalls is answered ``408 request_timeout`` and its
connection closed, so it holds no server resources past the deadline.

A client that hangs up while its body is read is not a server error: it is logged on one line,
counted in ``unilingo_http_client_disconnects_total`` and recorded as status ``499`` (nginx's
"client closed request"), never as a ``500`` with a traceback.
"""

from __future__ import annotations

import logging
import math

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_response
from unilingo import metrics as m

log = logging.getLogger("api.requests")

CLIENT_CLOSED_REQUEST = 499


class BodyLimit:
    def __init__(self, app: ASGIApp, caps: dict[str, int], default: int, body_timeout: float = math.inf):
        self.app = app
        self.caps = caps
        self.default = default
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        cap = self.caps.get(scope["path"], self.default)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
                    return
                if declared > cap:
                    response = error_response(
                        413,
                        "payload_too_large",
                        f"the request body is {declared} bytes; the limit here is {cap} bytes",
                        headers={"Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return
                break
        received = 0
        deadline: float | None = None
        complete = False

        async def limited() -> Message:
            nonlocal received, deadline, complete
            if complete:  # the body is in: what follows is the wait for a disconnect (SSE, streams)
                return await receive()
            if deadline is None:
                deadline = anyio.current_time() + self.body_timeout
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {self.body_timeout:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise ApiError(
                        413, "payload_too_large", f"the request body is larger than the limit of {cap} bytes"
                    )
                complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                m.HTTP_CLIENT_DISCONNECTS.labels(route).inc()
                log.warning("client hung up during %s %s after %d bytes of its body", scope["method"], route, received)
                raise ApiError(CLIENT_CLOSED_REQUEST, "client_disconnected", "the client closed the connection")
            return message

        await self.app(scope, limited, send)
