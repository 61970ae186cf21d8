"""A real local Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager and (for
``make cluster``) kube-scheduler from ``.tools/bin``, plus one node (``devstack.node``).

etcd listens on loopback (plain HTTP, free ports, data under ``<workdir>/etcd``).
kube-apiserver serves HTTPS on 127.0.0.1 with a self-signed CA, authenticates an admin
client certificate (group ``system:masters``) and ServiceAccount tokens (a signing key of
its own, ``--service-account-issuer``), and authorizes with RBAC. kube-controller-manager
runs the standard controllers, so namespaces get their ``default`` ServiceAccount and
``kube-root-ca.crt``, deletions finish (namespace controller, garbage collector), aggregated
ClusterRoles fill in, and Deployments/Jobs create their Pods. It authenticates with a client
certificate of its own (user ``system:kube-controller-manager``, also in ``system:masters``)
and one credential for all controllers: kubeadm's per-controller ServiceAccount credentials
double its start-up time here. Nothing is mocked. ``ControlPlane`` alone (what the
controlplane tests use) has no scheduler and no node: Pods stay Pending. With
``scheduler=True`` and ``advertise_address=NODE_IP`` it is the control plane of
``devstack.node.Node``: the API server then also listens on the node's address (so pods
reach it through the ``kubernetes`` Service, whose endpoint it keeps) and reaches the
kubelet with the admin client certificate (logs, exec, port-forward).

Usage::

    with ControlPlane(Path(".run/cluster"), Path(".run/kubeconfig")) as cp:
        cp.kubectl("get", "ns")

    python -m devstack.cluster [--workdir DIR] [--kubeconfig FILE] [--port N] [--reset]
                               [--no-controller-manager] [--no-node]

The binaries are built by ``scripts/tools.sh`` (``make tools``).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.keda import Keda, KedaError
from devstack.node import NODE_IP, NODE_NAME, Node, NodeError, NodeNetwork
from devstack.ports import free_ports
from devstack.processes import die_with_parent, log_tail, spawn_daemon, terminate

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BIN_DIR = REPO_ROOT / ".tools" / "bin"
DEFAULT_WORKDIR = REPO_ROOT / ".run" / "cluster"
DEFAULT_KUBECONFIG = REPO_ROOT / ".run" / "kubeconfig"

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "unilingo-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SCHEDULER_USER = "system:kube-scheduler"
NODE_USER = f"system:node:{NODE_NAME}"
CLUSTER_NAME = "unilingo-local"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started."""


class _Pki:
    """Self-signed CA, apiserver serving cert, client certs, SA signing key (``cryptography``)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ca_key = directory / "ca.key"
        self.ca_crt = directory / "ca.crt"
        self.server_key = directory / "apiserver.key"
        self.server_crt = directory / "apiserver.crt"
        self.admin_key = directory / "admin.key"
        self.admin_crt = directory / "admin.crt"
        self.kcm_key = directory / "kcm.key"
        self.kcm_crt = directory / "kcm.crt"
        self.scheduler_key = directory / "scheduler.key"
        self.scheduler_crt = directory / "scheduler.crt"
        self.node_key = directory / "node.key"
        self.node_crt = directory / "node.crt"
        self.front_proxy_ca_key = directory / "front-proxy-ca.key"
        self.front_proxy_ca_crt = directory / "front-proxy-ca.crt"
        self.front_proxy_client_key = directory / "front-proxy-client.key"
        self.front_proxy_client_crt = directory / "front-proxy-client.crt"
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    def ensure(self) -> None:
        """Create whatever is missing; reuse the rest (so tokens survive restarts)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        new_ca = not (self.ca_key.exists() and self.ca_crt.exists())
        if new_ca:
            self._ca(self.ca_key, self.ca_crt, "unilingo-devstack-ca")
        if new_ca or not self.server_crt.exists():
            names: list[x509.GeneralName] = [
                x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1", "10.0.0.1")
            ]
            names += [
                x509.DNSName(name)
                for name in (
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                )
            ]
            self._leaf(self.server_key, self.server_crt, "kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, names)
        if new_ca or not self.admin_crt.exists():
            self._leaf(self.admin_key, self.admin_crt, ADMIN_USER, "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH)
        # The other components are in system:masters too: one local node, no Node
        # authorizer to configure.
        for key, crt, user in (
            (self.kcm_key, self.kcm_crt, CONTROLLER_MANAGER_USER),
            (self.scheduler_key, self.scheduler_crt, SCHEDULER_USER),
            (self.node_key, self.node_crt, NODE_USER),
        ):
            if new_ca or not crt.exists():
                self._leaf(key, crt, user, "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH)
        # The aggregation layer's front proxy (request-header authentication).
        new_fp_ca = not (self.front_proxy_ca_key.exists() and self.front_proxy_ca_crt.exists())
        if new_fp_ca:
            self._ca(self.front_proxy_ca_key, self.front_proxy_ca_crt, "unilingo-devstack-front-proxy-ca")
        if new_fp_ca or not self.front_proxy_client_crt.exists():
            self._leaf(
                self.front_proxy_client_key,
                self.front_proxy_client_crt,
                "front-proxy-client",
                None,
                ExtendedKeyUsageOID.CLIENT_AUTH,
                ca=(self.front_proxy_ca_crt, self.front_proxy_ca_key),
            )
        if not (self.sa_key.exists() and self.sa_pub.exists()):
            key = self._key(self.sa_key)
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.sa_pub.write_bytes(public)

    @staticmethod
    def _name(common_name: str, organization: str | None = None) -> x509.Name:
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
        return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def _ca(self, key_path: Path, crt_path: Path, common_name: str) -> None:
        key = self._key(key_path)
        name = self._name(common_name)
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        crt_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def _leaf(
        self,
        key_path: Path,
        crt_path: Path,
        common_name: str,
        organization: str | None,
        usage: x509.ObjectIdentifier,
        names: list[x509.GeneralName] | None = None,
        ca: tuple[Path, Path] | None = None,
    ) -> None:
        ca_crt_path, ca_key_path = ca or (self.ca_crt, self.ca_key)
        ca_crt = x509.load_pem_x509_certificate(ca_crt_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = self._key(key_path)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(self._name(common_name, organization))
            .issuer_name(ca_crt.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        crt_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _key(path: Path) -> ec.EllipticCurvePrivateKey:
        """A P-256 key, written as PKCS#8 PEM readable by its owner only."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.chmod(path, 0o600)
        return key


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, with an admin kubeconfig.

    ``kubeconfig`` defaults to ``<repo>/.run/kubeconfig`` for the default workdir
    (``<repo>/.run/cluster``) and to ``<workdir>/kubeconfig`` for any other.
    Attributes after ``start()``: ``url`` (https://127.0.0.1:PORT), ``kubeconfig`` (Path),
    ``etcd_url``, ``ca_file``, ``admin_cert``, ``admin_key``, ``startup_seconds``,
    ``timings``. ``workdir`` keeps ``pki/`` (reused across restarts, so tokens stay valid),
    ``etcd/`` (data, kept across restarts unless ``reset=True``) and ``logs/``.
    ``start()`` returns once /readyz is ok and the controller-manager has created the
    ``default`` ServiceAccount; it raises ``ControlPlaneError`` (with the log tail) otherwise.
    """

    def __init__(
        self,
        workdir: Path = DEFAULT_WORKDIR,
        kubeconfig: Path | None = None,
        *,
        bin_dir: Path | None = None,
        port: int = 0,
        reset: bool = False,
        etcd_fsync: bool = False,
        controller_manager: bool = True,
        scheduler: bool = False,
        advertise_address: str | None = None,
        extra_apiserver_args: Sequence[str] = (),
        timeout: float = 90.0,
    ):
        self.workdir = Path(workdir).resolve()
        if kubeconfig is None:
            kubeconfig = (
                DEFAULT_KUBECONFIG if self.workdir == DEFAULT_WORKDIR.resolve() else self.workdir / "kubeconfig"
            )
        self.kubeconfig = Path(kubeconfig).resolve()
        self.bin_dir = Path(bin_dir or os.environ.get("UNILINGO_TOOLS_BIN") or DEFAULT_BIN_DIR)
        self.port = port
        self.reset = reset
        self.etcd_fsync = etcd_fsync
        self.controller_manager = controller_manager
        self.scheduler = scheduler
        self.advertise_address = advertise_address
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.timeout = timeout
        self.pki = _Pki(self.workdir / "pki")
        self.logs_dir = self.workdir / "logs"
        self.ca_file = self.pki.ca_crt
        self.admin_cert = self.pki.admin_crt
        self.admin_key = self.pki.admin_key
        self.url = ""
        self.etcd_url = ""
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}  # seconds from start() until each part was ready
        self._spare_port = 0
        self._etcd: subprocess.Popen | None = None
        self._apiserver: subprocess.Popen | None = None
        self._kcm: subprocess.Popen | None = None
        self._scheduler: subprocess.Popen | None = None
        self._logs: list[IO] = []

    # -- public API --------------------------------------------------------------------
    def start(self) -> ControlPlane:
        if self.running:
            return self
        t0 = time.monotonic()
        etcd_bin, apiserver_bin = self._binary("etcd"), self._binary("kube-apiserver")
        kcm_bin = self._binary("kube-controller-manager") if self.controller_manager else None
        scheduler_bin = self._binary("kube-scheduler") if self.scheduler else None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        self.timings = {"pki": round(time.monotonic() - t0, 2)}
        try:
            self._start_etcd(etcd_bin, t0)
            self._start_apiserver(apiserver_bin, t0)
            self._write_kubeconfig(self.kubeconfig, ADMIN_USER, self.pki.admin_crt, self.pki.admin_key)
            if kcm_bin is not None:
                self._start_controller_manager(kcm_bin, t0)
            if scheduler_bin is not None:
                self._start_scheduler(scheduler_bin, t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop the scheduler, controller-manager, kube-apiserver, then etcd (SIGTERM, then
        SIGKILL after a grace period)."""
        for attr, grace in (("_scheduler", 10.0), ("_kcm", 10.0), ("_apiserver", 20.0), ("_etcd", 10.0)):
            proc = getattr(self, attr)
            if proc is not None:
                terminate(proc, timeout=grace)
                setattr(self, attr, None)
        for f in self._logs:
            f.close()
        self._logs = []

    def _processes(self) -> list[tuple[str, subprocess.Popen | None]]:
        procs = [("etcd", self._etcd), ("kube-apiserver", self._apiserver)]
        if self.controller_manager:
            procs.append(("kube-controller-manager", self._kcm))
        if self.scheduler:
            procs.append(("kube-scheduler", self._scheduler))
        return procs

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for _, p in self._processes())

    def check_alive(self) -> None:
        """Raise ControlPlaneError if any of the processes has exited."""
        for name, proc in self._processes():
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ControlPlaneError(
                    f"{name} is not running (exit code {code}); log tail:\n" + log_tail(self.logs_dir / f"{name}.log")
                )

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess:
        """Run ``kubectl --kubeconfig <admin kubeconfig> ARGS`` and capture its output."""
        return subprocess.run(
            [str(self._binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=timeout,
        )

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG pointing at the admin kubeconfig."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------
    def _binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if not (path.exists() and os.access(path, os.X_OK)):
            raise ControlPlaneError(f"{path} not found: build it with `scripts/tools.sh {name}` (or `make tools`)")
        return path

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        return spawn_daemon(self.logs_dir / f"{name}.log", argv, self._logs, cwd=self.workdir)

    def _start_etcd(self, binary: Path, t0: float) -> None:
        data = self.workdir / "etcd"
        if self.reset and data.exists():
            shutil.rmtree(data)
        client, peer, spare = free_ports(3)
        self._spare_port = spare
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        argv = [
            str(binary),
            "--name",
            "unilingo",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            self.etcd_url,
            "--advertise-client-urls",
            self.etcd_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"unilingo={peer_url}",
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
            "--quota-backend-bytes",
            str(2 * 1024**3),
        ]
        if not self.etcd_fsync:
            argv.append("--unsafe-no-fsync")
        self._etcd = self._spawn("etcd", argv)

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        self._wait("etcd", self._etcd, healthy, t0)

    def _start_apiserver(self, binary: Path, t0: float) -> None:
        port = self.port or self._spare_port
        self.url = f"https://127.0.0.1:{port}"
        pki = self.pki
        if self.advertise_address:
            # Pods reach it at the node's address through the `kubernetes` Service (whose
            # endpoint the lease reconciler keeps); the host's clients still use loopback.
            network = [
                "--bind-address=0.0.0.0",
                f"--advertise-address={self.advertise_address}",
                "--endpoint-reconciler-type=lease",
                f"--kubelet-client-certificate={pki.admin_crt}",
                f"--kubelet-client-key={pki.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            network = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]  # loopback is no valid Endpoints
        argv = [
            str(binary),
            f"--etcd-servers={self.etcd_url}",
            f"--secure-port={port}",
            *network,
            f"--tls-cert-file={pki.server_crt}",
            f"--tls-private-key-file={pki.server_key}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--client-ca-file={pki.ca_crt}",
            f"--requestheader-client-ca-file={pki.front_proxy_ca_crt}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client_crt}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self.extra_apiserver_args,
        ]
        self._apiserver = self._spawn("kube-apiserver", argv)
        ctx = self.ssl_context()

        def ready() -> bool:
            with urllib.request.urlopen(self.url + "/readyz", timeout=3, context=ctx) as r:
                return r.status == 200 and r.read().strip() == b"ok"

        self._wait("kube-apiserver", self._apiserver, ready, t0)

    def _start_controller_manager(self, binary: Path, t0: float) -> None:
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        self._write_kubeconfig(kubeconfig, CONTROLLER_MANAGER_USER, self.pki.kcm_crt, self.pki.kcm_key)
        port = free_ports(1)[0]
        pki = self.pki
        argv = [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_crt}",
            f"--cluster-signing-cert-file={pki.ca_crt}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--cluster-name={CLUSTER_NAME}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            "--v=1",
        ]
        self._kcm = self._spawn("kube-controller-manager", argv)
        # Its serving cert is self-signed (in --cert-dir); /healthz is open to anonymous.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        admin = self.ssl_context()

        def ready() -> bool:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=3, context=insecure) as r:
                if r.status != 200:
                    return False
            # The ServiceAccount controller is working once `default` has its account.
            url = self.url + "/api/v1/namespaces/default/serviceaccounts/default"
            with urllib.request.urlopen(url, timeout=3, context=admin) as r:
                return r.status == 200

        self._wait("kube-controller-manager", self._kcm, ready, t0)

    def _start_scheduler(self, binary: Path, t0: float) -> None:
        kubeconfig = self.workdir / "scheduler.kubeconfig"
        self._write_kubeconfig(kubeconfig, SCHEDULER_USER, self.pki.scheduler_crt, self.pki.scheduler_key)
        port = free_ports(1)[0]
        argv = [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
        self._scheduler = self._spawn("kube-scheduler", argv)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def ready() -> bool:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=3, context=insecure) as r:
                return r.status == 200

        self._wait("kube-scheduler", self._scheduler, ready, t0)

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context trusting the cluster CA and presenting the admin client cert."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        return ctx

    def _wait(self, name: str, proc: subprocess.Popen, probe, t0: float) -> None:
        deadline = t0 + self.timeout
        while True:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode}; log tail:\n" + log_tail(self.logs_dir / f"{name}.log")
                )
            try:
                if probe():
                    self.timings[name] = round(time.monotonic() - t0, 2)
                    return
            except (OSError, urllib.error.URLError, ValueError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} not ready after {self.timeout:.0f}s; log tail:\n" + log_tail(self.logs_dir / f"{name}.log")
                )
            time.sleep(0.1)

    def _write_kubeconfig(self, path: Path, user: str, cert: Path, key: Path) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        # JSON is valid YAML, so kubectl, client-go and the Python client all read it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CLUSTER_NAME,
                    "cluster": {"server": self.url, "certificate-authority-data": b64(self.pki.ca_crt)},
                }
            ],
            "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
            "contexts": [
                {"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": "default"}}
            ],
            "current-context": CLUSTER_NAME,
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


# The providers the node's pods call: no pod reaches the internet, so the provider sandbox
# listens on the node's address (charts/unilingo/ci/node-values.yaml points the workers there).
NODE_SANDBOX_PORT = 8090


class NodeSandboxError(RuntimeError):
    """The node's provider sandbox could not be started or died."""


class NodeSandbox:
    """``python -m sandbox`` on ``NODE_IP:NODE_SANDBOX_PORT`` (its AWS half on the next port),
    its log in the cluster's logs; ``SANDBOX_LATENCY_SCALE`` from the environment."""

    def __init__(self, logs_dir: Path, port: int = NODE_SANDBOX_PORT):
        self.logs_dir = logs_dir
        self.port = port
        self.url = f"http://{NODE_IP}:{port}"
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self.startup_seconds = 0.0

    def start(self, timeout: float = 90.0) -> None:
        t0 = time.monotonic()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.logs_dir / "sandbox.log", "ab")
        env = {
            **os.environ,
            "SANDBOX_HOST": NODE_IP,
            "SANDBOX_PORT": str(self.port),
            "SANDBOX_AWS_PORT": str(self.port + 1),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        while time.monotonic() - t0 < timeout:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/_sandbox/stats", timeout=2) as response:
                    if response.status == 200:
                        self.startup_seconds = time.monotonic() - t0
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise NodeSandboxError(f"the provider sandbox did not answer at {self.url} within {timeout:.0f}s")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise NodeSandboxError(
                f"the provider sandbox exited ({self.proc.returncode}); log tail:\n"
                + log_tail(self.logs_dir / "sandbox.log")
            )

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=10.0)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.cluster",
        description="Run etcd, kube-apiserver, kube-controller-manager, kube-scheduler and one "
        "node (containerd, kubelet, kube-proxy, CoreDNS) locally in the foreground "
        "until Ctrl-C/SIGTERM.",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--kubeconfig", type=Path, default=DEFAULT_KUBECONFIG)
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CLUSTER_PORT", "0")),
        help="kube-apiserver port (default: CLUSTER_PORT or a free one)",
    )
    parser.add_argument("--reset", action="store_true", help="wipe etcd data before start")
    parser.add_argument(
        "--no-controller-manager", action="store_true", help="run etcd and kube-apiserver only (implies --no-node)"
    )
    parser.add_argument("--no-node", action="store_true", help="the control plane only: no scheduler, no node, no KEDA")
    parser.add_argument("--no-keda", action="store_true", help="no KEDA operator and metrics adapter")
    parser.add_argument("--no-sandbox", action="store_true", help="no provider sandbox on the node's address")
    args = parser.parse_args(argv)
    with_node = not (args.no_node or args.no_controller_manager)
    if with_node and os.geteuid() != 0:
        print(
            "cluster: the node needs root (namespaces, mounts, iptables); use --no-node for the control plane alone",
            file=sys.stderr,
        )
        return 2

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    cp = ControlPlane(
        args.workdir,
        args.kubeconfig,
        port=args.port,
        reset=args.reset,
        controller_manager=not args.no_controller_manager,
        scheduler=with_node,
        advertise_address=NODE_IP if with_node else None,
    )
    network = NodeNetwork() if with_node else None
    node = Node(cp, Path(args.workdir) / "node") if with_node else None
    keda = Keda(cp, Path(args.workdir) / "keda", NODE_IP) if with_node and not args.no_keda else None
    sandbox = NodeSandbox(cp.logs_dir) if with_node and not args.no_sandbox else None
    try:
        if network is not None:
            network.up()
        cp.start()
        if node is not None:
            node.start()
        if keda is not None:
            keda.start()
        if sandbox is not None:
            sandbox.start()
    except (ControlPlaneError, NodeError, KedaError, NodeSandboxError, OSError, subprocess.SubprocessError) as e:
        print(f"cluster: {e}", file=sys.stderr)
        if sandbox is not None:
            sandbox.stop()
        if keda is not None:
            keda.stop()
        if node is not None:
            node.stop()
        cp.stop()
        if network is not None:
            network.down()
        return 1
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in cp.timings.items())
    print(
        f"cluster: kube-apiserver ready at {cp.url} in {cp.startup_seconds:.1f}s ({parts}; "
        f"etcd {cp.etcd_url}; logs in {cp.logs_dir})",
        flush=True,
    )
    print(f"cluster: kubeconfig {cp.kubeconfig}", flush=True)
    if node is not None:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in node.timings.items())
        print(
            f"cluster: node {NODE_NAME} Ready at {NODE_IP} ({parts}; containerd "
            f"{node.socket}; logs in {node.logs_dir})",
            flush=True,
        )
    if keda is not None:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in keda.timings.items())
        print(f"cluster: KEDA operator and metrics adapter running ({parts})", flush=True)
    if sandbox is not None:
        print(
            f"cluster: provider sandbox for the pods at {sandbox.url} ({sandbox.startup_seconds:.1f}s; "
            f"log {cp.logs_dir / 'sandbox.log'})",
            flush=True,
        )
    print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
    code = 0
    try:
        while not stop.wait(1.0):
            try:
                cp.check_alive()
                if node is not None:
                    node.check_alive()
                if keda is not None:
                    keda.check_alive()
                if sandbox is not None:
                    sandbox.check_alive()
            except (ControlPlaneError, NodeError, KedaError, NodeSandboxError) as e:
                print(f"cluster: {e}", file=sys.stderr, flush=True)
                code = 1
                break
    finally:
        print("cluster: stopping", flush=True)
        if sandbox is not None:
            sandbox.stop()
        if keda is not None:
            keda.stop()
        if node is not None:
            node.stop()
        cp.stop()
        if network is not None:
            network.down()
        print("cluster: stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
