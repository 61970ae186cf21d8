"""Waiting for a local stack (as `make run` starts it) to come up: what the end-to-end tests share."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_until_serving(api: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until the API answers and a worker is alive; the stack's log when it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{api}/api/health/detailed", timeout=2).json().get("workers", {}).get("alive", 0) >= 1:
                return
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        assert process.poll() is None, f"the stack exited with {process.returncode}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"the stack did not come up in {timeout:.0f} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
