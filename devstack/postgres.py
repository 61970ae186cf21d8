"""Runs Debian's PostgreSQL 15 on a private loopback port (the tests and ``make run``).

``initdb`` into a fresh directory, then ``postgres`` in the foreground as a child process,
listening on 127.0.0.1 only, trust authentication (a throwaway local cluster), no fsync
unless asked (tests want speed, not durability). PostgreSQL refuses to run as root, so as
root the cluster belongs to the ``postgres`` system user (Debian's package creates it; it
is created here if missing) and its processes are started with that user's uid and gid.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.ports import free_port, wait_for_port
from devstack.processes import serve_in_foreground, terminate

SYSTEM_USER = "postgres"


def pg_bin(name: str) -> str:
    """A PostgreSQL binary: version 15 if present, else the newest installed."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    preferred = [c for c in candidates if Path(c).parts[4] == "15"]
    if preferred:
        return preferred[0]
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"PostgreSQL's {name} is missing: run scripts/bootstrap.sh (it installs postgresql)")


def _traversable(folder: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may pass through ``folder`` and each of its parents (existing ones)."""
    for part in (folder, *folder.parents):
        try:
            info = part.stat()
        except FileNotFoundError:
            continue  # created by us below, 0755
        if info.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == user.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def cluster_folder(workdir: Path) -> Path:
    """Where a cluster asked for in ``workdir`` really lives.

    As root the cluster belongs to the ``postgres`` user, who cannot pass through a 0700
    folder of root's (a checkout under ``/root``): such a cluster lives in a temporary folder
    of its own instead, always the same one for the same ``workdir``.
    """
    if os.geteuid() != 0 or _traversable(workdir.parent, _ensure_system_user()):
        return workdir
    digest = hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"unilingo-postgres-{digest}"


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER], check=True
        )
        return pwd.getpwnam(SYSTEM_USER)


class PostgresServer:
    """One PostgreSQL cluster in ``workdir`` serving ``database`` on ``port``."""

    def __init__(
        self, workdir: Path | None = None, port: int | None = None, database: str = "unilingo", fsync: bool = False
    ):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="unilingo-pg-")).resolve()
        self.port = port or free_port()
        self.database = database
        self.fsync = fsync
        self.user = SYSTEM_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def _owner_kwargs(self) -> dict:
        """``subprocess`` arguments that run a command as the cluster's owner (root: postgres)."""
        if os.geteuid() != 0:
            return {}
        owner = pwd.getpwnam(SYSTEM_USER)
        return {
            "user": owner.pw_uid,
            "group": owner.pw_gid,
            "extra_groups": [],
            "env": {**os.environ, "HOME": owner.pw_dir},
        }

    def _prepare(self) -> None:
        folder = cluster_folder(self.workdir)
        if folder != self.workdir:
            print(f"postgres: {SYSTEM_USER} cannot enter {self.workdir.parent}; the cluster is in {folder}", flush=True)
            self.workdir = folder
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = _ensure_system_user()
            # The cluster's user must reach its directory: no 0700 root-owned parent in the way.
            os.chmod(self.workdir, 0o755)
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        if not (self.datadir / "PG_VERSION").exists():
            subprocess.run(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self.workdir,
                **self._owner_kwargs(),
            )

    def start(self) -> PostgresServer:
        self._prepare()
        args = [
            pg_bin("postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.workdir}",
            "-c",
            "max_connections=100",
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
            "-c",
            "synchronous_commit=off" if not self.fsync else "synchronous_commit=on",
            "-c",
            "full_page_writes=off" if not self.fsync else "full_page_writes=on",
        ]
        log = open(self.workdir / "postgres.log", "ab")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, **self._owner_kwargs()
        )
        log.close()
        try:
            wait_for_port(self.port, timeout=30)
            self._create_database()
        except Exception:
            self.stop()
            raise
        return self

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", autocommit=True
                ) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # still starting up ("the database system is starting up")

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit."""
        terminate(self.process, sig, timeout=20)
        self.process = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def local_url(port: int, database: str = "unilingo") -> str:
    """The DATABASE_URL of the cluster ``python -m devstack.postgres`` serves on ``port``."""
    user = SYSTEM_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def main() -> None:
    """``python -m devstack.postgres``: a local cluster under .run/postgres, in the foreground.

    POSTGRES_PORT (default 5442) and POSTGRES_DIR (default <UNILINGO_RUN_DIR>/postgres) choose
    where; the DATABASE_URL to use is printed (``local_url``). SIGINT or SIGTERM stops it cleanly.
    """
    from unilingo.settings import get_settings

    settings = get_settings()
    workdir, port = settings.postgres_folder(), settings.postgres_port
    serve_in_foreground(
        PostgresServer(workdir=workdir, port=port, fsync=True), "postgres listening: DATABASE_URL={server.url}"
    )


if __name__ == "__main__":
    main()
