"""The workers' scaling, kept in line with the providers (the rules are ``unilingo.scaling``).

A loop beside kopf's handlers, once every ``OPERATOR_SCALING_SECONDS``, over the worker pods
and ScaledObjects of the release (``OPERATOR_WORKERS_NAMESPACE`` and
``OPERATOR_WORKERS_SELECTOR``, which the chart sets; unset, the loop does not run):

* each worker pod's ``controller.kubernetes.io/pod-deletion-cost`` becomes the count of jobs
  its worker publishes as running, so a scale-down removes idle pods first;
* each ScaledObject the chart marked with ``unilingo.io/max-replicas`` gets the
  ``maxReplicaCount`` its provider's policy makes useful, live when the policy or the
  breaker changes (KEDA carries it to the HPA at once).

Both are merge patches sent only when the value differs, so a quiet cluster costs two list
requests and one Redis round trip per provider a tick. A failed tick is logged and the next
one starts afresh (a new login: service account tokens are rotated).

The same tick does the workers' job housekeeping (``JobStore.promote_due``,
``requeue_stalled``, ``rescue_lost``: atomic scripts, safe beside the workers' own loops). With
every queue scaled to zero no worker runs it, and a job deferred for a permit, backing off, or
whose worker died would otherwise wait for a worker that KEDA never starts: KEDA counts the
queue's list, and such a job is not in it until it is queued again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import kopf

from unilingo import scaling
from unilingo.jobs import QUEUES, JobStore
from unilingo.limiter import AsyncLimiter, BreakerState
from unilingo_operator import kube

log = logging.getLogger("unilingo_operator.scaling")

SCALED_OBJECTS = "apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects"
PODS = "api/v1/namespaces/{namespace}/pods"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
RESCUE_SECONDS = 10.0  # as often as a worker's housekeeping looks for lost messages


def _live(pod: dict[str, Any]) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return not meta.get("deletionTimestamp") and status.get("phase") in ("Pending", "Running")


async def provider_state(limiter: AsyncLimiter, provider: str) -> scaling.ProviderState:
    status = await limiter.status(provider)
    probes_out = status.breaker == BreakerState.HALF_OPEN and (
        status.breaker_probes_in_flight >= status.policy.breaker.half_open_probes
    )
    return scaling.ProviderState(
        policy=status.policy,
        breaker_open=status.breaker == BreakerState.OPEN or probes_out,
        paused_for=status.paused_for,
    )


class Scaler:
    def __init__(self, client, *, namespace: str, selector: str, settings: kopf.OperatorSettings, jobs: JobStore):
        self.client = client
        self.jobs = jobs
        self._rescued = 0.0
        self.limiter = AsyncLimiter(client)
        self.namespace = namespace
        self.selector = selector
        self.settings = settings

    async def _list(self, session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
        async with session.get(url.format(namespace=self.namespace), params={"labelSelector": self.selector}) as r:
            if r.status == 404:
                return []  # no KEDA (its CRD is absent): nothing to do for ScaledObjects
            r.raise_for_status()
            return (await r.json()).get("items", [])

    async def _patch(self, session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
        async with session.patch(url.format(namespace=self.namespace), json=body, headers=MERGE_PATCH) as r:
            if r.status == 404:
                return  # gone meanwhile
            r.raise_for_status()

    def housekeeping(self) -> None:
        """Queue again the jobs whose wait is over or whose worker is gone (a sync client)."""
        self.jobs.promote_due()
        self.jobs.requeue_stalled()
        now = time.monotonic()
        if now - self._rescued >= RESCUE_SECONDS:
            for queue in QUEUES:
                self.jobs.rescue_lost(queue)
            self._rescued = now

    async def tick(self, session: aiohttp.ClientSession) -> None:
        await asyncio.to_thread(self.housekeeping)
        pods = [p for p in await self._list(session, PODS) if _live(p)]
        await self._deletion_costs(session, pods)
        await self._ceilings(session, pods)

    async def _deletion_costs(self, session, pods: list[dict[str, Any]]) -> None:
        if not pods:
            return
        names = [p["metadata"]["name"] for p in pods]
        raw = await self.client.mget([scaling.busy_key(self.namespace, n) for n in names])
        for pod, name, busy in zip(pods, names, raw, strict=True):
            cost = str(scaling.deletion_cost(scaling.parse_busy(busy)))
            current = (pod["metadata"].get("annotations") or {}).get(scaling.DELETION_COST_ANNOTATION)
            if current != cost:
                body = {"metadata": {"annotations": {scaling.DELETION_COST_ANNOTATION: cost}}}
                await self._patch(session, f"{PODS}/{name}", body)
                log.debug("pod %s: deletion cost %s -> %s", name, current, cost)

    async def _ceilings(self, session, pods: list[dict[str, Any]]) -> None:
        states: dict[str, scaling.ProviderState] = {}
        for so in await self._list(session, SCALED_OBJECTS):
            meta, spec = so["metadata"], so.get("spec") or {}
            annotations = meta.get("annotations") or {}
            if scaling.CEILING_ANNOTATION not in annotations:
                continue  # quota-aware maximum off for this queue: the chart's value stands
            queue = (meta.get("labels") or {}).get(scaling.QUEUE_LABEL, "")
            provider = scaling.queue_provider(queue)
            if provider and provider not in states:
                states[provider] = await provider_state(self.limiter, provider)
            current = sum(1 for p in pods if (p["metadata"].get("labels") or {}).get(scaling.QUEUE_LABEL) == queue)
            ceiling = scaling.useful_max_replicas(
                provider,
                states.get(provider) if provider else None,
                concurrency=int(annotations.get(scaling.CONCURRENCY_ANNOTATION, "1")),
                ceiling=int(annotations[scaling.CEILING_ANNOTATION]),
                min_replicas=int(spec.get("minReplicaCount") or 0),
                current=current,
            )
            if spec.get("maxReplicaCount") == ceiling.replicas and annotations.get(scaling.REASON_ANNOTATION) == (
                ceiling.reason
            ):
                continue
            body = {
                "metadata": {"annotations": {scaling.REASON_ANNOTATION: ceiling.reason}},
                "spec": {"maxReplicaCount": ceiling.replicas},
            }
            await self._patch(session, f"{SCALED_OBJECTS}/{meta['name']}", body)
            if spec.get("maxReplicaCount") != ceiling.replicas:
                log.info(
                    "ScaledObject %s: maxReplicaCount %s -> %d (%s)",
                    meta["name"],
                    spec.get("maxReplicaCount"),
                    ceiling.replicas,
                    ceiling.reason,
                )

    async def run(self, interval: float) -> None:
        while True:
            try:
                info = kube.login(settings=self.settings)
                async with kube.session(info) as session:
                    while True:
                        await self.tick(session)
                        await asyncio.sleep(interval)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("scaling tick failed (%s: %s); retrying", type(error).__name__, error)
                await asyncio.sleep(max(interval, 2.0))
