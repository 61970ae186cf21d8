"""``unilingo.scripts.PipelinedScripts``, the API's scripts of concurrent requests in one redis-py
pipeline per turn of the event loop, answers exactly as redis-py's own ``AsyncScript`` does."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions

from devstack.redis import RedisServer
from tests.support.api import auth
from unilingo.scripts import PipelinedScripts

ECHO = "return {ARGV[1], tonumber(ARGV[2]), {KEYS[1], redis.call('INCR', KEYS[1])}}"


def client_for(url: str, **kwargs) -> aioredis.Redis:
    """As the API makes its client: the pool from the URL (no retries)."""
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(url, **kwargs))


async def test_a_script_answers_as_on_redis_py(redis_url):
    client = client_for(redis_url)
    scripts = PipelinedScripts(client)
    try:
        for text in (
            ECHO,
            "return redis.call('GET', 'missing')",
            "return {1, false, 'x', {2.5, redis.status_reply('OK')}}",
        ):
            await client.delete("k")
            theirs = await client.register_script(text)(keys=["k"], args=["hello", 3])
            await client.delete("k")
            assert await scripts.register_script(text)(keys=["k"], args=["hello", 3]) == theirs
        bad = "return redis.call('INCR', KEYS[1])"
        await client.set("k:text", "not a number")
        with pytest.raises(redis.exceptions.ResponseError) as theirs_error:
            await client.register_script(bad)(keys=["k:text"])
        with pytest.raises(redis.exceptions.ResponseError) as ours_error:
            await scripts.register_script(bad)(keys=["k:text"])
        assert type(ours_error.value) is type(theirs_error.value) and str(ours_error.value) == str(theirs_error.value)
    finally:
        await client.aclose()


async def test_a_flushed_script_cache_is_loaded_again(redis_url):
    client = client_for(redis_url)
    script = PipelinedScripts(client).register_script(ECHO)
    assert (await script(keys=["k"], args=["a", 1]))[0] == b"a"
    redis.Redis.from_url(redis_url).script_flush()
    replies = await asyncio.gather(*(script(keys=["k"], args=[f"b{i}", i]) for i in range(5)))
    assert [r[:2] for r in replies] == [[f"b{i}".encode(), i] for i in range(5)]
    await client.aclose()


async def test_concurrent_callers_share_one_pipeline_and_each_get_their_own_reply(redis_url):
    admin = redis.Redis.from_url(redis_url)
    client = client_for(redis_url)
    script = PipelinedScripts(client).register_script(ECHO)
    await script(keys=["k:n"], args=["warm", 0])  # its connection is open
    admin.delete("k:n")
    connections = admin.info("stats")["total_connections_received"]
    replies = await asyncio.gather(*(script(keys=["k:n"], args=[f"caller-{i}", i]) for i in range(300)))
    assert [r[:2] for r in replies] == [[f"caller-{i}".encode(), i] for i in range(300)]
    assert sorted(r[2][1] for r in replies) == list(range(1, 301))  # each INCR ran once
    assert admin.info("stats")["total_connections_received"] == connections  # one pipeline, no new connection
    await client.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(redis_url):
    client = client_for(redis_url)
    script = PipelinedScripts(client).register_script(ECHO)
    await script(keys=["k"], args=["warm", 0])
    first = asyncio.ensure_future(script(keys=["k"], args=["first", 1]))
    second = asyncio.ensure_future(script(keys=["k"], args=["second", 2]))
    await asyncio.sleep(0)  # both in the batch
    first.cancel()
    assert (await second)[:2] == [b"second", 2]
    assert (await script(keys=["k"], args=["third", 3]))[:2] == [b"third", 3]
    await client.aclose()


async def test_an_unreachable_redis_is_a_connection_error():
    client = client_for("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    with pytest.raises(redis.exceptions.ConnectionError):
        await PipelinedScripts(client).register_script(ECHO)(keys=["k"], args=["a", 1])
    await client.aclose()


async def test_a_restarted_redis_is_reached_again(tmp_path):
    server = RedisServer(workdir=tmp_path / "redis", fsync="everysec").start()
    client = client_for(server.url)
    try:
        script = PipelinedScripts(client).register_script(ECHO)
        assert (await script(keys=["k"], args=["before", 1]))[0] == b"before"
        server.restart()  # its script cache is empty now
        for _ in range(50):  # the first command after the restart may find the old connection closed
            try:
                reply = await script(keys=["k"], args=["after", 2])
                break
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.05)
        assert reply[0] == b"after"
    finally:
        await client.aclose()
        server.stop()


async def test_a_silent_server_times_out_every_caller_of_the_batch():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])  # never answers
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    client = client_for(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", socket_timeout=0.2)
    script = PipelinedScripts(client).register_script(ECHO)
    try:
        calls = [asyncio.wait_for(script(keys=["k"], args=["a", i]), 5) for i in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results), results
        with pytest.raises(redis.exceptions.TimeoutError):  # and the next call tries again
            await asyncio.wait_for(script(keys=["k"], args=["b", 1]), 5)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
        await client.aclose()


async def test_a_submission_with_redis_down_is_503(api_factory):
    client = await api_factory(redis_url="redis://127.0.0.1:1/0")
    response = await client.post("/api/ai/generate-flashcards", json={"content": "x"}, headers=auth())
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
