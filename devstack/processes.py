"""Real processes for tests and benchmarks: start, wait until ready, signal, restart."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from devstack.ports import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # pragma: no cover - best effort (non-Linux)
        pass


def spawn_daemon(log_path: Path, argv: list[str], open_logs: list[IO], **popen: Any) -> subprocess.Popen:
    """Start one of a cluster's daemons in its own session, appending to its log under a header.

    It gets SIGTERM if this process dies, so a killed ``make cluster`` leaves no daemon behind.
    The log stays open in ``open_logs`` until its owner closes them all at stop.
    """
    log = open(log_path, "ab")
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
    log.flush()
    open_logs.append(log)
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
        **popen,
    )


class Service:
    """A child process running one component the way its ``make`` target runs it."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
        ready: callable = None,
    ):
        self.name, self.argv, self.port, self.ready = name, argv, port, ready
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(log_dir or "/tmp") / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen | None = None

    @classmethod
    def python(cls, name: str, module: str, *args: str, **kwargs) -> Service:
        return cls(name, [sys.executable, "-m", module, *args], **kwargs)

    def start(self, timeout: float = 60) -> Service:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if self.port:
            wait_for_port(self.port, timeout=timeout)
        if self.ready:
            deadline = time.monotonic() + timeout
            while not self.ready():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not become ready:\n{self.log()[-3000:]}")
                time.sleep(0.1)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        if self.alive():
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        self.kill(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, message="condition"):
    """Poll ``predicate`` until it returns something truthy, and return that.

    ``message`` (a string, or a callable for details only worth computing on failure) names
    what was awaited in the AssertionError.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = message() if callable(message) else message
    raise AssertionError(f"{detail} not met within {timeout}s")


def terminate(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Ask a server process to stop with ``sig``; kill it if it has not within ``timeout``."""
    if process is None or process.poll() is not None:
        return
    try:
        process.send_signal(sig)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except ProcessLookupError:  # it ended between the poll and the signal
        pass


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a daemon's log, for the error that says why it did not start."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def serve_in_foreground(server, banner: str) -> None:
    """Start ``server`` (``start()``, ``stop()``, ``process``), print ``banner``, run until it
    exits or Ctrl-C / SIGTERM, then stop it cleanly: the ``make redis`` style of target."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    server.start()
    print(banner.format(server=server), flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
