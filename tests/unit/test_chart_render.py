"""The Helm chart, rendered: lint, templates for every value set, and the invariants that keep
KEDA from counting the wrong list and scale-down from killing a running job.

Needs ``.tools/bin/helm`` (``make tools``; built here from the Go module proxy when missing)
and, for the alert rules, ``.tools/bin/promtool`` (skipped without it).

``manifests/rendered/`` holds ``helm template`` output for each value set; refresh it with
``.venv/bin/python -m tests.unit.test_chart_render`` after changing the chart.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.chart import (
    CHART,
    NAMESPACE,
    PROMTOOL,
    RELEASE,
    RENDERED_DIR,
    REQUIRED_VALUE_SETS,
    VALUE_SETS,
    container_env,
    helm,
    of_kind,
    pod_specs,
    render,
    rendered_file_text,
    template_text,
    values_args,
    worker_container,
    worker_deployments,
    write_rendered,
)


def celery_list_name(app, queue: str) -> str:
    """The Redis key kombu's Redis transport keeps ``queue``'s waiting messages in (default priority).

    Computed with kombu's own ``Channel._q_for_pri`` and this app's transport options, so a
    change of priority steps, separator or key prefix shows here.
    """
    from kombu.transport.redis import Channel

    options = app.conf.broker_transport_options or {}
    stub = SimpleNamespace(
        sep=options.get("sep", Channel.sep), priority_steps=options.get("priority_steps", Channel.priority_steps)
    )
    stub.priority = lambda n: Channel.priority(stub, n)
    name = Channel._q_for_pri(stub, queue, app.conf.task_default_priority or 0)
    return options.get("global_keyprefix", "") + name


def celery_lists() -> dict[str, str]:
    """Celery queue name -> the Redis list its messages wait in."""
    from workers.app import app

    return {q.name: celery_list_name(app, q.name) for q in app.conf.task_queues}


def scaling_problems(docs: list[dict], queue_lists: dict[str, str]) -> list[str]:
    """Everything wrong between the Celery queues, the worker Deployments and the ScaledObjects.

    Wrong: a trigger on a list that its target's workers do not consume (or that no Celery
    queue uses); a queue without a consuming worker Deployment or without a trigger on its
    list; a trigger on another Redis database than the workers use; a ScaledObject whose
    target is not a worker Deployment of this release.
    """
    problems: list[str] = []
    deployments = {d["metadata"]["name"]: d for d in worker_deployments(docs)}
    consumed: dict[str, set[str]] = {}  # deployment -> lists its workers consume
    for name, deployment in deployments.items():
        env = container_env(worker_container(deployment))
        queues = [q.strip() for q in env.get("WORKER_QUEUES", {}).get("value", "").split(",") if q.strip()]
        if not queues:
            problems.append(f"worker Deployment {name} sets no WORKER_QUEUES")
        for queue in queues:
            if queue not in queue_lists:
                problems.append(f"worker Deployment {name} consumes queue {queue!r}, which Celery does not define")
        consumed[name] = {queue_lists.get(q, q) for q in queues}
    triggered: set[str] = set()
    for so in of_kind(docs, "ScaledObject"):
        name, target = so["metadata"]["name"], so["spec"]["scaleTargetRef"]
        if target.get("kind", "Deployment") != "Deployment" or target["name"] not in deployments:
            problems.append(f"ScaledObject {name} targets {target}, not a worker Deployment of this release")
            continue
        deployment = deployments[target["name"]]
        redis_url = container_env(worker_container(deployment)).get("REDIS_URL", {}).get("value")
        for trigger in so["spec"]["triggers"]:
            meta = trigger.get("metadata", {})
            if trigger["type"] not in ("redis", "redis-sentinel"):
                problems.append(f"ScaledObject {name}: trigger type {trigger['type']} does not read a Redis list")
                continue
            list_name = meta.get("listName")
            if list_name not in consumed[target["name"]]:
                problems.append(
                    f"ScaledObject {name} watches list {list_name!r}, which its Deployment "
                    f"{target['name']} does not consume (it consumes {sorted(consumed[target['name']])})"
                )
            if list_name not in queue_lists.values():
                problems.append(f"ScaledObject {name} watches list {list_name!r}, which no Celery queue uses")
            triggered.add(list_name)
            if redis_url:  # bundled and external: the trigger reads the very Redis and db the workers use
                url = urlsplit(redis_url.replace("$(REDIS_PASSWORD)", "x"))
                db = url.path.lstrip("/") or "0"
                if meta.get("databaseIndex", "0") != db:
                    problems.append(f"ScaledObject {name} reads db {meta.get('databaseIndex')}, workers use db {db}")
                address = f"{url.hostname}:{url.port or 6379}"
                if meta.get("address") != address:
                    problems.append(f"ScaledObject {name} reads {meta.get('address')}, workers use {address}")
                if meta.get("enableTLS", "false") != str(url.scheme == "rediss").lower():
                    problems.append(
                        f"ScaledObject {name}: enableTLS {meta.get('enableTLS')} but REDIS_URL is {url.scheme}://"
                    )
    all_consumed = set().union(*consumed.values()) if consumed else set()
    for queue, list_name in sorted(queue_lists.items()):
        if list_name not in all_consumed:
            problems.append(f"Celery queue {queue!r} (list {list_name!r}) has no worker Deployment")
        if list_name not in triggered:
            problems.append(f"Celery queue {queue!r} (list {list_name!r}) has no KEDA trigger")
    return problems


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(name) for name in VALUE_SETS}


# ---- lint and template ----------------------------------------------------------------------------
def test_the_required_value_sets_exist():
    assert REQUIRED_VALUE_SETS <= set(VALUE_SETS), VALUE_SETS


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_is_clean(value_set):
    result = helm("lint", "--strict", str(CHART), *values_args(value_set), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_template_renders_well_formed_unique_objects(value_set, rendered):
    docs = rendered[value_set]
    assert docs
    seen = set()
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]["name"]
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, (key, labels)
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", (key, labels)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole", "Role", "Pod"} <= kinds


def test_default_values_render_every_component(rendered):
    docs = rendered["default"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("Deployment", "unilingo-api"),
        ("Service", "unilingo-api"),
        ("Ingress", "unilingo-api"),
        ("PodDisruptionBudget", "unilingo-api"),
        ("Deployment", "unilingo-operator"),
        ("StatefulSet", "unilingo-redis"),
        ("Service", "unilingo-redis"),
        ("ServiceMonitor", "unilingo-api"),
        ("PodMonitor", "unilingo-worker"),
        ("PrometheusRule", "unilingo"),
        ("ConfigMap", "unilingo-dashboard"),
        ("NetworkPolicy", "unilingo-redis"),
        ("Pod", "unilingo-test-pdf-job"),
    ]:
        assert expected in kinds, expected
    assert not of_kind(docs, "HorizontalPodAutoscaler")  # api.autoscaling is off by default
    assert not of_kind(docs, "Secret")


def test_monitoring_off_renders_no_monitoring_objects(rendered):
    kinds = {d["kind"] for d in rendered["monitoring-off"]}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [
        d
        for d in of_kind(rendered["monitoring-off"], "ConfigMap")
        if d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    assert "monitoring.coreos.com" not in template_text("monitoring-off")


def test_production_values_autoscale_the_api_and_pin_the_image(rendered):
    docs = rendered["production"]
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "unilingo-api" and hpa["spec"]["minReplicas"] == 3
    api = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "unilingo-api")
    assert "replicas" not in api["spec"]  # the HPA owns it
    for name, spec in pod_specs(docs):
        for c in spec["containers"]:
            if "unilingo" in c["image"]:
                assert c["image"].endswith("@sha256:" + "0" * 64), (name, c["image"])


def test_manifests_rendered_are_current():
    """manifests/rendered/<set>.yaml is what `helm template` gives today (refresh: see the module doc)."""
    for value_set in VALUE_SETS:
        path = RENDERED_DIR / f"{value_set}.yaml"
        assert path.exists(), f"{path} missing: run .venv/bin/python -m tests.unit.test_chart_render"
        assert path.read_text() == rendered_file_text(value_set), (
            f"{path} is stale: run .venv/bin/python -m tests.unit.test_chart_render"
        )


# ---- KEDA watches exactly the lists the workers consume ------------------------------------------
def test_celery_queues_wait_in_the_lists_named_by_unilingo_keys():
    from unilingo import keys
    from unilingo.jobs import QUEUES

    lists = celery_lists()
    assert sorted(lists) == sorted(QUEUES)
    for queue, list_name in lists.items():
        assert list_name == keys.queue_list(queue) == queue


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_trigger_watches_a_consumed_list_and_every_queue_has_a_trigger(value_set, rendered):
    docs = rendered[value_set]
    if not of_kind(docs, "ScaledObject"):
        pytest.skip("KEDA is disabled in this value set")
    assert scaling_problems(docs, celery_lists()) == []


def test_the_scaling_check_catches_a_queue_without_worker_or_trigger():
    docs = render("default", "--set", "workers.queues.ocr=null")
    problems = scaling_problems(docs, celery_lists())
    assert any("'ocr'" in p and "no worker Deployment" in p for p in problems), problems
    assert any("'ocr'" in p and "no KEDA trigger" in p for p in problems), problems


def test_the_scaling_check_catches_a_trigger_on_the_wrong_list():
    docs = copy.deepcopy(render("default"))
    so = next(d for d in of_kind(docs, "ScaledObject") if d["metadata"]["name"] == "unilingo-worker-pdf")
    so["spec"]["triggers"][0]["metadata"]["listName"] = "celery"  # Celery's default queue, unused here
    problems = scaling_problems(docs, celery_lists())
    assert any("watches list 'celery'" in p and "does not consume" in p for p in problems), problems
    assert any("'pdf'" in p and "no KEDA trigger" in p for p in problems), problems


def test_the_scaling_check_catches_a_trigger_on_another_database():
    docs = copy.deepcopy(render("default"))
    so = of_kind(docs, "ScaledObject")[0]
    so["spec"]["triggers"][0]["metadata"]["databaseIndex"] = "3"
    assert any("reads db 3" in p for p in scaling_problems(docs, celery_lists()))


def test_a_queue_unknown_to_celery_is_reported():
    docs = render("default", "--set", "workers.queues.video.concurrency=1")
    assert any("'video'" in p and "Celery does not define" in p for p in scaling_problems(docs, celery_lists()))


def test_scaledobject_settings_come_from_values(rendered):
    sos = {d["metadata"]["name"]: d for d in of_kind(rendered["default"], "ScaledObject")}
    ai, pdf = sos["unilingo-worker-ai"]["spec"], sos["unilingo-worker-pdf"]["spec"]
    assert (ai["minReplicaCount"], ai["maxReplicaCount"]) == (1, 10)
    assert pdf["minReplicaCount"] == 0  # scale to zero allowed per queue (and not lost to a merge)
    meta = ai["triggers"][0]["metadata"]
    assert meta == {
        "address": "unilingo-redis.unilingo.svc.cluster.local:6379",
        "listName": "ai",
        "listLength": "4",
        "activationListLength": "0",
        "databaseIndex": "0",
        "enableTLS": "false",
    }
    behavior = ai["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    for so in sos.values():  # KEDA's CRD types every trigger metadata value as a string
        assert all(isinstance(v, str) for t in so["spec"]["triggers"] for v in t["metadata"].values())
        assert (so["spec"]["pollingInterval"], so["spec"]["cooldownPeriod"]) == (10, 300)
    for deployment in worker_deployments(rendered["default"]):
        assert "replicas" not in deployment["spec"]  # KEDA's HPA owns it


def test_external_redis_trigger_reads_the_url_and_authenticates(rendered):
    docs = rendered["external-redis"]
    so = of_kind(docs, "ScaledObject")[0]
    meta = so["spec"]["triggers"][0]["metadata"]
    assert (meta["address"], meta["databaseIndex"], meta["enableTLS"], meta["username"]) == (
        "redis.example.internal:6380",
        "2",
        "true",
        "unilingo",
    )
    assert so["spec"]["triggers"][0]["authenticationRef"] == {"name": "unilingo-redis"}
    (auth,) = of_kind(docs, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "unilingo-redis", "key": "password"}]
    env = container_env(worker_container(worker_deployments(docs)[0]))
    names = list(env)
    assert env["REDIS_URL"]["value"] == "rediss://unilingo:$(REDIS_PASSWORD)@redis.example.internal:6380/2"
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")  # $(VAR) expands only earlier vars
    assert not of_kind(docs, "StatefulSet")


def test_sentinel_renders_sentinel_env_and_trigger(rendered):
    docs = rendered["sentinel"]
    so = of_kind(docs, "ScaledObject")[0]
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "redis-sentinel"
    assert trigger["metadata"]["sentinelMaster"] == "unilingo" and trigger["metadata"]["databaseIndex"] == "1"
    assert trigger["metadata"]["addresses"].count(":26379") == 3
    (auth,) = of_kind(docs, "TriggerAuthentication")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password", "sentinelPassword"}
    env = container_env(worker_container(worker_deployments(docs)[0]))
    assert "REDIS_URL" not in env
    assert env["REDIS_SENTINEL_MASTER"]["value"] == "unilingo" and env["REDIS_DB"]["value"] == "1"
    assert (
        env["REDIS_SENTINELS"]["value"].split(",")[0] == "redis-sentinel-0.redis-sentinel.data.svc.cluster.local:26379"
    )


# ---- graceful scale-down: the grace period outlasts the longest job ---------------------------------
def _settings_from(container: dict, monkeypatch):
    """The Settings the app builds from this container's environment."""
    from unilingo.settings import Settings

    for name in list(os.environ):
        if name.upper() in Settings.model_fields or name.lower() in Settings.model_fields:
            monkeypatch.delenv(name, raising=False)
    for name, var in container_env(container).items():
        if name.lower() not in Settings.model_fields:
            continue
        if "value" in var and "$(" not in var["value"]:
            monkeypatch.setenv(name, var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            monkeypatch.setenv(name, f"from-secret-{var['valueFrom']['secretKeyRef']['key']}")
    return Settings()


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_worker_grace_period_exceeds_the_longest_job(value_set, rendered, monkeypatch):
    from workers.app import app

    hard_limit_slack = app.conf.task_time_limit - app.conf.task_soft_time_limit  # Celery's SIGKILL point
    assert hard_limit_slack >= 0
    deployments = worker_deployments(rendered[value_set])
    assert deployments
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        container = worker_container(deployment)
        with monkeypatch.context() as m:
            settings = _settings_from(container, m)
        grace = spec["terminationGracePeriodSeconds"]
        name = deployment["metadata"]["name"]
        # The longest a job can run in this container is its hard time limit.
        assert grace > settings.job_timeout_seconds + hard_limit_slack, (name, grace, settings.job_timeout_seconds)
        # The hand-back after the drain time has a moment before the kubelet's SIGKILL.
        assert settings.worker_drain_seconds + 15 == grace, (name, settings.worker_drain_seconds, grace)
        # preStop must start the drain, not spend the grace period sleeping before SIGTERM.
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop == ["/bin/sh", "-c", "kill -TERM 1"], pre_stop
        assert container["command"] == ["python", "-m", "workers"]  # PID 1 is the Celery main process


def test_grace_period_follows_a_per_queue_job_timeout(rendered):
    docs = render("default", "--set", "workers.queues.pdf.jobTimeoutSeconds=1800")
    pdf = next(d for d in worker_deployments(docs) if d["metadata"]["name"] == "unilingo-worker-pdf")
    assert pdf["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 1860
    assert container_env(worker_container(pdf))["JOB_TIMEOUT_SECONDS"]["value"] == "1800"
    prod_pdf = next(
        d for d in worker_deployments(rendered["production"]) if d["metadata"]["name"] == "unilingo-worker-pdf"
    )
    assert prod_pdf["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 900 + 90


def test_a_short_drain_hands_back_long_jobs_before_the_kubelet_kills_the_pod():
    docs = render("default", "--set", "workers.queues.ai.drainSeconds=90")
    ai = next(d for d in worker_deployments(docs) if d["metadata"]["name"] == "unilingo-worker-ai")
    assert ai["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 105
    assert container_env(worker_container(ai))["WORKER_DRAIN_SECONDS"]["value"] == "90"


def test_default_grace_period_matches_the_app_default_drain():
    from unilingo.settings import Settings

    defaults = Settings.model_fields
    docs = render("default")
    ai = next(d for d in worker_deployments(docs) if d["metadata"]["name"] == "unilingo-worker-ai")
    assert (
        ai["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == defaults["worker_drain_seconds"].default + 15
    )
    assert container_env(worker_container(ai))["JOB_TIMEOUT_SECONDS"]["value"] == str(
        defaults["job_timeout_seconds"].default
    )


# ---- values.schema.json ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "setting, message",
    [
        ("workers.queues.ai.maxReplicas=-1", "/workers/queues/ai/maxReplicas"),
        ("workers.queues.ai.minReplicas=-1", "/workers/queues/ai/minReplicas"),
        ("workers.defaults.drainMarginSeconds=5", "/workers/defaults/drainMarginSeconds"),
        ("workers.queues.pdf.listLength=0", "/workers/queues/pdf/listLength"),
        ("workers.queues.ai.replicaz=3", "replicaz"),
        ("workers.queues.Bad_Queue.concurrency=1", "Bad_Queue"),
        ("redis.mode=cluster", "/redis/mode"),
        ("redis.external.url=redis://:hunter2@redis:6379/0", "/redis/external/url"),
        ("api.port=70000", "/api/port"),
        ("config.quotaIp=lots", "/config/quotaIp"),
        ("config.trustedProxies[0]=everyone", "/config/trustedProxies/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("monitoring.prometheusRule.thresholds.jobFailureRatio=2", "jobFailureRatio"),
        ("operator.replicas=3", "/operator/replicas"),
        ("unknownTopLevel=1", "unknownTopLevel"),
    ],
)
def test_schema_rejects_bad_values(setting, message):
    result = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "settings, message",
    [
        (["redis.mode=external"], "redis.mode=external needs redis.external.url"),
        (["redis.mode=sentinel"], "redis.mode=sentinel needs redis.sentinel.hosts"),
        (["workers.queues.ai.minReplicas=20"], "minReplicas (20) exceeds maxReplicas (10)"),
    ],
)
def test_template_rejects_inconsistent_values(settings, message):
    args = [a for s in settings for a in ("--set", s)]
    result = helm("template", RELEASE, str(CHART), *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_schema_documents_every_value_and_values_yaml_comments_them():
    """Every leaf of values.yaml is in the schema, and every key has a comment above it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node):
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].split("/")[-1]]
        return node

    def walk(node, value, path):
        node = resolve(node)
        if isinstance(value, dict) and node.get("type") in ("object", ["object", "null"]) and "properties" in node:
            for key, sub in value.items():
                props = node["properties"]
                if key in props:
                    walk(props[key], sub, f"{path}.{key}")
                elif isinstance(node.get("additionalProperties"), dict):
                    walk(node["additionalProperties"], sub, f"{path}.{key}")
                else:
                    assert node.get("additionalProperties", True) is not False, f"{path}.{key} not in the schema"

    walk(schema, values, "")
    # Every key has a comment line right above it, except keys nested inside a value documented
    # as a unit (its comment starts with "# --", e.g. `# -- Resources ...` over `resources:`).
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    unit_indent = None  # indentation of the key documented as a unit we are inside, if any
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w./-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        if unit_indent is not None and indent > unit_indent:
            continue
        unit_indent = None
        comment = lines[i - 1].strip() if i else ""
        if not comment.startswith("#"):
            uncommented.append(f"{i + 1}: {line.strip()}")
        elif comment.startswith("# --"):
            unit_indent = indent
    assert uncommented == [], "values without a comment above them:\n" + "\n".join(uncommented)


# ---- pods: security, resources, probes, no inline secrets ----------------------------------------------
SECRETISH = re.compile(r"(SECRET|PASSWORD|_KEY$|KEY_ID|DATABASE_URL|TOKEN)")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pods_are_locked_down(value_set, rendered):
    for name, spec in pod_specs(rendered[value_set]):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (name, c["name"])
            for var in c.get("env", []):
                if SECRETISH.search(var["name"]) and var["name"] != "REDIS_URL":
                    assert "valueFrom" in var and "secretKeyRef" in var["valueFrom"], (name, var)
        if not name.startswith("StatefulSet/"):  # the app image: uid 10001, writable /tmp only
            assert psc["runAsUser"] == 10001, name
            assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"], name
        if "operator" not in name:
            assert spec.get("automountServiceAccountToken") is False, name
    assert not of_kind(rendered[value_set], "Secret")


def test_probes(rendered):
    docs = rendered["default"]
    api = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "unilingo-api")
    c = api["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/api/health", "port": "http"}
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 5 + 10  # preStop + uvicorn's drain
    op = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "unilingo-operator")
    oc = op["spec"]["template"]["spec"]["containers"][0]
    assert oc["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container_env(oc)["OPERATOR_HEALTH_PORT"]["value"] == "8081"
    redis = of_kind(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "tcpSocket" in redis["livenessProbe"] and "exec" in redis["readinessProbe"]


def test_worker_liveness_probe_reads_the_heartbeat_set_the_workers_write():
    from unilingo import keys

    docs = render("default")
    c = worker_container(worker_deployments(docs)[0])
    script = c["livenessProbe"]["exec"]["command"][2]
    assert c["startupProbe"]["exec"]["command"][2] == script
    assert f'"{keys.workers_alive()}"' in script
    compile(script, "probe", "exec")


def test_bundled_redis_is_durable_and_never_evicts(rendered):
    sts = of_kind(rendered["production"], "StatefulSet")[0]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--appendonly"] == "yes" and pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--requirepass"] == "$(REDIS_PASSWORD)" and pairs["--maxmemory"] == "3gb"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"


# ---- RBAC and NetworkPolicies -----------------------------------------------------------------------------
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_rbac_is_least_privilege(value_set, rendered):
    docs = rendered[value_set]
    rules = [
        (d["kind"], d["metadata"].get("namespace"), r)
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for r in d["rules"]
    ]
    assert rules
    for _kind, _, rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert "secrets" not in rule["resources"], rule
    cluster = [r for k, _, r in rules if k == "ClusterRole"]
    assert {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    } in cluster
    policy_rules = [(k, ns) for k, ns, r in rules if "unilingoproviderpolicies" in r["resources"]]
    cluster_wide = value_set == "external-redis"
    assert all(k == ("ClusterRole" if cluster_wide else "Role") for k, _ in policy_rules), policy_rules


def test_operator_watches_the_release_namespace_by_default(rendered):
    docs = rendered["default"]
    op = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "unilingo-operator")
    env = container_env(op["spec"]["template"]["spec"]["containers"][0])
    assert env["OPERATOR_NAMESPACES"]["value"] == NAMESPACE
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in of_kind(docs, "Role")}
    assert roles == {
        (NAMESPACE, "unilingo-operator"),
        (NAMESPACE, "unilingo-operator-leases"),
        (NAMESPACE, "unilingo-operator-scaling"),
    }
    # The workers' scaling: list and patch of the release's pods and ScaledObjects, nothing more.
    scaling = next(d for d in of_kind(docs, "Role") if d["metadata"]["name"] == "unilingo-operator-scaling")
    assert scaling["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]},
        {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list", "patch"]},
    ]
    assert env["OPERATOR_WORKERS_SELECTOR"]["value"] == (
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=worker"
    )
    sentinel_roles = {
        d["metadata"]["namespace"]
        for d in of_kind(rendered["sentinel"], "Role")
        if d["metadata"]["name"] == "unilingo-operator"
    }
    assert sentinel_roles == {"default", "unilingo-policies"}


def test_network_policies(rendered):
    nps = {d["metadata"]["name"]: d["spec"] for d in of_kind(rendered["default"], "NetworkPolicy")}
    assert set(nps) == {"unilingo-api", "unilingo-worker", "unilingo-operator", "unilingo-redis"}
    api_from = nps["unilingo-api"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in api_from
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in api_from
    # Workers accept only Prometheus's scrapes, on their metrics port.
    assert nps["unilingo-worker"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": "metrics", "protocol": "TCP"}],
        }
    ]
    worker_ports = {
        (p["port"], p["protocol"]) for rule in nps["unilingo-worker"]["egress"] for p in rule.get("ports", [])
    }
    assert {(53, "UDP"), (6379, "TCP"), (443, "TCP")} <= worker_ports
    redis_from = nps["unilingo-redis"]["ingress"][0]["from"]
    assert {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "unilingo", "app.kubernetes.io/instance": RELEASE}}
    } in redis_from
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
    } in redis_from  # KEDA reads lengths
    assert nps["unilingo-redis"]["egress"] == []
    ext = {d["metadata"]["name"]: d["spec"] for d in of_kind(rendered["external-redis"], "NetworkPolicy")}
    ext_ports = {p["port"] for rule in ext["unilingo-worker"]["egress"] for p in rule.get("ports", [])}
    assert 6380 in ext_ports and 5432 in ext_ports


# ---- monitoring ------------------------------------------------------------------------------------------
ALERT_METRICS = [
    "unilingo_queue_depth",
    "unilingo_breaker_state",
    "unilingo_provider_calls_total",
    "unilingo_jobs_total",
    "unilingo_workers_alive",
    "unilingo_queue_oldest_age_seconds",
]
DASHBOARD_METRICS = ALERT_METRICS + [
    "unilingo_http_requests_total",
    "unilingo_http_request_duration_seconds_bucket",
    "unilingo_provider_tokens_total",
    "unilingo_permits_total",
    "unilingo_quota_rejections_total",
    "unilingo_policy_revision",
    "unilingo_cache_hits_total",
]
# Grafana's variables as a panel query sees them (the dashboard's own defaults for its textboxes).
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": ".*", "$usd_per_million_tokens": "0.6"}


def _rule_groups(docs):
    (rule,) = of_kind(docs, "PrometheusRule")
    return rule["spec"]["groups"]


def test_alerts_cover_the_platform_failure_modes(rendered):
    groups = _rule_groups(rendered["default"])
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert {
        "UnilingoQueueBacklogHigh",
        "UnilingoQueueOldestJobTooOld",
        "UnilingoNoWorkersWhileJobsWait",
        "UnilingoBreakerOpen",
        "UnilingoProviderThrottled",
        "UnilingoJobFailureRateHigh",
    } <= set(alerts)
    exprs = " ".join(r["expr"] for r in alerts.values())
    for metric in ALERT_METRICS:
        assert metric in exprs, metric
    assert 'outcome="throttled"' in alerts["UnilingoProviderThrottled"]["expr"]
    assert "== 2" in alerts["UnilingoBreakerOpen"]["expr"]
    for rule in alerts.values():
        # scoped to this release: the API's scrape job, or the workers' (PodMonitor)
        assert re.search(r'namespace="unilingo", job="unilingo-(api|worker)"', rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["runbook"], rule["alert"]  # what to do when it fires
    prod = {r["alert"]: r for g in _rule_groups(rendered["production"]) for r in g["rules"]}
    assert prod["UnilingoBreakerOpen"]["labels"]["team"] == "platform"


def _promtool():
    if not PROMTOOL.exists():
        pytest.skip("promtool not built (make tools)")
    return str(PROMTOOL)


def test_alert_rules_pass_promtool(tmp_path, rendered):
    promtool = _promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule_groups(rendered["default"])}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_when_they_should(tmp_path, rendered):
    """promtool's rule unit tests: the alerts fire on the series they are about, and only then."""
    promtool = _promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": _rule_groups(rendered["default"])}))
    alerts = {r["alert"]: r for g in _rule_groups(rendered["default"]) for r in g["rules"]}
    sel = 'namespace="unilingo", job="unilingo-api"'
    wsel = 'namespace="unilingo", job="unilingo-worker"'
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # pdf jobs wait, no pdf worker is alive; ai has jobs and a live worker.
                    {"series": f'unilingo_queue_depth{{{sel}, queue="pdf", instance="a"}}', "values": "3x20"},
                    {"series": f'unilingo_queue_depth{{{sel}, queue="ai", instance="a"}}', "values": "3x20"},
                    {"series": f'unilingo_workers_alive{{{sel}, queue="ai", instance="a"}}', "values": "1x20"},
                    {"series": f'unilingo_workers_alive{{{sel}, queue="pdf", instance="a"}}', "values": "0x20"},
                    {"series": f'unilingo_breaker_state{{{sel}, provider="openai", instance="a"}}', "values": "2x20"},
                    {
                        "series": f'unilingo_breaker_state{{{sel}, provider="azure-speech", instance="a"}}',
                        "values": "1x20",
                    },
                    {
                        "series": f'unilingo_provider_calls_total{{{wsel}, provider="openai", '
                        'outcome="throttled", instance="w"}',
                        "values": "0+10x30",
                    },
                    {
                        "series": f'unilingo_provider_calls_total{{{wsel}, provider="openai", '
                        'outcome="success", instance="w"}',
                        "values": "0+10x30",
                    },
                    {"series": f'up{{{sel}, instance="a"}}', "values": "1x20"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "UnilingoNoWorkersWhileJobsWait",
                        "exp_alerts": [
                            {
                                "exp_labels": {"queue": "pdf", "severity": "critical"},
                                "exp_annotations": {
                                    "summary": "Jobs wait in queue pdf and no worker is alive",
                                    "description": "KEDA has not started a worker for this queue, or its workers "
                                    "crash or "
                                    "cannot reach Redis.",
                                    "runbook": alerts["UnilingoNoWorkersWhileJobsWait"]["annotations"]["runbook"],
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "UnilingoBreakerOpen",
                        "exp_alerts": [
                            {
                                "exp_labels": {"provider": "openai", "severity": "warning"},
                                "exp_annotations": {
                                    "summary": "Circuit breaker for openai is open",
                                    "description": "Calls to this provider failed in a row; its jobs are deferred "
                                    "(not failed) "
                                    "until the breaker half-opens and a probe succeeds.",
                                    "runbook": alerts["UnilingoBreakerOpen"]["annotations"]["runbook"],
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "25m",
                        "alertname": "UnilingoProviderThrottled",
                        "exp_alerts": [
                            {
                                "exp_labels": {"provider": "openai", "severity": "warning"},
                                "exp_annotations": {
                                    "summary": "Provider openai answers 429 to 50% of calls",
                                    "description": "The provider refuses calls our limiter allowed: its policy "
                                    "allows more than "
                                    "the provider's real quota.",
                                    "runbook": alerts["UnilingoProviderThrottled"]["annotations"]["runbook"],
                                },
                            }
                        ],
                    },
                    {"eval_time": "10m", "alertname": "UnilingoApiDown", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmap_carries_the_dashboard_for_the_sidecar(rendered):
    (cm,) = [d for d in of_kind(rendered["default"], "ConfigMap") if d["metadata"]["name"] == "unilingo-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["unilingo.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "unilingo.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in DASHBOARD_METRICS:
        assert metric in exprs, metric


def test_dashboard_queries_are_valid_promql(tmp_path):
    """Every panel query, with Grafana's variables filled in, parses as a recording rule."""
    promtool = _promtool()
    dashboard = json.loads((CHART / "dashboards" / "unilingo.json").read_text())
    rules = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId'].lower()}", "expr": expr})
    assert len(rules) >= 20
    (tmp_path / "dash.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(tmp_path / "dash.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- helm test -------------------------------------------------------------------------------------------------
def test_helm_test_pod_submits_a_pdf_with_a_token_from_the_secret(rendered):
    (pod,) = of_kind(rendered["default"], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    env = container_env(c)
    assert env["SUPABASE_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "unilingo-credentials",
        "key": "SUPABASE_JWT_SECRET",
    }
    assert env["API_URL"]["value"] == "http://unilingo-api.unilingo.svc.cluster.local:80"
    script = c["command"][2]
    assert c["command"][:2] == ["python", "-c"]
    assert script == (CHART / "files" / "smoke_test.py").read_text()
    assert '"unilingo.tokens", "--user", "helm-test"' in script and "/api/process-pdf" in script


def test_helm_test_pdf_has_the_text_the_pdf_worker_extracts():
    import io

    from pypdf import PdfReader

    spec = importlib.util.spec_from_file_location("smoke_test", CHART / "files" / "smoke_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reader = PdfReader(io.BytesIO(module.pdf_with_text(module.MARKER)))
    assert module.MARKER in reader.pages[0].extract_text()


if __name__ == "__main__":
    write_rendered()
