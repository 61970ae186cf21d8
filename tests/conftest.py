"""Shared fixtures: real services started per test session; each test marked with its tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.redis import RedisServer

TESTS = Path(__file__).resolve().parent
# A test's tier is the folder it lives in: ``-m integration`` selects exactly tests/integration.
TIER_MARKERS = ("integration", "controlplane", "e2e", "kube")


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            folder = item.path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if folder in TIER_MARKERS:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """A clean database for each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server():
    """Debian's PostgreSQL on a private port for the whole session (devstack.postgres)."""
    from devstack.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.stop()
    import shutil

    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """DSN of the session's PostgreSQL database (tests that need a clean one create their own)."""
    return postgres_server.url
