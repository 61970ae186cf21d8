"""JSON responses rendered with orjson (FastAPI's own ORJSONResponse is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSON(JSONResponse):
    """``application/json`` rendered by orjson: several times faster than the stdlib."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
