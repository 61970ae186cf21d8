"""The operator's configuration: command line over environment over defaults.

One pydantic-settings object, its variables prefixed ``OPERATOR_`` but for the three that
Kubernetes' own conventions name (the chart sets them all; each has a command-line twin in
``__main__``):

``KUBECONFIG``              kubeconfig to use; else ``.run/kubeconfig`` when present (``make
                            cluster`` writes it); else the in-cluster service account.
``WATCH_NAMESPACE``         comma-separated namespaces to handle; empty or unset: all of them.
                            (``OPERATOR_NAMESPACES`` is the same; ``OPERATOR_CLUSTER_WIDE=true``
                            forces all namespaces: the chart's names.)
``POD_ID``                  the replica's identity in the peering object and its events.
``OPERATOR_PEERING``        kopf peering object name; set: peering is mandatory (replicas > 1).
                            Unset: kopf's "default" object when its CRD exists, else standalone.
``OPERATOR_STANDALONE``     ``1``: no peering at all (one replica, or tests).
``OPERATOR_PRIORITY``       peering priority; unset: earlier-started replicas rank higher (see
                            ``default_priority``), so a new replica never preempts a running one.
``OPERATOR_PEERING_LIFETIME`` seconds a replica's keep-alive counts (default 30): how long a
                            standby waits after the active replica died without saying goodbye.
``OPERATOR_HEALTH_HOST``    address of kopf's liveness endpoint (default 127.0.0.1; the chart
                            sets 0.0.0.0 so that the kubelet's probe reaches it).
``OPERATOR_HEALTH_PORT``    port of kopf's liveness endpoint ``/healthz`` (0: none; default 8081).
``OPERATOR_REPAIR_SECONDS`` how often Redis is checked against the policies (default 5).
``OPERATOR_WORKERS_NAMESPACE`` / ``OPERATOR_WORKERS_SELECTOR`` the worker pods and ScaledObjects
                            whose pod-deletion-cost and maxReplicaCount the operator keeps in line
                            (``unilingo_operator.scaling``); no selector: it leaves them alone.
``OPERATOR_SCALING_SECONDS`` how often it does (default 1).
``OPERATOR_LIVE_SECONDS``   how often each policy's ``status.live`` is refreshed from Redis:
                            breaker, pause, effective limits (default 10; patched only on change).

Redis is ``REDIS_URL`` and the rest of ``unilingo.settings``, as for every process.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
LOCAL_KUBECONFIG = ROOT / ".run" / "kubeconfig"

# Priorities decrease with the start time; the random part breaks ties within one second
# (kopf pauses every replica when two live ones share a priority).
_EPOCH_CEILING = 4_000_000_000


def default_priority(now: float | None = None) -> int:
    started = int(now if now is not None else time.time())
    return (_EPOCH_CEILING - started) * 1_000 + random.randrange(1_000)


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_", env_file=None, extra="ignore")

    # empty: all namespaces
    namespaces: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("WATCH_NAMESPACE", "OPERATOR_NAMESPACES")
    )
    cluster_wide: bool = False
    # None: auto-detect kopf's "default"; set: mandatory
    peering_name: str | None = Field(None, validation_alias=AliasChoices("OPERATOR_PEERING", "peering_name"))
    standalone: bool = False
    priority: int = Field(default_factory=default_priority)
    peering_lifetime: int = 30
    health_host: str = "127.0.0.1"
    health_port: int = 8081
    repair_seconds: float = 5.0
    workers_namespace: str | None = Field(
        None, validation_alias=AliasChoices("OPERATOR_WORKERS_NAMESPACE", "POD_NAMESPACE", "workers_namespace")
    )
    workers_selector: str = ""
    scaling_seconds: float = 1.0
    live_seconds: float = 10.0
    kubeconfig: str | None = Field(None, validation_alias=AliasChoices("KUBECONFIG", "kubeconfig"))
    pod_id: str | None = Field(None, validation_alias=AliasChoices("POD_ID", "pod_id"))
    verbose: bool = False

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            return [ns.strip() for ns in value.split(",") if ns.strip()]
        return value

    @field_validator("peering_name", "kubeconfig", "pod_id", "workers_namespace", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return value or None

    @model_validator(mode="after")
    def _cluster_wide_means_every_namespace(self) -> OperatorConfig:
        if self.cluster_wide:
            self.namespaces = []
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # A comma-separated list, not JSON, in WATCH_NAMESPACE: the env source must not decode it.
        env_settings.decode_complex_value = lambda field_name, field, value: value
        return init_settings, env_settings

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def effective_peering_name(self) -> str:
        return self.peering_name or "default"

    @property
    def liveness_endpoint(self) -> str | None:
        return f"http://{self.health_host}:{self.health_port}/healthz" if self.health_port else None

    def resolve_kubeconfig(self) -> str | None:
        """``KUBECONFIG``, else ``.run/kubeconfig`` if present, else None (in-cluster)."""
        if self.kubeconfig:
            return self.kubeconfig
        if LOCAL_KUBECONFIG.exists():
            return str(LOCAL_KUBECONFIG)
        return None
