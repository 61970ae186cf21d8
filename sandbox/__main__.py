"""``python -m sandbox``: serve the provider sandbox in the foreground until SIGINT/SIGTERM.

Settings (``unilingo.settings``, from the environment):
  SANDBOX_PORT            OpenAI and Azure emulation and /_sandbox control (default 8090)
  SANDBOX_AWS_PORT        moto's Polly and S3 (default SANDBOX_PORT + 1)
  SANDBOX_HOST            address to listen on (default 127.0.0.1)
  SANDBOX_LATENCY_SCALE   factor on the providers' real latencies (default 1.0)
  SANDBOX_LOG_LEVEL       critical, error, warning, info or debug (default info)
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from sandbox.app import create_app
from unilingo.settings import get_settings


def main() -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        sys.exit(f"sandbox: {exc}")
    host, port, aws_port = settings.sandbox_host, settings.sandbox_port, settings.aws_sandbox_port()
    latency_scale = settings.sandbox_latency_scale
    log_level = settings.sandbox_log_level.lower()

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
