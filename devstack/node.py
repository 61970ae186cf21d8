"""One real Kubernetes node on this machine, for the control plane of ``devstack.cluster``.

Parts, all real: Debian's containerd (CRI) and runc, the CNI ``ptp`` + ``host-local`` plugins
of Debian's containernetworking-plugins, and kubelet, kube-proxy (iptables mode) and CoreDNS
built by ``scripts/tools.sh``. No image is pulled: the pod sandbox ("pause") image is a tiny
static Go program of ours (``devstack/pause``), built and imported at start.

What it touches on the host, and how it is undone on ``stop()``:

- containerd, kubelet and kube-proxy run in a private mount and PID namespace (``unshare``)
  in which ``/var`` and ``/run`` are overlays whose upper layers live in ``<workdir>/overlay``:
  everything they write there (pod logs, network namespaces, CNI state, runc state) stays in
  the project's run folder. When the namespace's first process exits, the kernel kills every
  process left in it (containers and shims included), and its mounts go with it.
- The network is the host's (pods reach the API server and each other through the host):
  a port-less bridge ``unilingo0`` carries the node address ``NODE_IP``; each pod gets a veth
  pair (ptp) from ``POD_CIDR``; kube-proxy writes its ``KUBE-*`` iptables chains. ``stop()``
  runs ``kube-proxy --cleanup`` and deletes the bridge.
- The containers' cgroups live under ``/unilingo`` of every cgroup v1 hierarchy, removed on
  stop; kubelet's and kube-proxy's kernel settings (sysctls) are put back as they were.

Every address is on this machine: the node's own bridge, the pods' veths, ClusterIPs that
kube-proxy rewrites to those. CoreDNS answers ``cluster.local`` only and forwards nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from devstack.ports import free_ports
from devstack.processes import log_tail, spawn_daemon, terminate

if TYPE_CHECKING:  # pragma: no cover
    from devstack.cluster import ControlPlane

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_NAME = "unilingo-node"
NODE_BRIDGE = "unilingo0"
NODE_IP = "10.89.0.1"
POD_CIDR = "10.88.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "unilingo.local/pause:3.10"
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_ROOT = "unilingo"
# Kernel settings kubelet (vm/kernel) and the CNI plugin / kube-proxy (net) may change.
SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
)
DEBIAN_PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "unshare": "util-linux",
}


class NodeError(RuntimeError):
    """The node could not be started."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _remove_kubelet_firewall() -> None:
    """kubelet's KUBE-FIREWALL chain (it drops martian packets to 127.0.0.0/8), which it
    installs whatever makeIPTablesUtilChains says and kube-proxy --cleanup leaves."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for chain in ("INPUT", "OUTPUT"):
            while subprocess.run([tool, "-D", chain, "-j", "KUBE-FIREWALL"], capture_output=True).returncode == 0:
                pass
        subprocess.run([tool, "-F", "KUBE-FIREWALL"], capture_output=True)
        subprocess.run([tool, "-X", "KUBE-FIREWALL"], capture_output=True)


class NodeNetwork:
    """The node's address on the host (a bridge with no ports) and the host settings the
    node changes, saved so that ``down()`` puts them back. Up before the API server starts,
    since the API server advertises ``NODE_IP`` to the pods."""

    def __init__(self) -> None:
        self._saved: dict[str, str] = {}

    def up(self) -> NodeNetwork:
        for name in SYSCTLS:
            path = Path("/proc/sys") / name
            if path.exists():
                self._saved[name] = path.read_text().strip()
        if _ip("link", "show", NODE_BRIDGE, check=False).returncode == 0:
            _ip("link", "del", NODE_BRIDGE)  # left over by a run that was killed
        _ip("link", "add", NODE_BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
        _ip("link", "set", NODE_BRIDGE, "up")
        return self

    def down(self) -> None:
        _ip("link", "del", NODE_BRIDGE, check=False)
        for name, value in self._saved.items():
            try:
                (Path("/proc/sys") / name).write_text(value + "\n")
            except OSError:
                pass


def _docker_archive(path: Path, name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> None:
    """Write a one-layer image as a ``docker save`` archive (what ``ctr images import``
    reads), from ``files`` (path in the image -> (content, mode))."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for member, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), mode, 0
            t.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    layer_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
            "history": [{"created_by": "devstack.node"}],
        },
        sort_keys=True,
    ).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{config_id}.json", "RepoTags": [name], "Layers": [f"{layer_id}/layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as t:
        for member, data in (
            (f"{layer_id}/layer.tar", layer_bytes),
            (f"{config_id}.json", config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))


def build_pause_image(out: Path) -> Path:
    """Build devstack/pause (static, CGO off) and wrap it as the ``PAUSE_IMAGE`` archive."""
    binary = out.parent / "pause"
    src = REPO_ROOT / "devstack" / "pause"
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOWORK": "off",
        "GOFLAGS": "",
        "GOCACHE": os.environ.get("GOCACHE", str(Path.home() / ".cache" / "go-build")),
    }
    proc = subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise NodeError(f"building the pause image failed:\n{proc.stderr}")
    _docker_archive(out, PAUSE_IMAGE, {"pause": (binary.read_bytes(), 0o755)}, ["/pause"])
    return out


class Node:
    """containerd + kubelet + kube-proxy (in their namespaces) and CoreDNS, joined to ``cp``.

    ``start()`` returns once the Node is Ready and CoreDNS answers; ``stop()`` undoes it all
    (see the module docstring). ``ctr(*args)`` runs Debian's ``ctr`` against this node's
    containerd (namespace ``k8s.io``, the CRI's), e.g. to import an image archive.
    """

    def __init__(self, cp: ControlPlane, workdir: Path, *, timeout: float = 180.0):
        self.cp = cp
        self.workdir = Path(workdir).resolve()
        self.timeout = timeout
        self.logs_dir = self.workdir / "logs"
        self.socket = self.workdir / "containerd" / "containerd.sock"
        self.timings: dict[str, float] = {}
        self._ns: subprocess.Popen | None = None
        self._coredns: subprocess.Popen | None = None
        self._logs: list[IO] = []

    # -- public API --------------------------------------------------------------------
    def start(self) -> Node:
        t0 = time.monotonic()
        missing = [pkg for cmd, pkg in DEBIAN_PACKAGES.items() if shutil.which(cmd) is None]
        if missing or not (CNI_BIN_DIR / "ptp").exists():
            missing += [] if (CNI_BIN_DIR / "ptp").exists() else ["containernetworking-plugins"]
            raise NodeError(
                "the node needs Debian's "
                + " ".join(sorted(set(missing)))
                + " (scripts/bootstrap.sh node installs them)"
            )
        for tool in ("kubelet", "kube-proxy", "coredns"):
            self.cp._binary(tool)
        self._prepare()
        try:
            self._make_cgroups()
            self._start_namespace(t0)
            self._import(build_pause_image(self.workdir / "images" / "pause.tar"))
            self._import_built_images()
            self.timings["images"] = round(time.monotonic() - t0, 2)
            self._start_coredns(t0)
            self._wait_node_ready(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._ns is not None:
            self._stop_namespace()
            self._ns = None
        if self._coredns is not None:
            terminate(self._coredns, timeout=10.0)
            self._coredns = None
        proxy = self.cp.bin_dir / "kube-proxy"
        if proxy.exists():
            subprocess.run([str(proxy), "--cleanup"], capture_output=True, timeout=60)
        _remove_kubelet_firewall()
        self._remove_cgroups()
        for f in self._logs:
            f.close()
        self._logs = []

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._ns, self._coredns))

    def check_alive(self) -> None:
        for name, proc, log in (
            ("containerd/kubelet/kube-proxy", self._ns, "node.log"),
            ("coredns", self._coredns, "coredns.log"),
        ):
            if proc is None or proc.poll() is not None:
                raise NodeError(
                    f"{name} exited; log tail:\n"
                    + log_tail(self.logs_dir / log, 40)
                    + "\nkubelet:\n"
                    + log_tail(self.logs_dir / "kubelet.log", 15)
                )

    def ctr(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def import_image(self, archive: Path) -> None:
        self._import(archive)

    # -- internals ---------------------------------------------------------------------
    def _prepare(self) -> None:
        w = self.workdir
        # State of a previous run is dropped (its pods' network namespaces are gone); the
        # image store (containerd/root) is kept, so imported images survive restarts.
        for stale in ("overlay", "containerd/state", "kubelet", "cni/ipam"):
            if (w / stale).exists():
                shutil.rmtree(w / stale)
        for d in (
            "overlay/var/upper",
            "overlay/var/work",
            "overlay/run/upper",
            "overlay/run/work",
            "containerd/root",
            "containerd/state",
            "kubelet",
            "cni/net.d",
            "cni/ipam",
            "volume-plugins",
            "images",
            "logs",
        ):
            (w / d).mkdir(parents=True, exist_ok=True)
        cp = self.cp
        kubeconfig = w / "node.kubeconfig"
        cp._write_kubeconfig(kubeconfig, f"system:node:{NODE_NAME}", cp.pki.node_crt, cp.pki.node_key)
        (w / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")
        (w / "containerd" / "config.toml").write_text(f"""\
version = 2
root = "{w}/containerd/root"
state = "{w}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{w}/containerd/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The root user here lacks CAP_SYS_RESOURCE: without this runc fails every container
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{w}/cni/net.d"
""")
        (w / "cni" / "net.d" / "10-unilingo.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "unilingo",
                    "plugins": [
                        {
                            "type": "ptp",
                            "ipMasq": False,
                            "mtu": 1500,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": f"{w}/cni/ipam",
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        kubelet_port, healthz_port, proxy_healthz, proxy_metrics = free_ports(4)
        self.kubelet_healthz = healthz_port
        (w / "kubelet-config.json").write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": NODE_IP,
                    "port": kubelet_port,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": healthz_port,
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": f"/{CGROUP_ROOT}",
                    "failCgroupV1": False,  # this machine has cgroup v1 only
                    "makeIPTablesUtilChains": False,
                    "failSwapOn": False,
                    "volumePluginDir": str(w / "volume-plugins"),
                    "clusterDNS": [NODE_IP],
                    "clusterDomain": CLUSTER_DOMAIN,
                    "resolvConf": str(w / "resolv.conf"),
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(cp.pki.ca_crt)},
                    },
                    "authorization": {"mode": "Webhook"},
                    "serializeImagePulls": False,
                    # A shared 2-core machine: no eviction for a busy disk or memory.
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "2%",
                        "imagefs.available": "2%",
                        "nodefs.inodesFree": "2%",
                    },
                    "imageGCHighThresholdPercent": 99,
                    "imageGCLowThresholdPercent": 98,
                    "maxPods": 60,
                    "shutdownGracePeriod": "0s",
                },
                indent=2,
            )
        )
        (w / "kube-proxy-config.json").write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "hostnameOverride": NODE_NAME,
                    "mode": "iptables",
                    "clusterCIDR": POD_CIDR,
                    "healthzBindAddress": f"127.0.0.1:{proxy_healthz}",
                    "metricsBindAddress": f"127.0.0.1:{proxy_metrics}",
                    "conntrack": {"maxPerCore": 0},  # leave the host's conntrack table size alone
                    "iptables": {"localhostNodePorts": False},  # and route_localnet
                },
                indent=2,
            )
        )
        kubelet, proxy = cp._binary("kubelet"), cp._binary("kube-proxy")
        # PID 1 of the namespaces: mounts the overlays, runs the three daemons, and on
        # SIGTERM stops kubelet and kube-proxy, then containerd; its exit kills the rest.
        (w / "node.sh").write_text(f"""\
#!/bin/bash
set -u
mount -t overlay overlay -o lowerdir=/var,upperdir={w}/overlay/var/upper,workdir={w}/overlay/var/work /var
mount -t overlay overlay -o lowerdir=/run,upperdir={w}/overlay/run/upper,workdir={w}/overlay/run/work /run
containerd --config {w}/containerd/config.toml >>{self.logs_dir}/containerd.log 2>&1 &
containerd_pid=$!
for _ in $(seq 1 300); do [ -S {self.socket} ] && break; sleep 0.1; done
{kubelet} --config={w}/kubelet-config.json --kubeconfig={kubeconfig} --root-dir={w}/kubelet \\
  --hostname-override={NODE_NAME} --node-ip={NODE_IP} --v=1 >>{self.logs_dir}/kubelet.log 2>&1 &
kubelet_pid=$!
{proxy} --config={w}/kube-proxy-config.json --v=1 >>{self.logs_dir}/kube-proxy.log 2>&1 &
proxy_pid=$!
stop() {{
  kill -TERM $kubelet_pid $proxy_pid 2>/dev/null; wait $kubelet_pid $proxy_pid
  kill -TERM $containerd_pid 2>/dev/null; wait $containerd_pid
  exit 0
}}
trap stop TERM INT
wait -n $containerd_pid $kubelet_pid $proxy_pid
echo "node: a daemon exited ($?); stopping" >&2
stop
""")

    def _make_cgroups(self) -> None:
        for hierarchy in self._cgroup_hierarchies():
            d = hierarchy / CGROUP_ROOT
            d.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a new cpuset has no CPUs until given some
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((hierarchy / f).read_text())

    def _remove_cgroups(self) -> None:
        # runc also mirrors the containers' cgroups into the cgroup v2 tree of a hybrid host.
        unified = [Path("/sys/fs/cgroup/unified")] if Path("/sys/fs/cgroup/unified").is_dir() else []
        for hierarchy in self._cgroup_hierarchies() + unified:
            root = hierarchy / CGROUP_ROOT
            if not root.is_dir():
                continue
            for _attempt in range(50):
                dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [
                    root
                ]
                try:
                    for d in dirs:
                        d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)  # processes still exiting

    @staticmethod
    def _cgroup_hierarchies() -> list[Path]:
        base = Path("/sys/fs/cgroup")
        if (base / "cgroup.controllers").exists():  # cgroup v2: one tree
            return [base]
        return [
            p
            for p in sorted(base.iterdir())
            if p.is_dir() and not p.is_symlink() and (p / "tasks").exists() and p.name != "unified"
        ]

    def _spawn(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return spawn_daemon(self.logs_dir / f"{name}.log", argv, self._logs, cwd=self.workdir, **kwargs)

    def _start_namespace(self, t0: float) -> None:
        self._ns = self._spawn(
            "node",
            [
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "--kill-child=SIGKILL",
                "bash",
                str(self.workdir / "node.sh"),
            ],
        )
        self._wait(
            "containerd",
            lambda: self.socket.is_socket() and self.ctr("version", timeout=10).returncode == 0,
            t0,
            "containerd.log",
        )

    def _stop_namespace(self) -> None:
        proc = self._ns
        if proc.poll() is None:
            inner = self._inner_pid(proc.pid)
            if inner:
                try:
                    os.kill(inner, signal.SIGTERM)
                    proc.wait(timeout=40)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            if proc.poll() is None:
                proc.kill()  # unshare --kill-child SIGKILLs the namespace's PID 1
                proc.wait(timeout=20)

    @staticmethod
    def _inner_pid(pid: int) -> int | None:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def _import(self, archive: Path) -> None:
        proc = self.ctr("images", "import", str(archive))
        if proc.returncode != 0:
            raise NodeError(f"ctr images import {archive} failed: {proc.stderr.strip()}")

    def _import_built_images(self) -> None:
        """The archives `make image` left in .run/images, unless already imported (the image
        store outlives restarts; a stamp per archive remembers which were)."""
        stamps = self.workdir / "containerd" / "imported"
        stamps.mkdir(parents=True, exist_ok=True)
        for archive in sorted((REPO_ROOT / ".run" / "images").glob("*.tar")):
            stamp = stamps / archive.name
            if stamp.exists() and stamp.stat().st_mtime >= archive.stat().st_mtime:
                continue
            self._import(archive)
            stamp.touch()

    def _start_coredns(self, t0: float) -> None:
        ready_port = free_ports(1)[0]
        corefile = self.workdir / "Corefile"
        corefile.write_text(f"""\
.:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.cp.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
""")
        self._coredns = self._spawn("coredns", [str(self.cp._binary("coredns")), "-conf", str(corefile)])
        import urllib.request

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ready_port}/ready", timeout=2) as r:
                return r.status == 200

        self._wait("coredns", ready, t0, "coredns.log", proc=self._coredns)

    def _wait_node_ready(self, t0: float) -> None:
        import datetime
        import urllib.request

        # The Node object outlives a restart (etcd keeps it): only a Ready condition this
        # kubelet reported counts.
        started = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(
            seconds=time.monotonic() - t0 + 1
        )

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.kubelet_healthz}/healthz", timeout=2) as r:
                if r.status != 200:
                    return False
            out = self.cp.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if out.returncode != 0:
                return False
            for c in json.loads(out.stdout)["status"].get("conditions", []):
                if c["type"] == "Ready" and c["status"] == "True":
                    beat = datetime.datetime.fromisoformat(c["lastHeartbeatTime"].replace("Z", "+00:00"))
                    return beat >= started
            return False

        self._wait("kubelet", ready, t0, "kubelet.log", interval=1.0)

    def _wait(self, name: str, probe, t0: float, log: str, *, proc=None, interval: float = 0.2) -> None:
        proc = proc or self._ns
        deadline = t0 + self.timeout
        while True:
            if proc.poll() is not None:
                raise NodeError(
                    f"{name}: exited (code {proc.returncode}); {log}:\n"
                    + log_tail(self.logs_dir / log, 40)
                    + "\nnode.log:\n"
                    + log_tail(self.logs_dir / "node.log", 10)
                )
            try:
                if probe():
                    self.timings[name] = round(time.monotonic() - t0, 2)
                    return
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            if time.monotonic() > deadline:
                raise NodeError(
                    f"{name} not ready after {self.timeout:.0f}s; {log}:\n" + log_tail(self.logs_dir / log, 40)
                )
            time.sleep(interval)
