"""How many worker pods are worth running, and which ones a scale-down should spare.

Two rules the operator applies to the workers KEDA scales (``unilingo_operator.scaling``):

* **Quota-aware maximum.** Pods beyond what the provider's policy lets run at once only
  wait: with OpenAI's 5 calls in flight and 4 job slots per pod, a third AI pod adds nothing
  but cost. ``useful_max_replicas`` derives each queue's ceiling from its provider's
  ``maxInFlight`` and the pods' concurrency, within the chart's own ``maxReplicas``. A provider
  that takes no calls now (suspended, paused after its own ``429``, or its breaker open) does
  not scale its queue up: the ceiling stays at the pods already running (at least one, which
  takes the breaker's probes and the jobs once the provider is back).
* **Deletion cost.** A pod running jobs carries a higher
  ``controller.kubernetes.io/pod-deletion-cost`` than an idle one, so the ReplicaSet removes
  idle pods first. Each worker's main process publishes how many jobs it runs under its pod's
  name (``publish_busy``, a short-lived key: a dead pod's count lapses by itself); the
  operator copies that count onto the pod (``deletion_cost``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from unilingo import keys
from unilingo.jobs import WORKLOADS
from unilingo.policy import ProviderPolicy

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
# On a worker's ScaledObject (the chart writes them): the ceiling the chart was given and the
# job slots per pod; the operator writes the ceiling in force and why.
CEILING_ANNOTATION = "unilingo.io/max-replicas"
CONCURRENCY_ANNOTATION = "unilingo.io/worker-concurrency"
REASON_ANNOTATION = "unilingo.io/max-replicas-reason"
QUEUE_LABEL = "unilingo.io/queue"

# A worker refreshes its count at least this often; the key outlives a few refreshes only.
BUSY_REFRESH_SECONDS = 5.0
BUSY_TTL_SECONDS = 15

QUEUE_PROVIDERS: dict[str, str | None] = {w.queue: w.provider for w in WORKLOADS.values()}


def queue_provider(queue: str) -> str | None:
    """The provider a queue's jobs pay (None: none, as for PDF extraction)."""
    return QUEUE_PROVIDERS.get(queue)


@dataclass(frozen=True)
class ProviderState:
    """What the rule needs of a provider: its policy and whether it takes calls now."""

    policy: ProviderPolicy
    breaker_open: bool = False  # open, or half-open with its probes out
    paused_for: float = 0.0  # seconds left of the provider's own Retry-After

    @property
    def blocked(self) -> str | None:
        """Why the provider takes no calls now, or None."""
        if self.policy.suspended:
            return "suspended"
        if self.breaker_open:
            return "breaker open"
        if self.paused_for > 0:
            return "paused by its 429"
        return None


@dataclass(frozen=True)
class Ceiling:
    replicas: int
    reason: str


def useful_max_replicas(
    provider: str | None,
    state: ProviderState | None,
    *,
    concurrency: int,
    ceiling: int,
    min_replicas: int = 0,
    current: int = 0,
) -> Ceiling:
    """The most pods of a queue worth running: the policy's calls in flight over the job slots
    per pod, rounded up, never above the chart's ``ceiling`` nor below one (or
    ``min_replicas``); a blocked provider's queue stays at the ``current`` pods."""
    floor = max(1, min_replicas)
    ceiling = max(floor, ceiling)
    if provider is None or state is None:
        return Ceiling(ceiling, "no provider: the chart's maxReplicas")
    in_flight = state.policy.max_in_flight
    slots = max(1, concurrency)
    useful = min(ceiling, max(floor, math.ceil(in_flight / slots)))
    why = f"{provider} allows {in_flight} in flight, {slots} per pod"
    if useful == ceiling and math.ceil(in_flight / slots) > ceiling:
        why += f"; the chart's maxReplicas {ceiling} is lower"
    blocked = state.blocked
    if blocked:
        held = min(useful, max(floor, current))
        return Ceiling(held, f"{provider} {blocked}: not scaling up ({why})")
    return Ceiling(useful, why)


def deletion_cost(busy: int) -> int:
    """The pod-deletion-cost of a pod running ``busy`` jobs: idle pods (0) go first."""
    return max(0, busy)


def busy_key(namespace: str, pod: str) -> str:
    return keys.worker_pod_busy(namespace, pod)


def publish_busy(client, namespace: str, pod: str, busy: int) -> None:
    """A worker's count of running jobs, under its pod's name, for ``BUSY_TTL_SECONDS``."""
    client.set(busy_key(namespace, pod), busy, ex=BUSY_TTL_SECONDS)


def parse_busy(raw) -> int:
    """A ``GET`` of ``busy_key`` as a count; a missing key (idle a while, or gone) is 0."""
    if raw is None:
        return 0
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return 0
