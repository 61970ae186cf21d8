"""The Helm chart as the test tiers render and install it: ``helm`` (built by ``make tools`` when
missing), the value sets (the chart's values.yaml and ``charts/unilingo/ci/*-values.yaml``),
``helm template`` output parsed, and the rendered examples in ``manifests/rendered/``."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "unilingo"
CI_DIR = CHART / "ci"
RENDERED_DIR = REPO / "manifests" / "rendered"
TOOLS_BIN = REPO / ".tools" / "bin"
HELM = TOOLS_BIN / "helm"
PROMTOOL = TOOLS_BIN / "promtool"

RELEASE = "unilingo"
NAMESPACE = "unilingo"

# "default" is the chart's own values.yaml; the rest are charts/unilingo/ci/<name>-values.yaml.
VALUE_SETS = ["default"] + sorted(p.name[: -len("-values.yaml")] for p in CI_DIR.glob("*-values.yaml"))
REQUIRED_VALUE_SETS = {"default", "production", "external-redis", "monitoring-off"}


def ensure_helm() -> Path:
    if not HELM.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "tools.sh"), "helm"], check=True, cwd=REPO)
    return HELM


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "default" else ["-f", str(CI_DIR / f"{value_set}-values.yaml")]


def helm(*args: str, check: bool = True, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(ensure_helm()), *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


@functools.lru_cache(maxsize=64)
def template_text(value_set: str = "default", *extra: str, release: str = RELEASE, namespace: str = NAMESPACE) -> str:
    return helm("template", release, str(CHART), "--namespace", namespace, *values_args(value_set), *extra).stdout


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse(text: str) -> list[dict]:
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


def render(value_set: str = "default", *extra: str, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
    return parse(template_text(value_set, *extra, release=release, namespace=namespace))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


def container_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def worker_deployments(docs: list[dict]) -> list[dict]:
    return [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]


def worker_container(deployment: dict) -> dict:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    return container


# --- the rendered examples (manifests/rendered) ---------------------------------------------------


def rendered_file_text(value_set: str) -> str:
    source = "charts/unilingo/values.yaml" if value_set == "default" else f"charts/unilingo/ci/{value_set}-values.yaml"
    values = "" if value_set == "default" else f" -f {source}"
    header = textwrap.dedent(f"""\
        # GENERATED: helm template {RELEASE} charts/unilingo --namespace {NAMESPACE}{values}
        # Values: {source}. Refresh: .venv/bin/python -m tests.unit.test_chart_render
        # (tests/unit/test_chart_render.py fails when this file is stale).
        """)
    return header + template_text(value_set)


def write_rendered() -> None:
    RENDERED_DIR.mkdir(parents=True, exist_ok=True)
    for old in RENDERED_DIR.glob("*.yaml"):
        old.unlink()
    for value_set in VALUE_SETS:
        (RENDERED_DIR / f"{value_set}.yaml").write_text(rendered_file_text(value_set))
        print(f"wrote manifests/rendered/{value_set}.yaml", file=sys.stderr)
