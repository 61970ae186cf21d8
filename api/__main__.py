"""``python -m api`` (``make api``): serve the API with uvicorn on ``API_PORT``.

uvloop and httptools, no access log (``API_ACCESS_LOG=1`` turns it on), ``API_HOST``
(default 127.0.0.1; the Helm chart sets 0.0.0.0) and ``WEB_CONCURRENCY`` worker processes (default 1; one per core is
the usual choice when not scaled by replicas). With several, their Prometheus metrics are
kept in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless set) and summed by
``/metrics``.
"""

from __future__ import annotations

import os

import uvicorn

from unilingo.settings import get_settings


def main() -> None:
    settings = get_settings()
    workers = max(1, settings.web_concurrency)
    if workers > 1:
        # Several processes answer on one port, and a scrape reaches any one of them: they keep
        # their metrics in files that /metrics sums (prometheus-client multiprocess mode).
        import tempfile

        from unilingo import metrics

        owned = not os.environ.get(metrics.MULTIPROC_ENV)
        path = os.environ.get(metrics.MULTIPROC_ENV) or tempfile.mkdtemp(prefix="unilingo-api-metrics-")
        metrics.enable_multiprocess(path, clean=True)  # the environment passes it on to the processes
        if owned:
            import atexit
            import shutil

            atexit.register(shutil.rmtree, path, ignore_errors=True)
    uvicorn.run(
        "api.main:app",
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        access_log=settings.api_access_log,
        workers=workers if workers > 1 else None,
        proxy_headers=False,  # X-Forwarded-For is read by the quota code, from trusted proxies only
        server_header=False,
        timeout_graceful_shutdown=10,
        log_level=settings.api_log_level.lower(),
    )


if __name__ == "__main__":
    main()
