"""``make bench``: every benchmark, one after the other; tables land in bench/results/."""

from __future__ import annotations

import importlib
import sys
import traceback

BENCHMARKS = [
    "bench.submit_bench",
    "bench.limiter_bench",
    "bench.quota_use_bench",
    "bench.scenarios_bench",
    "bench.propagation_bench",
    "bench.recovery_bench",
    "bench.cache_bench",
    "bench.fairness_bench",
    "bench.adaptive_bench",
    "bench.kube_bench",  # only with the node of `make cluster` up, or asked for by name
]


def main() -> None:
    only = sys.argv[1:]
    failed = []
    for name in BENCHMARKS:
        if only and not any(o in name for o in only):
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                print(f"== {name}: not present, skipped")
                continue
            raise
        why_not = getattr(module, "available", lambda: None)()
        if why_not and not only:
            print(f"== {name}: skipped ({why_not})")
            continue
        print(f"== {name}", flush=True)
        try:
            module.main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
