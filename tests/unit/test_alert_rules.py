"""The chart's alerts under ``promtool test rules``: each fires when it should and only then.

The rules are the chart's PrometheusRule as ``helm template`` renders it (default values,
release and namespace ``unilingo``); the scenarios are ``tests/promtool/*.yaml``. Each
expected alert states its summary and description; the fixed ``runbook`` annotation is added
from the rendered rule, so the files stay readable while promtool still compares every
annotation exactly.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.chart import PROMTOOL, of_kind, render

PROMTOOL_DIR = Path(__file__).resolve().parents[1] / "promtool"
SCENARIOS = sorted(PROMTOOL_DIR.glob("*.yaml"))


def _promtool() -> str:
    if not PROMTOOL.exists():
        pytest.skip("promtool not built (make tools)")
    return str(PROMTOOL)


@pytest.fixture(scope="module")
def rules() -> dict:
    (rule,) = of_kind(render("default"), "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def alerts_of(rules: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def with_runbooks(scenario: dict, alerts: dict[str, dict]) -> dict:
    scenario = copy.deepcopy(scenario)
    for test in scenario["tests"]:
        for case in test.get("alert_rule_test", []):
            for expected in case.get("exp_alerts") or []:
                annotations = expected.setdefault("exp_annotations", {})
                annotations.setdefault("runbook", alerts[case["alertname"]]["annotations"]["runbook"])
    return scenario


def test_every_alert_is_tested_firing_and_not_firing(rules):
    firing, silent = set(), set()
    for path in SCENARIOS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = set(alerts_of(rules))
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown staying silent"
    assert (firing | silent) - alerts == set(), "scenarios for alerts the chart does not define"


def test_every_alert_says_what_to_do(rules):
    for name, rule in alerts_of(rules).items():
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        assert len(annotations.get("runbook", "")) > 80, f"{name}: the runbook should say what to do"
        assert rule["labels"]["severity"] in ("warning", "critical"), name


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_promtool_scenarios(scenario, rules, tmp_path):
    promtool = _promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = with_runbooks(yaml.safe_load(scenario.read_text()), alerts_of(rules))
    (tmp_path / scenario.name).write_text(yaml.safe_dump(tests, sort_keys=False))
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run([promtool, "test", "rules", scenario.name], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_fails(rules, tmp_path):
    """The runner is not vacuous: an alert expected where none fires makes promtool fail."""
    promtool = _promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    scenario = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'unilingo_breaker_state{namespace="unilingo", job="unilingo-api", provider="openai"}',
                        "values": "0x10",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "UnilingoBreakerOpen",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "provider": "openai"}}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(scenario))
    result = subprocess.run([promtool, "test", "rules", "broken.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
