"""``make run``: the whole local stack in the foreground; Ctrl-C stops all of it.

Redis (AOF), PostgreSQL (unless DATABASE_URL names one), the provider sandbox (unless real
provider credentials are configured), the API and one worker for every queue, each a real
process started the way its ``make`` target starts it, with their output interleaved and prefixed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from devstack.ports import wait_for_port
from devstack.postgres import local_url
from unilingo.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


def _pump(name: str, process: subprocess.Popen) -> None:
    for line in iter(process.stdout.readline, b""):
        sys.stdout.write(f"{name:>8} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def _wait_until_listening(name: str, process: subprocess.Popen, port: int, timeout: float = 90) -> None:
    """Until ``process`` listens on ``port``; a process that exits first stops the stack at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_for_port(port, timeout=0.5)
            return
        except TimeoutError:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode} before listening on port {port}") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} is not listening on port {port} after {timeout:.0f} s") from None


def main() -> None:
    settings = get_settings()
    env = dict(os.environ)
    python = sys.executable
    redis_port = urlparse(settings.redis_url).port or 6379
    # Every component gets the same absolute folder, wherever it changes directory to.
    env["UNILINGO_RUN_DIR"] = str(settings.run_dir())
    plan: list[tuple[str, list[str], int | None]] = [("redis", [python, "-m", "devstack.redis"], redis_port)]
    if not settings.database_url:
        # Generated content goes to a local PostgreSQL, the Supabase schema applied on first use.
        env["DATABASE_URL"] = local_url(settings.postgres_port)
        plan.append(("postgres", [python, "-m", "devstack.postgres"], settings.postgres_port))
    env.setdefault("UPLOADS_BUCKET", "unilingo-uploads")  # users' files archived (to moto, locally)
    if not settings.openai_base_url:
        plan.append(("sandbox", [python, "-m", "sandbox"], settings.sandbox_port))
    plan.append(("api", [python, "-m", "api"], settings.api_port))
    plan.append(("worker", [python, "-m", "workers"], None))

    processes: list[tuple[str, subprocess.Popen]] = []
    stopping = threading.Event()

    def stop(*_):
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, argv, port in plan:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            processes.append((name, process))
            threading.Thread(target=_pump, args=(name, process), daemon=True).start()
            if port:
                _wait_until_listening(name, process, port)
        print(
            f"\nUnilingo is up: API http://{settings.api_host}:{settings.api_port}/docs · "
            f"try: .venv/bin/unilingo flashcards 'Die Katze schläft.' (as USER=me; make token USER=me for curl)\n",
            flush=True,
        )
        while not stopping.is_set():
            for name, process in processes:
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping the stack", flush=True)
                    stopping.set()
            stopping.wait(0.5)
    finally:
        for _name, process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, process in reversed(processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
