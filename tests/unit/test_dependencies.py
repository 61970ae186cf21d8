"""The pins: pyproject's direct dependencies and extras agree with requirements.lock, and the
production image's set (``project.dependencies``, what the Dockerfile installs) holds every
distribution the shipped packages import, and not the sandbox's moto."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The packages the image copies (Dockerfile: unilingo/, api/, workers/, operator/unilingo_operator/).
SHIPPED = ("unilingo", "api", "workers", "unilingo_operator")


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def closure(roots: list[str]) -> set[str]:
    """Every distribution ``roots`` install (their extras followed), from the installed metadata."""
    seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = seen.get(name, set())
        if name in seen and set(req.extras) <= extras:
            continue
        seen[name] = extras | set(req.extras)
        try:
            declared = requires(req.name) or []
        except PackageNotFoundError:
            continue
        for text in declared:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in seen[name] | {""}):
                todo.append(sub)
    return set(seen)


def test_every_direct_pin_is_exact_and_the_lock_agrees():
    pins = lock()
    direct = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    for text in direct:
        req = Requirement(text)
        (spec,) = req.specifier
        assert spec.operator == "==", text
        assert pins.get(canonicalize_name(req.name)) == spec.version, (
            f"{text}: requirements.lock has {pins.get(req.name)}"
        )


def test_moto_is_the_sandboxs_only():
    runtime = closure(PROJECT["dependencies"])
    assert "moto" not in runtime
    assert any(Requirement(r).name == "moto" for r in PROJECT["optional-dependencies"]["sandbox"])


def test_the_shipped_packages_import_with_the_runtime_set_alone():
    """Every module of the shipped packages imports (as the API, workers and operator load them)
    with only what ``project.dependencies`` installs: every other distribution of this environment
    is hidden from the import system, as it is absent from the image (optional imports then take
    their fallback, as they do there)."""
    runtime = closure(PROJECT["dependencies"])
    hidden = sorted(
        module
        for module, dists in packages_distributions().items()
        if module not in SHIPPED and not {canonicalize_name(d) for d in dists} & runtime
    )
    assert "moto" in hidden
    probe = f"""
import importlib, importlib.abc, pkgutil, sys
HIDDEN = set({hidden!r})

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
for top in {SHIPPED!r}:
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
from api.main import create_app

create_app()  # the routes, the monitoring page's templates among them
"""
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'operator'}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
