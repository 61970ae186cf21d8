"""Request body caps enforced while the body is read.

A declared ``Content-Length`` over the cap is refused before a byte is read; otherwise the
bytes are counted as they arrive and reading stops at the first chunk past the cap. Either
way the answer is ``413 payload_too_large``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, caps: dict[str, int], default: int):
        self.app = app
        self.caps = caps
        self.default = default

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
                        413, "payload_too_large", f"the request body is {declared} bytes; the limit here is {cap} bytes",
                        headers={"Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise ApiError(413, "payload_too_large", f"the request body is larger than the limit of {cap} bytes")
            return message

        await self.app(scope, limited, send)
