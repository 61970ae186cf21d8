"""The ASGI app: ``uvicorn api.main:app`` (or ``python -m api``).

``create_app(settings)`` builds an app for the given settings (tests build their own);
``app`` is the one built from the environment. The lifespan opens one ``redis.asyncio``
client (its connection pool serves every request) and closes it on shutdown.
"""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from api import errors
from api.config import ApiConfig
from api.deps import Services
from api.metrics import FLUSHER, MetricsMiddleware
from api.middleware import BodyLimit
from api.responses import JSON
from api.routes import health, jobs, monitoring, saved, submit
from api.security import TokenVerifier
from unilingo import errors_reporting, tracing
from unilingo.settings import Settings, get_settings

DESCRIPTION = """
Unilingo's job API. Submissions are validated, recorded in Redis and queued for the workers
at once: the answer is `202 {job_id, status_url, events_url}` in milliseconds. Follow a job
by polling `GET /api/jobs/{id}`, by server-sent events on `/api/jobs/{id}/events`, or with a
signed webhook (`webhook_url`).

Every `/api/` route but health needs `Authorization: Bearer <Supabase JWT>`. Errors are
`{"error": {"code", "message"}}`.
"""


_FROZEN = False


def freeze_startup_objects() -> None:
    """Move what the process holds after startup out of the garbage collector's sight.

    Some 300,000 objects (modules, FastAPI's routes and schemas, pydantic's validators) live as
    long as the process; every full collection walked them all, 20-80 ms on a busy core, and the
    first ones came with the first requests: a pause that every request then in flight waited
    out. After ``gc.freeze()`` a full collection walks only what was allocated since. Once per
    process (after a collection, so no garbage is frozen with them).
    """
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    # Process-wide and idempotent; each a no-op unless OTEL_EXPORTER_OTLP_ENDPOINT / SENTRY_DSN
    # is set. Before the app exists: Sentry wraps routes as they are built, and FastAPI traces
    # requests natively once a tracer provider is set.
    tracing.setup(tracing.API_SERVICE)
    errors_reporting.setup("api")
    settings = settings or get_settings()
    config = ApiConfig.from_settings(settings)
    services = Services(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services.bind()
        freeze_startup_objects()
        try:
            yield
        finally:
            await FLUSHER.flush(services)  # the last second of cluster totals
            await services.aclose()

    # /docs (Swagger UI) and /redoc with their scripts served by the API itself, from the
    # fastapi-offline package: they render without internet access.
    app = FastAPIOffline(
        title="Unilingo API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSON,
        docs_url="/docs",
        redoc_url="/redoc",
        static_url="/docs/static",
        openapi_url="/openapi.json",
        # FastAPI's native OpenTelemetry: a SERVER span per request once tracing.setup set a
        # provider. No per-dependency/endpoint spans: two spans fewer on the submit path.
        telemetry={"operation_spans": False},
    )
    app.state.settings = settings
    app.state.config = config
    app.state.services = services
    app.state.verifier = TokenVerifier(settings)

    errors.install(app)
    app.add_middleware(
        BodyLimit,
        caps=config.body_caps,
        default=config.json_body_cap,
        body_timeout=settings.request_body_timeout_seconds,
    )
    app.add_middleware(MetricsMiddleware)  # outermost: sees every answer, 413s included

    app.include_router(health.router)
    app.include_router(submit.router)
    app.include_router(jobs.router)
    app.include_router(saved.router)
    app.include_router(monitoring.router)
    app.mount("/monitoring/static", StaticFiles(directory=monitoring.STATIC), name="monitoring-static")
    return app


app = create_app()
