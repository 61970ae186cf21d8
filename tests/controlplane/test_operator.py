"""The operator on the real control plane, as a real process (``python -m unilingo_operator``).

It runs under the chart's ServiceAccount and RBAC (rendered by ``helm template`` from
``charts/unilingo/templates/operator/``), with a token minted by ``kubectl create token`` in a
kubeconfig of its own: never as admin. A worker process (``unilingo.limiter``) on the same
Redis shows that what the operator writes is what the next decision enforces.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from devstack.ports import free_port
from devstack.processes import Service
from devstack.redis import RedisServer
from tests.support.jobs import submit
from unilingo import keys
from unilingo.adaptive import LearnedStore, RateLimits
from unilingo.jobs import JobStore, JobType
from unilingo.limiter import Limiter
from unilingo.outcomes import CallOutcome
from unilingo.policy import PolicyStore, ProviderPolicy, default_policy, document
from unilingo_operator.crd import policy_crd

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
SERVICE_ACCOUNT = "unilingo-operator"  # the chart's <fullname>-operator for release "unilingo"


# --- helpers --------------------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def manifest(name: str, spec: dict) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "unilingo.io/v1alpha1",
            "kind": "UnilingoProviderPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def table_row(output: str) -> dict[str, str]:
    """kubectl's one-row table as {column: value}, cut at the header's column starts (a value may hold a space)."""
    header, line = output.splitlines()[:2]
    names = header.split()
    starts = [header.index(f" {name} ") + 1 if i else 0 for i, name in enumerate(names[:-1])] + [
        header.rindex(names[-1])
    ]
    ends = [*starts[1:], None]
    return {name: line[start:end].strip() for name, start, end in zip(names, starts, ends, strict=True)}


class Cluster:
    """kubectl as admin in one namespace, with the reads the tests repeat."""

    def __init__(self, kubectl, namespace: str):
        self.kubectl, self.ns = kubectl, namespace

    def apply(self, name: str, spec: dict) -> None:
        self.kubectl("apply", "-n", self.ns, "-f", "-", input=manifest(name, spec))

    def patch(self, name: str, spec: dict) -> None:
        self.kubectl("patch", "upp", name, "-n", self.ns, "--type=merge", "-p", json.dumps({"spec": spec}))

    def get(self, name: str) -> dict | None:
        result = self.kubectl("get", "upp", name, "-n", self.ns, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def ready(self, name: str) -> dict:
        body = self.get(name) or {}
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready":
                return condition
        return {}

    def wait_ready(
        self, name: str, status: str = "True", reason: str | None = None, *, after: int = 0, timeout: float = 20.0
    ) -> dict:
        """The resource once Ready has ``status`` (and ``reason``) for its current generation,
        with a revision above ``after`` when Ready."""

        def done():
            body = self.get(name)
            if not body:
                return None
            st = body.get("status") or {}
            condition = self.ready(name)
            if condition.get("status") != status or (reason and condition.get("reason") != reason):
                return None
            if condition.get("observedGeneration") != body["metadata"]["generation"]:
                return None
            if status == "True" and (
                st.get("observedGeneration") != body["metadata"]["generation"] or (st.get("revision") or 0) <= after
            ):
                return None
            return body

        return wait_for(done, timeout, what=f"{name} Ready={status} {reason or ''}")

    def events(self, name: str) -> list[dict]:
        out = self.kubectl(
            "get", "events", "-n", self.ns, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
        return sorted(json.loads(out)["items"], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def delete(self, name: str, wait: bool = True) -> None:
        self.kubectl("delete", "upp", name, "-n", self.ns, f"--wait={'true' if wait else 'false'}", "--timeout=30s")


WORKER = textwrap.dedent("""
    # A worker's permit loop, driven line by line: "acquire <provider>" or "status <provider>".
    import json, sys
    import redis
    from unilingo.limiter import Limiter

    limiter = Limiter(redis.Redis.from_url(sys.argv[1]))
    print("ready", flush=True)
    for line in sys.stdin:
        command, provider = line.split()
        if command == "acquire":
            decision = limiter.acquire(provider)
            if decision.granted:
                limiter.release(provider, decision.lease_id, "success")
            print(json.dumps({"granted": decision.granted, "reason": decision.reason,
                              "revision": decision.revision}), flush=True)
        else:
            status = limiter.status(provider)
            print(json.dumps({"revision": status.revision,
                              "policy": status.policy.model_dump(mode="json", by_alias=True)}), flush=True)
""")


class Worker:
    """A separate process making limiter decisions on the operator's Redis."""

    def __init__(self, redis_url: str):
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout.readline().strip() == "ready"

    def ask(self, command: str, provider: str) -> dict:
        self.process.stdin.write(f"{command} {provider}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


# --- the logic that needs no cluster ---------------------------------------------------------------


def test_the_oldest_claim_governs_a_provider():
    from unilingo_operator.reconcile import claim, governing

    def body(name, created, uid, deleting=False):
        meta = {"name": name, "namespace": "ns", "uid": uid, "creationTimestamp": created}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:09Z"
        return {"metadata": meta, "spec": {"provider": "openai"}}

    a = claim(body("a", "2026-01-01T00:00:02Z", "1"))["openai"]
    b = claim(body("b", "2026-01-01T00:00:01Z", "2"))["openai"]
    c = claim(body("c", "2026-01-01T00:00:00Z", "3", deleting=True))["openai"]
    assert governing([a, b, c]).name == "b"  # the oldest live one
    assert governing([a, b, c], exclude="2").name == "a"
    assert governing([c]) is None
    assert claim({"metadata": {}, "spec": {"provider": "gemini"}}) is None


def test_earlier_started_replicas_rank_higher():
    from unilingo_operator.config import default_priority

    assert default_priority(now=1_800_000_000) > default_priority(now=1_800_000_001)
    assert 0 < default_priority() < 2**53  # stays an exact JSON number in the peering object


def test_configuration_from_the_charts_environment(monkeypatch):
    from unilingo_operator.config import OperatorConfig

    for name, value in {"OPERATOR_NAMESPACES": "a, b", "OPERATOR_PEERING": "", "OPERATOR_HEALTH_PORT": "8081"}.items():
        monkeypatch.setenv(name, value)
    config = OperatorConfig()
    assert (config.namespaces, config.peering_name, config.clusterwide) == (["a", "b"], None, False)
    assert config.liveness_endpoint == "http://127.0.0.1:8081/healthz"  # loopback unless told (the chart says 0.0.0.0)
    monkeypatch.setenv("OPERATOR_HEALTH_HOST", "0.0.0.0")
    assert OperatorConfig().liveness_endpoint == "http://0.0.0.0:8081/healthz"
    for name, value in {
        "WATCH_NAMESPACE": "a",
        "OPERATOR_CLUSTER_WIDE": "true",
        "OPERATOR_PEERING": "unilingo",
        "OPERATOR_PRIORITY": "7",
    }.items():
        monkeypatch.setenv(name, value)
    config = OperatorConfig()
    assert (config.clusterwide, config.peering_name, config.priority) == (True, "unilingo", 7)


def test_kubeconfig_resolution_and_relative_paths(tmp_path, monkeypatch):
    import kopf

    from unilingo_operator import config as config_module
    from unilingo_operator import kube

    local = tmp_path / ".run" / "kubeconfig"
    monkeypatch.setattr(config_module, "LOCAL_KUBECONFIG", local)
    assert config_module.OperatorConfig(kubeconfig=None).resolve_kubeconfig() is None
    local.parent.mkdir()
    local.write_text(
        json.dumps(
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:1", "certificate-authority": "ca.crt"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    assert config_module.OperatorConfig(kubeconfig=None).resolve_kubeconfig() == str(local)
    assert config_module.OperatorConfig(kubeconfig="/elsewhere").resolve_kubeconfig() == "/elsewhere"
    monkeypatch.setenv("KUBECONFIG", str(local))
    info = kube.login(settings=kopf.OperatorSettings())
    assert info.ca_path == str(local.parent / "ca.crt") and info.token == "t"  # as kubectl reads it


def test_validation_messages_name_only_the_real_errors():
    from pydantic import ValidationError

    from unilingo_operator.reconcile import explain

    with pytest.raises(ValidationError) as caught:
        ProviderPolicy.model_validate({"provider": "openai", "requestsPerMinute": -3})
    assert explain(caught.value) == "requestsPerMinute: Input should be greater than or equal to 0"


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory):
    server = RedisServer(workdir=tmp_path_factory.mktemp("operator-redis"), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def store(redis_srv):
    client = redis.Redis.from_url(redis_srv.url)
    yield PolicyStore(client)
    client.close()


@pytest.fixture(scope="module")
def namespace(kubectl, policy_crds):
    name = f"upp-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def cluster(kubectl, namespace):
    return Cluster(kubectl, namespace)


@pytest.fixture(scope="module")
def chart_rbac(kubectl, namespace):
    """The chart's operator ServiceAccount and RBAC, rendered by helm and applied as admin."""
    assert (ROOT / "charts/unilingo/templates/operator/rbac.yaml").exists(), "the chart's operator RBAC is missing"
    rendered = subprocess.run(
        [
            str(HELM),
            "template",
            "unilingo",
            str(ROOT / "charts/unilingo"),
            "--namespace",
            namespace,
            "--show-only",
            "templates/operator/rbac.yaml",
            "--show-only",
            "templates/operator/serviceaccount.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
    assert "ServiceAccount" in kinds and "Role" in kinds
    kubectl("apply", "-f", "-", input=rendered)
    # kopf's peering object for the namespace (as the chart's installation provides it).
    kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": "default", "namespace": namespace},
            }
        ),
    )
    return rendered


@pytest.fixture(scope="module")
def operator_kubeconfig(kubectl, control_plane, namespace, chart_rbac, tmp_path_factory) -> Path:
    token = kubectl("create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration=2h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": control_plane.url, "certificate-authority": str(control_plane.ca_file)},
            }
        ],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": "local", "user": SERVICE_ACCOUNT, "namespace": namespace}}
        ],
        "current-context": "operator",
    }
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def start_operator(operator_kubeconfig, namespace, redis_srv, tmp_path_factory):
    started: list[Service] = []
    log_dir = tmp_path_factory.mktemp("operator-logs")

    def start(priority: int = 1000, **env: str) -> Service:
        port = free_port()

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        service = Service.python(
            f"operator-{priority}",
            "unilingo_operator",
            log_dir=log_dir,
            ready=healthy,
            env={
                "KUBECONFIG": str(operator_kubeconfig),
                "REDIS_URL": redis_srv.url,
                "WATCH_NAMESPACE": namespace,
                "OPERATOR_HEALTH_PORT": str(port),
                "OPERATOR_PRIORITY": str(priority),
                "OPERATOR_REPAIR_SECONDS": "1",
                "OPERATOR_LIVE_SECONDS": "1",
                "OPERATOR_PEERING_LIFETIME": "6",
                **env,
            },
        )
        service.start(timeout=60)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def operator(start_operator):
    service = start_operator(priority=1000)
    yield service


@pytest.fixture
def worker(redis_srv):
    process = Worker(redis_srv.url)
    yield process
    process.stop()


# --- tests ----------------------------------------------------------------------------------------


def test_operator_identity_is_the_charts_service_account(kubectl, namespace, operator, operator_kubeconfig):
    config = json.loads(operator_kubeconfig.read_text())
    user = config["users"][0]["user"]
    assert set(user) == {"token"}  # no client certificate: not the admin
    subject = f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    can = {}
    for verb, resource, extra in [
        ("patch", "unilingoproviderpolicies.unilingo.io", ["-n", namespace]),
        ("patch", "unilingoproviderpolicies.unilingo.io/status", ["-n", namespace]),
        ("watch", "unilingoproviderpolicies.unilingo.io", ["-n", namespace]),
        ("create", "events", ["-n", namespace]),
        ("create", "unilingoproviderpolicies.unilingo.io", ["-n", namespace]),
        ("delete", "unilingoproviderpolicies.unilingo.io", ["-n", namespace]),
        ("get", "secrets", ["-n", namespace]),
        ("list", "pods", ["-n", namespace]),
        ("patch", "pods", ["-n", namespace]),
        ("delete", "pods", ["-n", namespace]),
        ("create", "pods", ["-n", namespace]),
        ("patch", "pods", ["-n", "default"]),
        ("patch", "unilingoproviderpolicies.unilingo.io", ["-n", "default"]),
    ]:
        result = kubectl("auth", "can-i", verb, resource, f"--as={subject}", *extra, check=False)
        can[(verb, resource, extra[-1])] = result.stdout.strip() == "yes"
    allowed = {k for k, v in can.items() if v}
    assert allowed == {
        ("patch", "unilingoproviderpolicies.unilingo.io", namespace),
        ("patch", "unilingoproviderpolicies.unilingo.io/status", namespace),
        ("watch", "unilingoproviderpolicies.unilingo.io", namespace),
        ("create", "events", namespace),
        # the workers' deletion cost, in the release namespace only (ScaledObjects: see
        # test_the_workers_scaling_follows_the_policy_and_the_running_jobs, never forbidden)
        ("list", "pods", namespace),
        ("patch", "pods", namespace),
    }


def test_valid_policy_reaches_redis_and_a_running_worker_enforces_it(cluster, operator, store, worker):
    before = worker.ask("status", "azure-vision")
    assert before["policy"]["requestsPerMinute"] == default_policy("azure-vision").requests_per_minute

    cluster.apply("vision", {"provider": "azure-vision", "requestsPerMinute": 2, "burst": 2})
    body = cluster.wait_ready("vision")
    revision = body["status"]["revision"]

    stored = store.read("azure-vision")
    assert stored.revision == revision
    assert (stored.policy.requests_per_minute, stored.policy.burst) == (2, 2)
    # The operator filled in the provider's defaults and reports the whole policy in force.
    assert stored.policy.max_in_flight == default_policy("azure-vision").max_in_flight
    assert body["status"]["policy"] == stored.policy.model_dump(mode="json", by_alias=True)
    assert body["status"]["conditions"][0]["reason"] == "Applied"

    # The worker was running before the change; its very next decisions enforce 2 per minute.
    decisions = [worker.ask("acquire", "azure-vision") for _ in range(3)]
    assert [d["granted"] for d in decisions] == [True, True, False]
    assert decisions[2]["reason"] == "rate"
    assert {d["revision"] for d in decisions} == {revision}
    assert "PolicyWritten" in [e["reason"] for e in cluster.events("vision")]


def test_an_edit_raises_the_revision_and_the_next_decision_follows(cluster, operator, store, worker):
    revision = cluster.wait_ready("vision")["status"]["revision"]
    cluster.patch("vision", {"suspended": True})
    body = cluster.wait_ready("vision", after=revision)
    assert body["status"]["revision"] > revision
    assert store.read("azure-vision").policy.suspended is True
    decision = worker.ask("acquire", "azure-vision")
    assert (decision["granted"], decision["reason"], decision["revision"]) == (
        False,
        "suspended",
        body["status"]["revision"],
    )

    cluster.patch("vision", {"suspended": False, "requestsPerMinute": 20, "burst": 5})
    again = cluster.wait_ready("vision", after=body["status"]["revision"])
    assert store.read("azure-vision").revision == again["status"]["revision"]
    assert worker.ask("acquire", "azure-vision")["granted"] is True


def test_a_redis_flush_is_repaired(cluster, operator, store, redis_srv):
    revision = cluster.wait_ready("vision")["status"]["revision"]
    expected = document(store.read("azure-vision").policy)
    redis.Redis.from_url(redis_srv.url).flushall()
    assert store.read("azure-vision").revision == 0

    repaired = wait_for(lambda: store.read("azure-vision").revision or None, timeout=15, what="the repair")
    assert document(store.read("azure-vision").policy) == expected
    assert repaired > revision  # the counter was flushed too; revisions still never go back
    body = cluster.wait_ready("vision")
    assert body["status"]["revision"] == repaired
    assert "Repaired" in [e["reason"] for e in cluster.events("vision")]


def test_a_policy_changed_behind_the_operators_back_is_put_back(cluster, operator, store):
    in_force = store.read("azure-vision")
    store.write(ProviderPolicy(provider="azure-vision", requests_per_minute=1, burst=1))
    wait_for(
        lambda: document(store.read("azure-vision").policy) == document(in_force.policy),
        timeout=15,
        what="the policy in force to come back",
    )


def test_invalid_spec_that_reaches_the_operator_keeps_the_last_good_policy(kubectl, cluster, operator, store):
    """A spec the API server let through (here: a CRD without its rules, as an old or
    hand-edited CRD would be) is refused by the operator; the last good policy stays."""
    good = store.read("azure-vision")
    lax = policy_crd()
    version = lax["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]

    def strip(node):
        if isinstance(node, dict):
            return {
                k: strip(v)
                for k, v in node.items()
                if k not in ("x-kubernetes-validations", "minimum", "maximum", "enum")
            }
        return [strip(v) for v in node] if isinstance(node, list) else node

    version["spec"] = strip(version["spec"])
    kubectl("apply", "-f", "-", input=json.dumps(lax))
    try:
        wait_for(
            lambda: (
                cluster.kubectl(
                    "patch",
                    "upp",
                    "vision",
                    "-n",
                    cluster.ns,
                    "--type=merge",
                    "-p",
                    '{"spec":{"requestsPerMinute":-3}}',
                    check=False,
                ).returncode
                == 0
            ),
            what="the lax CRD to serve",
        )
        condition = cluster.wait_ready("vision", "False", "InvalidSpec")["status"]["conditions"][0]
        assert "requestsPerMinute" in condition["message"] and "greater than or equal to 0" in condition["message"]
        assert f"revision {good.revision}" in condition["message"]
        time.sleep(2)  # two repair ticks: nothing changes in Redis
        assert store.read("azure-vision") == good
        assert "InvalidSpec" in [e["reason"] for e in cluster.events("vision")]
    finally:
        kubectl("apply", "-f", str(ROOT / "manifests/crd/unilingoproviderpolicies.yaml"))
    cluster.patch("vision", {"requestsPerMinute": 20})
    body = cluster.wait_ready("vision", after=good.revision)
    assert store.read("azure-vision").revision == body["status"]["revision"]


def test_deletion_restores_the_defaults(cluster, operator, store):
    cluster.apply("speech", {"provider": "azure-speech", "maxInFlight": 3})
    body = cluster.wait_ready("speech")
    assert body["metadata"]["finalizers"] == ["unilingo.io/restore-defaults"]
    assert store.read("azure-speech").policy.max_in_flight == 3

    cluster.delete("speech")
    assert cluster.get("speech") is None
    stored = store.read("azure-speech")
    assert stored.revision > body["status"]["revision"]
    assert document(stored.policy) == document(default_policy("azure-speech"))


def test_a_second_policy_for_the_same_provider_waits_then_takes_over(cluster, operator, store):
    cluster.apply("polly-a", {"provider": "aws-polly", "requestsPerMinute": 100})
    cluster.wait_ready("polly-a")
    time.sleep(1.1)  # creation timestamps have one-second resolution: make the order certain
    cluster.apply("polly-b", {"provider": "aws-polly", "requestsPerMinute": 200})
    condition = cluster.wait_ready("polly-b", "False", "Conflict")["status"]["conditions"][0]
    assert "polly-a" in condition["message"]
    assert store.read("aws-polly").policy.requests_per_minute == 100

    cluster.delete("polly-a")
    assert store.read("aws-polly").policy.requests_per_minute == 200  # handed over at deletion
    cluster.wait_ready("polly-b")
    cluster.delete("polly-b")
    assert document(store.read("aws-polly").policy) == document(default_policy("aws-polly"))


def test_the_status_reports_the_live_state_breaker_pause_and_effective_limits(cluster, operator, redis_srv, kubectl):
    client = redis.Redis.from_url(redis_srv.url)
    cluster.apply("openai", {"provider": "openai", "requestsPerMinute": 50, "adaptive": True})
    cluster.wait_ready("openai")

    def live() -> dict:
        return ((cluster.get("openai") or {}).get("status") or {}).get("live") or {}

    first = wait_for(lambda: live() or None, timeout=15, what="status.live")
    assert first == {
        "breaker": "closed",
        "adaptive": True,
        "effective": {"requestsPerMinute": 50, "tokensPerMinute": 75_000},
    }

    # A worker's call came back saying the account allows 30 requests a minute.
    LearnedStore(client).record("openai", RateLimits(30, 29, 2.0, 150_000, 149_000, 0.4), round(time.time() * 1000))
    learned = wait_for(
        lambda: (s := live()).get("effective", {}).get("requestsPerMinute") == 30 and s, timeout=15, what="learned"
    )
    assert learned["effective"] == {"requestsPerMinute": 30, "tokensPerMinute": 75_000}  # never above the policy
    assert learned["learned"] == {"requestsPerMinute": 30, "tokensPerMinute": 150_000}

    # Then the provider keeps failing and at last answers 429 with Retry-After: breaker open, paused.
    limiter = Limiter(client)
    for outcome in [CallOutcome.ERROR] * 4 + [CallOutcome.THROTTLED]:
        decision = limiter.acquire("openai")
        assert decision.granted, decision
        limiter.release("openai", decision.lease_id, outcome, retry_after=300 if outcome == "throttled" else None)
    troubled = wait_for(lambda: (s := live()).get("breaker") == "open" and s, timeout=15, what="the open breaker")
    status = limiter.status("openai")
    assert troubled["pausedUntil"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status.paused_until))
    assert troubled["halfOpenAt"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status.breaker_half_open_at))
    wide = kubectl("get", "upp", "openai", "-n", cluster.ns, "-o", "wide").stdout
    print(wide)  # the README shows this output
    row = table_row(wide)
    assert (row["REQ/MIN"], row["EFF-REQ/MIN"], row["EFF-TOKENS/MIN"], row["ADAPTIVE"]) == ("50", "30", "75000", "true")
    assert (row["STATE"], row["PAUSED-UNTIL"]) == ("open", troubled["pausedUntil"])

    # The breaker closes again (here: its state cleared); the status follows, and the pause shows until it ends.
    client.hdel(keys.limiter("openai", "state"), "opened_at", "paused_until")
    calm = wait_for(lambda: (s := live()).get("breaker") == "closed" and s, timeout=15, what="the closed breaker")
    assert "pausedUntil" not in calm and "halfOpenAt" not in calm
    cluster.delete("openai")
    client.close()


def test_the_status_reports_spend_and_what_is_left_of_the_budget(cluster, operator, redis_srv, kubectl):
    client = redis.Redis.from_url(redis_srv.url)
    client.delete(keys.limiter("openai", "spend"))
    cluster.apply("openai", {"provider": "openai", "budget": {"usdPerDay": 1.0, "usdPerMonth": 30.0}})
    cluster.wait_ready("openai")

    def spend() -> dict:
        return (((cluster.get("openai") or {}).get("status") or {}).get("live") or {}).get("spend") or {}

    assert wait_for(lambda: spend() or None, timeout=15, what="status.live.spend")["day"]["spentUsd"] == 0
    # A worker's call billed a million prompt and a million completion tokens: $0.15 + $0.60.
    limiter = Limiter(client)
    decision = limiter.acquire("openai", tokens=10)
    assert decision.granted, decision
    limiter.release("openai", decision.lease_id, CallOutcome.SUCCESS, input_tokens=1_000_000, output_tokens=1_000_000)
    shown = wait_for(lambda: (s := spend()).get("day", {}).get("spentUsd") == 0.75 and s, timeout=15, what="spend")
    midnight = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((time.time() // 86400 + 1) * 86400))
    assert shown["day"] == {"spentUsd": 0.75, "budgetUsd": 1.0, "leftUsd": 0.25, "resetsAt": midnight}
    assert shown["month"]["budgetUsd"] == 30.0 and shown["month"]["leftUsd"] == 29.25
    assert shown["whenSpent"] == "wait" and shown["exhausted"] is False
    wide = kubectl("get", "upp", "openai", "-n", cluster.ns, "-o", "wide").stdout
    print(wide)  # the README shows this output
    row = table_row(wide)
    assert (row["BUDGET/DAY"], row["SPENT-TODAY"]) == ("1", "0.75")
    print(kubectl("get", "upp", "openai", "-n", cluster.ns, "-o", "jsonpath={.status.live.spend}").stdout)
    cluster.delete("openai")
    client.delete(keys.limiter("openai", "spend"))  # the live-state test expects no spend
    client.close()


def test_redis_down_is_reported_and_retried_without_crashing(cluster, operator, store, redis_srv):
    revision = cluster.wait_ready("vision")["status"]["revision"]
    redis_srv.stop()
    try:
        cluster.patch("vision", {"requestsPerMinute": 12, "burst": 4})
        condition = cluster.wait_ready("vision", "False", "RedisUnavailable")["status"]["conditions"][0]
        assert "Redis unavailable" in condition["message"]
        time.sleep(3)  # a few retries with backoff
        assert operator.alive()
    finally:
        redis_srv.start()  # same port, empty (no AOF): everything must be written again
    body = cluster.wait_ready("vision", after=revision, timeout=40)
    stored = store.read("azure-vision")
    assert (stored.policy.requests_per_minute, stored.revision) == (12, body["status"]["revision"])
    assert "RedisUnavailable" in [e["reason"] for e in cluster.events("vision")]


WORKER_SELECTOR = "app.kubernetes.io/instance=unilingo,app.kubernetes.io/component=worker"


def test_the_workers_scaling_follows_the_policy_and_the_running_jobs(
    kubectl, cluster, namespace, operator, start_operator, store
):
    """Under the chart's RBAC: a ScaledObject the chart marked gets the maxReplicaCount the
    openai policy makes useful (5 in flight over 4 slots: 2 pods), live as the policy changes
    and held while it is suspended; a worker pod gets the deletion cost of the jobs its worker
    says it runs, and 0 again when they are done."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "crds.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    crd_dir = Path(result.stdout.strip().splitlines()[-1])
    kubectl("apply", "--server-side", "-f", str(next(crd_dir.glob("*scaledobjects*"))))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/scaledobjects.keda.sh")
    labels = {
        "app.kubernetes.io/instance": "unilingo",
        "app.kubernetes.io/component": "worker",
        "unilingo.io/queue": "ai",
    }
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": "unilingo-worker-ai",
            "labels": labels,
            "annotations": {"unilingo.io/max-replicas": "10", "unilingo.io/worker-concurrency": "4"},
        },
        "spec": {
            "scaleTargetRef": {"name": "unilingo-worker-ai"},
            "minReplicaCount": 0,
            "maxReplicaCount": 10,
            "triggers": [{"type": "redis", "metadata": {"listName": "ai", "listLength": "4"}}],
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unilingo-worker-ai-0", "labels": labels},
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "worker", "image": "unilingo:dev"}]},
    }
    for body in (scaled_object, pod):
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))

    def max_replicas() -> int:
        body = json.loads(kubectl("get", "scaledobject", "unilingo-worker-ai", "-n", namespace, "-o", "json").stdout)
        return body["spec"]["maxReplicaCount"]

    def deletion_cost() -> str | None:
        body = json.loads(kubectl("get", "pod", "unilingo-worker-ai-0", "-n", namespace, "-o", "json").stdout)
        return (body["metadata"].get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost")

    scaler = start_operator(
        priority=300,
        OPERATOR_WORKERS_NAMESPACE=namespace,
        OPERATOR_WORKERS_SELECTOR=WORKER_SELECTOR,
        OPERATOR_SCALING_SECONDS="0.5",
    )
    try:
        cluster.apply("openai-scaling", {"provider": "openai"})
        wait_for(lambda: max_replicas() == 2, timeout=30, what="maxReplicaCount 2 (5 in flight, 4 per pod)")
        cluster.patch("openai-scaling", {"maxInFlight": 20})
        wait_for(lambda: max_replicas() == 5, timeout=30, what="maxReplicaCount 5 (20 in flight)")
        cluster.patch("openai-scaling", {"maxInFlight": 40})
        wait_for(lambda: max_replicas() == 10, timeout=30, what="maxReplicaCount 10 (the chart's ceiling)")
        cluster.patch("openai-scaling", {"suspended": True})
        # Suspended: no scaling up beyond the one (pending) pod there is.
        wait_for(lambda: max_replicas() == 1, timeout=30, what="maxReplicaCount held at the running pods")

        wait_for(lambda: deletion_cost() == "0", timeout=30, what="an idle pod's deletion cost 0")
        client = store.client  # the workers' Redis
        client.set(keys.worker_pod_busy(namespace, "unilingo-worker-ai-0"), 2, ex=15)
        wait_for(lambda: deletion_cost() == "2", timeout=30, what="a busy pod's deletion cost 2")
        client.set(keys.worker_pod_busy(namespace, "unilingo-worker-ai-0"), 0, ex=15)
        wait_for(lambda: deletion_cost() == "0", timeout=30, what="the deletion cost back to 0")

        # No worker anywhere (every queue at zero): a job whose worker died mid-run is queued
        # again by the operator's housekeeping, where KEDA's trigger counts it.
        jobs = JobStore(client, ttl=3600)
        job_id = submit(jobs, JobType.FLASHCARDS, {"content": "Der Hund bellt.", "count": 3})
        client.delete("ai")  # taken by a consumer ...
        assert jobs.claim(job_id, lease_seconds=0.5).claimed  # ... whose lease lapses
        wait_for(lambda: client.llen("ai") == 1, timeout=30, what="the stalled job back in its queue's list")
        log = scaler.log()
        assert "Forbidden" not in log and " 403" not in log and "scaling tick failed" not in log, log[-3000:]
    finally:
        scaler.stop()
        cluster.delete("openai-scaling")
        kubectl("delete", "pod", "unilingo-worker-ai-0", "-n", namespace, "--grace-period=0", "--force", check=False)


def test_the_operator_was_never_forbidden_anything(operator):
    log = operator.log()
    assert "Forbidden" not in log and " 403" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_two_replicas_one_writer(cluster, operator, start_operator, store, kubectl, namespace, redis_srv):
    """kopf peering: the lower-priority replica pauses while the other lives; it takes over
    once the active one dies (its keep-alive expires), and only then writes."""
    standby = start_operator(priority=500)

    def peers():
        peering = json.loads(kubectl("get", "kopfpeerings.kopf.dev", "default", "-n", namespace, "-o", "json").stdout)
        return sorted(p["priority"] for p in (peering.get("status") or {}).values())

    wait_for(lambda: peers() == [500, 1000], timeout=30, what="both replicas' keep-alives")

    client = redis.Redis.from_url(redis_srv.url)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.policy_channel())
    pubsub.get_message(timeout=1)
    revision = cluster.wait_ready("vision")["status"]["revision"]
    for rpm in (13, 14, 15):
        cluster.patch("vision", {"requestsPerMinute": rpm})
        revision = cluster.wait_ready("vision", after=revision)["status"]["revision"]
    time.sleep(1)
    changes = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        if message["type"] == "message":
            changes.append(json.loads(message["data"]))
    assert len(changes) == 3, changes  # one revision per change: one writer
    assert "wrote azure-vision" in operator.log()
    assert "Handler" not in standby.log(), standby.log()  # paused from the start: handled nothing at all

    operator.kill(signal.SIGKILL)  # no goodbye: the standby waits for the keep-alive to expire
    operator.process.wait()
    wait_for(lambda: "Resuming operations after the pause" in standby.log(), timeout=30, what="the standby to resume")
    cluster.patch("vision", {"requestsPerMinute": 16})
    body = cluster.wait_ready("vision", after=revision, timeout=30)
    assert store.read("azure-vision").policy.requests_per_minute == 16
    assert "wrote azure-vision" in standby.log()
    assert body["status"]["revision"] == store.read("azure-vision").revision
    pubsub.close()
    client.close()
