"""``make run``: the whole local stack in the foreground; Ctrl-C stops all of it.

Redis (AOF), PostgreSQL (unless DATABASE_URL names one), the provider sandbox (unless real
provider credentials are configured), the API and one worker for every queue, each a real process started the way its ``make`` target
starts it, with their output interleaved and prefixed.
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


def main() -> None:
    settings = get_settings()
    env = dict(os.environ)
    python = sys.executable
    redis_port = urlparse(settings.redis_url).port or 6379
    run_dir = Path(os.environ.get("UNILINGO_RUN_DIR", ROOT / ".run"))
    plan: list[tuple[str, list[str], int | None]] = [("redis", [python, "-m", "devstack.redis"], redis_port)]
    if not os.environ.get("DATABASE_URL"):
        # Generated content goes to a local PostgreSQL, the Supabase schema applied on first use.
        pg_port = int(os.environ.get("POSTGRES_PORT", "5442"))
        env.setdefault("POSTGRES_DIR", str(run_dir / "postgres"))
        env.update(POSTGRES_PORT=str(pg_port), DATABASE_URL=local_url(pg_port))
        plan.append(("postgres", [python, "-m", "devstack.postgres"], pg_port))
    env.setdefault("UPLOADS_BUCKET", "unilingo-uploads")  # users' files archived (to moto, locally)
    if not os.environ.get("OPENAI_BASE_URL"):
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
                wait_for_port(port, timeout=60)
        print(
            f"\nUnilingo is up: API http://127.0.0.1:{settings.api_port}/docs · "
            f"try: make token USER=me, then .venv/bin/unilingo pdf some.pdf\n",
            flush=True,
        )
        while not stopping.is_set():
            for name, process in processes:
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping the stack", flush=True)
                    stopping.set()
            stopping.wait(0.5)
    finally:
        for name, process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, process in reversed(processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
