"""The kopf registrations, thin: each handler hands its arguments to ``reconcile``.

``register(registry, config)`` registers into a registry of the caller's (``__main__`` passes a
fresh one), so that configuration (the repair interval) is known before handlers exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import kopf

from unilingo.connections import redis_client
from unilingo.jobs import JobStore
from unilingo.settings import get_settings
from unilingo_operator import ANNOTATION_PREFIX, FINALIZER, GROUP, PLURAL, VERSION, kube, reconcile, scaling
from unilingo_operator.config import OperatorConfig

RESOURCE = (GROUP, VERSION, PLURAL)


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings: our finalizer and annotations, events, watch timeouts, peering."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Events: only the ones posted on purpose (PolicyWritten, InvalidSpec, Repaired, ...).
    settings.posting.enabled = True
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "unilingo-operator"
    # Watches: the server ends each watch after server_timeout (kopf reconnects at once);
    # the client gives up on a silent connection a little later.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Peering: keep-alives every few seconds, a dead replica's record expires after `lifetime`.
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.stealth = True
    # Namespaced (exact names): no cluster-wide scanning of namespaces and CRDs, so the
    # operator needs no cluster-scoped permission at all (kopf would otherwise list namespaces
    # and retry on 403 for a minute). The CRD must then exist at startup: the startup handler
    # waits for it. Cluster-wide: kopf watches CRDs, so the operator may start before them.
    settings.scanning.disabled = bool(config.namespaces) and not any(set(ns) & set("*?[!") for ns in config.namespaces)
    # Handlers are async; the executor is only a fallback.
    settings.execution.max_workers = 4


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    @kopf.on.login(id="login", registry=registry)
    def login(settings: kopf.OperatorSettings, logger, **_):
        return kube.login(settings=settings, logger=logger)

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_):
        info = kube.login(settings=settings, logger=logger)
        try:
            if not await kube.served(info, f"apis/{GROUP}/{VERSION}", PLURAL):
                raise kopf.TemporaryError(
                    f"{PLURAL}.{GROUP}/{VERSION} is not served yet (install manifests/crd/); waiting", delay=5
                )
            if not settings.peering.standalone:
                found = await kube.ensure_peering(
                    info, name=settings.peering.name, namespaces=config.namespaces, logger=logger
                )
                # With the peering object there, peering is mandatory: kopf then starts paused
                # and only resumes once the keep-alives show no live peer of higher priority,
                # so a standby never handles the initial listing in the moment before it knows.
                if settings.peering.mandatory and not found:
                    logger.error(
                        f"peering is mandatory but the peering object {settings.peering.name!r} is missing "
                        "and cannot be created: the operator stays paused until it exists"
                    )
                settings.peering.mandatory = settings.peering.mandatory or found
        except (aiohttp.ClientError, TimeoutError) as error:
            raise kopf.TemporaryError(f"API server unreachable: {error!r}", delay=5) from error
        memo.runtime = reconcile.Runtime.connect(get_settings().redis_url)
        memo.scaler = None
        if config.workers_selector and config.workers_namespace:
            scaler = scaling.Scaler(
                memo.runtime.client,
                namespace=config.workers_namespace,
                selector=config.workers_selector,
                settings=settings,
                jobs=JobStore(redis_client(get_settings()), ttl=get_settings().job_ttl_seconds),
            )
            memo.scaler = asyncio.create_task(scaler.run(config.scaling_seconds), name="unilingo-scaling")
            logger.info(
                f"keeping the pod-deletion-cost and maxReplicaCount of workers {config.workers_selector!r} "
                f"in {config.workers_namespace} in line, every {config.scaling_seconds:g}s"
            )
        where = "all namespaces" if config.clusterwide else ", ".join(config.namespaces)
        logger.info(
            f"watching {PLURAL}.{GROUP} in {where}; Redis {get_settings().redis_url}; "
            f"peering {'off' if settings.peering.standalone else settings.peering.name} "
            f"(priority {settings.peering.priority})"
        )

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: kopf.Memo, **_):
        if getattr(memo, "scaler", None) is not None:
            memo.scaler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await memo.scaler
        if getattr(memo, "runtime", None) is not None:
            await memo.runtime.close()

    @kopf.index(*RESOURCE, id="claims", registry=registry)
    def claims(body, **_):
        return reconcile.claim(body)

    @kopf.on.create(*RESOURCE, id="apply", registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", id="apply", registry=registry)
    @kopf.on.resume(*RESOURCE, id="apply", registry=registry)
    async def apply(body, patch, reason, retry, claims, memo: kopf.Memo, logger, **_):
        await reconcile.apply(
            memo.runtime, body=body, patch=patch, index=claims, cause=str(reason), retry=retry, logger=logger
        )

    @kopf.on.delete(*RESOURCE, id="restore", registry=registry)
    async def restore(body, retry, claims, memo: kopf.Memo, logger, **_):
        await reconcile.restore(memo.runtime, body=body, index=claims, retry=retry, logger=logger)

    @kopf.timer(
        *RESOURCE, id="repair", interval=config.repair_seconds, initial_delay=config.repair_seconds, registry=registry
    )
    async def repair(body, patch, claims, memo: kopf.Memo, logger, **_):
        await reconcile.repair(memo.runtime, body=body, patch=patch, index=claims, logger=logger)

    @kopf.timer(
        *RESOURCE, id="live", interval=config.live_seconds, initial_delay=config.live_seconds, registry=registry
    )
    async def live(body, patch, claims, memo: kopf.Memo, logger, **_):
        await reconcile.report_live(memo.runtime, body=body, patch=patch, index=claims, logger=logger)

    @kopf.on.probe(id="redis", registry=registry)
    async def redis_probe(memo: kopf.Memo, **_):
        # Reported, never failing: restarting the operator would not bring Redis back.
        try:
            await memo.runtime.client.ping()
            return "ok"
        except Exception as error:
            return f"unavailable: {type(error).__name__}"
