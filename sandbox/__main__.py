"""``python -m sandbox``: serve the provider sandbox in the foreground until SIGINT/SIGTERM.

Environment:
  SANDBOX_PORT            OpenAI and Azure emulation and /_sandbox control (default 8090)
  SANDBOX_AWS_PORT        moto's Polly and S3 (default SANDBOX_PORT + 1)
  SANDBOX_HOST            address to listen on (default 127.0.0.1)
  SANDBOX_LATENCY_SCALE   factor on the providers' real latencies (default 1.0)
  SANDBOX_LOG_LEVEL       critical, error, warning, info or debug (default info)
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from sandbox.app import create_app


def _env_number(name: str, default: str, kind: type) -> int | float:
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        sys.exit(f"sandbox: {name}={raw!r} is not a valid {kind.__name__}")
    if value < 0:
        sys.exit(f"sandbox: {name} must not be negative")
    return value


def main() -> None:
    port = _env_number("SANDBOX_PORT", "8090", int)
    aws_port = _env_number("SANDBOX_AWS_PORT", str(port + 1), int)
    latency_scale = _env_number("SANDBOX_LATENCY_SCALE", "1.0", float)
    host = os.environ.get("SANDBOX_HOST", "127.0.0.1")
    log_level = os.environ.get("SANDBOX_LOG_LEVEL", "info").lower()

    # moto's werkzeug server logs every request at INFO, as uvicorn's access log does.
    logging.getLogger("werkzeug").setLevel(log_level.upper())
    print(
        f"sandbox: OpenAI http://{host}:{port}/openai/v1 · Azure http://{host}:{port} · "
        f"AWS http://{host}:{aws_port} · latency x{latency_scale}",
        flush=True,
    )
    app = create_app(latency_scale=latency_scale, aws_port=aws_port, host=host)
    # uvicorn handles SIGINT and SIGTERM: it stops serving, then the lifespan stops moto.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
