"""The operator's configuration: command line over environment over defaults.

Environment (the chart sets these; every one has a command-line twin in ``__main__``):

``KUBECONFIG``              kubeconfig to use; else ``.run/kubeconfig`` when present (``make
                            cluster`` writes it); else the in-cluster service account.
``REDIS_URL``               the Redis the workers read policies from (``unilingo.settings``).
``WATCH_NAMESPACE``         comma-separated namespaces to handle; empty or unset: all of them.
                            (``OPERATOR_NAMESPACES`` is the same; ``OPERATOR_CLUSTER_WIDE=true``
                            forces all namespaces: the chart's names.)
``OPERATOR_PEERING``        kopf peering object name; set: peering is mandatory (replicas > 1).
                            Unset: kopf's "default" object when its CRD exists, else standalone.
``OPERATOR_STANDALONE``     ``1``: no peering at all (one replica, or tests).
``OPERATOR_PRIORITY``       peering priority; unset: earlier-started replicas rank higher (see
                            ``default_priority``), so a new replica never preempts a running one.
``OPERATOR_PEERING_LIFETIME`` seconds a replica's keep-alive counts (default 30): how long a
                            standby waits after the active replica died without saying goodbye.
``OPERATOR_HEALTH_PORT``    port of kopf's liveness endpoint ``/healthz`` (0: none; default 8081).
``OPERATOR_REPAIR_SECONDS`` how often Redis is checked against the policies (default 5).
``POD_ID``                  the replica's identity in the peering object (the pod name).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_KUBECONFIG = ROOT / ".run" / "kubeconfig"

# Priorities decrease with the start time; the random part breaks ties within one second
# (kopf pauses every replica when two live ones share a priority).
_EPOCH_CEILING = 4_000_000_000


def default_priority(now: float | None = None) -> int:
    started = int(now if now is not None else time.time())
    return (_EPOCH_CEILING - started) * 1_000 + random.randrange(1_000)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass
class OperatorConfig:
    namespaces: list[str] = dataclasses.field(default_factory=list)  # empty: all namespaces
    peering_name: str | None = None  # None: auto-detect kopf's "default"; set: mandatory
    standalone: bool = False
    priority: int = dataclasses.field(default_factory=default_priority)
    peering_lifetime: int = 30
    health_port: int = 8081
    repair_seconds: float = 5.0
    kubeconfig: str | None = None
    verbose: bool = False

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def effective_peering_name(self) -> str:
        return self.peering_name or "default"

    @property
    def liveness_endpoint(self) -> str | None:
        return f"http://0.0.0.0:{self.health_port}/healthz" if self.health_port else None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        config = cls()
        listed = env.get("WATCH_NAMESPACE") or env.get("OPERATOR_NAMESPACES") or ""
        config.namespaces = [ns.strip() for ns in listed.split(",") if ns.strip()]
        if _flag(env.get("OPERATOR_CLUSTER_WIDE")):
            config.namespaces = []
        config.peering_name = env.get("OPERATOR_PEERING") or None
        config.standalone = _flag(env.get("OPERATOR_STANDALONE"))
        if env.get("OPERATOR_PRIORITY"):
            config.priority = int(env["OPERATOR_PRIORITY"])
        if env.get("OPERATOR_PEERING_LIFETIME"):
            config.peering_lifetime = int(env["OPERATOR_PEERING_LIFETIME"])
        if env.get("OPERATOR_HEALTH_PORT") is not None and env.get("OPERATOR_HEALTH_PORT") != "":
            config.health_port = int(env["OPERATOR_HEALTH_PORT"])
        if env.get("OPERATOR_REPAIR_SECONDS"):
            config.repair_seconds = float(env["OPERATOR_REPAIR_SECONDS"])
        config.kubeconfig = env.get("KUBECONFIG") or None
        return config

    def resolve_kubeconfig(self) -> str | None:
        """``KUBECONFIG``, else ``.run/kubeconfig`` if present, else None (in-cluster)."""
        if self.kubeconfig:
            return self.kubeconfig
        if LOCAL_KUBECONFIG.exists():
            return str(LOCAL_KUBECONFIG)
        return None
