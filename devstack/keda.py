"""KEDA (operator and metrics adapter, built by ``scripts/tools.sh``) for ``make cluster``.

Out of cluster, as processes of ``make cluster`` on the host, against the local API server:
no KEDA image can be pulled here and KEDA's module ships kustomize overlays rather than
plain manifests, while the same binaries run unchanged out of cluster (they take a
kubeconfig). What makes that work like an in-cluster KEDA:

- the CRDs are the module's own (``config/crd/bases``), applied server-side;
- the operator runs in a private mount namespace whose ``/etc/resolv.conf`` names the
  node's CoreDNS, so the Redis address a ScaledObject carries
  (``<release>-redis.<ns>.svc.cluster.local``) resolves and kube-proxy routes it from the
  host as from a pod;
- the metrics adapter is registered as the ``v1beta1.external.metrics.k8s.io`` APIService
  behind a ``keda/keda-metrics-apiserver`` Service of type ExternalName ``localhost``;
- operator and adapter share the certificates the operator generates: its certificate
  rotator writes them to the Secret ``keda/kedaorg-certs`` and exits, expecting its pod to
  restart with that Secret mounted at ``--cert-dir``; here they are copied from the Secret
  into ``--cert-dir`` and the operator is started again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from devstack.ports import free_ports
from devstack.processes import log_tail, spawn_daemon, terminate

if TYPE_CHECKING:  # pragma: no cover
    from devstack.cluster import ControlPlane

REPO_ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "keda"
METRICS_SERVICE_AUTHORITY = f"keda-operator.{NAMESPACE}.svc.cluster.local"


class KedaError(RuntimeError):
    """KEDA could not be started."""


def keda_version() -> str:
    """The KEDA version scripts/tools.sh pins (the one place it is written)."""
    text = (REPO_ROOT / "scripts" / "tools.sh").read_text()
    match = re.search(r"^KEDA_VERSION=(v\S+)", text, re.M)
    if not match:
        raise KedaError("KEDA_VERSION not found in scripts/tools.sh")
    return match.group(1)


def crd_dir() -> Path:
    """config/crd/bases of the pinned KEDA module (from the Go module cache)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"github.com/kedacore/keda/v2@{keda_version()}"],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "GOFLAGS": "", "GOWORK": "off"},
    )
    if proc.returncode != 0:
        raise KedaError(f"go mod download of KEDA failed: {proc.stdout}{proc.stderr}")
    return Path(json.loads(proc.stdout)["Dir"]) / "config" / "crd" / "bases"


class Keda:
    def __init__(self, cp: ControlPlane, workdir: Path, dns_server: str, *, timeout: float = 180.0):
        self.cp = cp
        self.workdir = Path(workdir).resolve()
        self.dns_server = dns_server
        self.timeout = timeout
        self.logs_dir = cp.logs_dir
        self.timings: dict[str, float] = {}
        self._operator: subprocess.Popen | None = None
        self._adapter: subprocess.Popen | None = None
        self._logs: list[IO] = []

    def start(self) -> Keda:
        t0 = time.monotonic()
        operator_bin, adapter_bin = self.cp._binary("keda-operator"), self.cp._binary("keda-adapter")
        certs, ca_dir = self.workdir / "certs", self.workdir / "ca"
        for d in (certs, ca_dir):
            d.mkdir(parents=True, exist_ok=True)
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(
            f"nameserver {self.dns_server}\nsearch keda.svc.cluster.local svc.cluster.local cluster.local\n"
        )
        self._apply_crds()
        metrics, probe, grpc, adapter_port, adapter_metrics = free_ports(5)
        self._apply(self._service_objects(adapter_port))
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cp.kubeconfig),
            "WATCH_NAMESPACE": "",
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
            "POD_NAMESPACE": NAMESPACE,
            "OPERATOR_NAME": "keda-operator",
        }
        operator_argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --bind "{resolv}" /etc/resolv.conf && exec "$0" "$@"',
            str(operator_bin),
            "--leader-elect=false",
            f"--metrics-bind-address=127.0.0.1:{metrics}",
            f"--health-probe-bind-address=127.0.0.1:{probe}",
            f"--metrics-service-bind-address=127.0.0.1:{grpc}",
            "--enable-cert-rotation=true",
            f"--cert-dir={certs}",
            f"--ca-dir={ca_dir}",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            "--zap-log-level=info",
            "--zap-encoder=console",
        ]
        try:
            self._copy_certs(certs)
            self._operator = self._spawn("keda-operator", operator_argv, env)
            deadline = t0 + self.timeout
            while not (
                self._copy_certs(certs)
                and self._operator.poll() is None
                and self._probe(lambda: self._http_ok(probe, "/readyz"))
            ):
                if self._operator.poll() == 0 and self._copy_certs(certs):
                    # The rotator made new certificates and exited for its "pod restart".
                    self._operator = self._spawn("keda-operator", operator_argv, env)
                elif self._operator.poll() is not None or time.monotonic() > deadline:
                    self._wait("keda-operator", self._operator, lambda: False, t0)
                time.sleep(0.5)
            self.timings["keda-operator"] = round(time.monotonic() - t0, 2)
            self._adapter = self._spawn(
                "keda-adapter",
                [
                    str(adapter_bin),
                    f"--lister-kubeconfig={self.cp.kubeconfig}",
                    f"--authentication-kubeconfig={self.cp.kubeconfig}",
                    f"--authorization-kubeconfig={self.cp.kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={adapter_port}",
                    f"--cert-dir={certs}",
                    f"--port={adapter_metrics}",
                    f"--metrics-service-address=127.0.0.1:{grpc}",
                    f"--metrics-service-grpc-authority={METRICS_SERVICE_AUTHORITY}",
                    "--zap-log-level=info",
                    "--zap-encoder=console",
                ],
                env,
            )
            self._wait("keda-adapter", self._adapter, self._apiservice_available, t0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for attr in ("_adapter", "_operator"):
            proc = getattr(self, attr)
            if proc is not None:
                terminate(proc, timeout=15.0)
                setattr(self, attr, None)
        for f in self._logs:
            f.close()
        self._logs = []

    def check_alive(self) -> None:
        for name, proc in (("keda-operator", self._operator), ("keda-adapter", self._adapter)):
            if proc is None or proc.poll() is not None:
                raise KedaError(f"{name} exited; log tail:\n" + log_tail(self.logs_dir / f"{name}.log"))

    # -- internals ---------------------------------------------------------------------
    def _apply_crds(self) -> None:
        files = sorted(crd_dir().glob("*.yaml"))
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=unilingo-devstack"]
        for f in files:
            args += ["-f", str(f)]
        proc = self.cp.kubectl(*args, check=False, timeout=120)
        if proc.returncode != 0:
            raise KedaError(f"applying KEDA's CRDs failed: {proc.stderr}")
        self.cp.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *[f"crd/{f.name.split('_', 1)[1][:-5]}.{f.name.split('_', 1)[0]}" for f in files],
            check=False,
            timeout=90,
        )

    @staticmethod
    def _service_objects(port: int) -> list[dict]:
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "keda-metrics-apiserver", "namespace": NAMESPACE},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                },
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    # The adapter's serving certificate is KEDA's own (for its in-cluster
                    # Service name), not one for localhost.
                    "insecureSkipTLSVerify": True,
                    "service": {"name": "keda-metrics-apiserver", "namespace": NAMESPACE, "port": port},
                },
            },
        ]

    def _apply(self, objects: list[dict]) -> None:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        proc = self.cp.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=unilingo-devstack",
            "-f",
            "-",
            input=doc,
            check=False,
        )
        if proc.returncode != 0:
            raise KedaError(f"kubectl apply failed: {proc.stderr}")

    def _apiservice_available(self) -> bool:
        proc = self.cp.kubectl("get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        conds = json.loads(proc.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conds)

    def _copy_certs(self, certs: Path) -> bool:
        """The operator's certificates from its Secret into ``certs``; False while absent."""
        import base64

        proc = self.cp.kubectl("-n", NAMESPACE, "get", "secret", "kedaorg-certs", "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        data = json.loads(proc.stdout).get("data") or {}
        if not all(data.get(k) for k in ("ca.crt", "tls.crt", "tls.key")):
            return False
        for name in ("ca.crt", "tls.crt", "tls.key"):
            content = base64.b64decode(data[name])
            path = certs / name
            if not path.exists() or path.read_bytes() != content:
                tmp = path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(content)
                os.replace(tmp, path)
        return True

    @staticmethod
    def _probe(check) -> bool:
        try:
            return bool(check())
        except (OSError, ValueError):
            return False

    @staticmethod
    def _http_ok(port: int, path: str) -> bool:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status == 200

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        return spawn_daemon(self.logs_dir / f"{name}.log", argv, self._logs, cwd=self.workdir, env=env)

    def _wait(self, name: str, proc: subprocess.Popen, probe, t0: float) -> None:
        deadline = t0 + self.timeout
        while True:
            if proc.poll() is not None:
                raise KedaError(
                    f"{name} exited (code {proc.returncode}); log tail:\n" + log_tail(self.logs_dir / f"{name}.log")
                )
            try:
                if probe():
                    self.timings[name] = round(time.monotonic() - t0, 2)
                    return
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            if time.monotonic() > deadline:
                raise KedaError(
                    f"{name} not ready after {self.timeout:.0f}s; log tail:\n" + log_tail(self.logs_dir / f"{name}.log")
                )
            time.sleep(0.5)
