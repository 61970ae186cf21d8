"""Runs Debian's redis-server on a private loopback port (``make redis`` and the tests)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from devstack.ports import free_port, wait_for_port
from devstack.processes import serve_in_foreground, terminate


class RedisServer:
    """One redis-server process with its data in ``workdir``.

    ``appendonly`` turns AOF on (fsync every write) so that a restart keeps queued jobs,
    the durability the job pipeline promises.
    """

    def __init__(
        self, workdir: Path | None = None, port: int | None = None, appendonly: bool = True, fsync: str = "always"
    ):
        # Absolute: redis-server changes into --dir before it opens --logfile.
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="unilingo-redis-")).resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.fsync = fsync  # "always" loses nothing on a crash; "everysec" is Redis's default
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: run scripts/bootstrap.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.fsync if self.appendonly else "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        self.process = subprocess.Popen(args)
        wait_for_port(self.port)
        self._wait_until_loaded()
        return self

    def _wait_until_loaded(self, timeout: float = 30.0) -> None:
        """A restarted Redis answers LOADING while it replays its AOF; wait for the data."""
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        terminate(self.process, sig, timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    """``make redis``: serve the address REDIS_URL names, in the foreground."""
    from unilingo.settings import get_settings

    settings = get_settings()
    url = urlparse(settings.redis_url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        sys.exit(f"REDIS_URL points at {url.hostname}; make redis only serves a local address")
    workdir = settings.run_dir() / "redis"
    serve_in_foreground(
        RedisServer(workdir=workdir, port=url.port or 6379), f"redis listening on {{server.url}} (AOF in {workdir})"
    )


if __name__ == "__main__":
    main()
