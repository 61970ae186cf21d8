"""``api.redis_conn.ScriptChannel``, the submit path's scripts on one pipelined connection,
answers exactly as redis-py does."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions

from api.redis_conn import ScriptChannel
from devstack.redis import RedisServer
from tests.support.api import auth

ECHO = "return {ARGV[1], tonumber(ARGV[2]), {KEYS[1], redis.call('INCR', KEYS[1])}}"


def channel_for(url: str, **kwargs) -> ScriptChannel:
    pool = aioredis.ConnectionPool.from_url(url, **kwargs)
    return ScriptChannel.from_pool(pool)


# --- ScriptChannel -----------------------------------------------------------------------------


async def test_a_script_answers_as_on_redis_py(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    channel = channel_for(redis_url)
    try:
        for text in (
            ECHO,
            "return redis.call('GET', 'missing')",
            "return {1, false, 'x', {2.5, redis.status_reply('OK')}}",
        ):
            await client.delete("k")
            theirs = await client.register_script(text)(keys=["k"], args=["hello", 3])
            await client.delete("k")
            assert await channel.register_script(text)(keys=["k"], args=["hello", 3]) == theirs
        bad = "return redis.call('INCR', 'k:text')"
        await client.set("k:text", "not a number")
        with pytest.raises(redis.exceptions.ResponseError) as theirs_error:
            await client.register_script(bad)()
        with pytest.raises(redis.exceptions.ResponseError) as ours_error:
            await channel.register_script(bad)()
        assert type(ours_error.value) is type(theirs_error.value) and str(ours_error.value) == str(theirs_error.value)
        # floats go over the wire as redis-py sends them (repr)
        assert await channel.register_script("return ARGV[1]")(args=[0.1 + 0.2]) == repr(0.1 + 0.2).encode()
    finally:
        await channel.aclose()
        await client.aclose()


async def test_a_flushed_script_cache_is_loaded_again(redis_url):
    channel = channel_for(redis_url)
    script = channel.register_script(ECHO)
    assert (await script(keys=["k"], args=["a", 1]))[0] == b"a"
    redis.Redis.from_url(redis_url).script_flush()
    assert (await script(keys=["k"], args=["b", 2]))[:2] == [b"b", 2]
    await channel.aclose()


async def test_concurrent_callers_each_get_their_own_reply(redis_url):
    channel = channel_for(redis_url)
    script = channel.register_script(ECHO)
    replies = await asyncio.gather(*(script(keys=["k:n"], args=[f"caller-{i}", i]) for i in range(300)))
    assert [r[:2] for r in replies] == [[f"caller-{i}".encode(), i] for i in range(300)]
    assert sorted(r[2][1] for r in replies) == list(range(1, 301))  # each INCR ran once
    await channel.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(redis_url):
    channel = channel_for(redis_url)
    script = channel.register_script(ECHO)
    await script(keys=["k"], args=["warm", 0])
    first = asyncio.ensure_future(script(keys=["k"], args=["first", 1]))
    await asyncio.sleep(0)  # written, not answered yet
    first.cancel()
    assert (await script(keys=["k"], args=["second", 2]))[:2] == [b"second", 2]
    assert (await script(keys=["k"], args=["third", 3]))[:2] == [b"third", 3]
    await channel.aclose()


async def test_callers_racing_to_connect_share_one_connection(redis_url):
    admin = redis.Redis.from_url(redis_url)
    before = len(admin.client_list())
    channel = channel_for(redis_url)
    script = channel.register_script(ECHO)
    first = asyncio.ensure_future(script(keys=["k"], args=["cancelled", 0]))
    await asyncio.sleep(0)  # it started the connection attempt
    first.cancel()
    replies = await asyncio.gather(*(script(keys=["k"], args=[f"c{i}", i]) for i in range(50)))
    assert [r[:2] for r in replies] == [[f"c{i}".encode(), i] for i in range(50)]
    assert len(admin.client_list()) == before + 1
    await channel.aclose()


async def test_an_unreachable_redis_is_a_connection_error():
    channel = channel_for("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    with pytest.raises(redis.exceptions.ConnectionError):
        await channel.register_script(ECHO)(keys=["k"], args=["a", 1])


async def test_a_restarted_redis_is_reached_again(tmp_path):
    server = RedisServer(workdir=tmp_path / "redis", fsync="everysec").start()
    try:
        channel = channel_for(server.url)
        script = channel.register_script(ECHO)
        assert (await script(keys=["k"], args=["before", 1]))[0] == b"before"
        server.restart()
        for _ in range(50):  # the first command after the restart may find the old connection closing
            try:
                reply = await script(keys=["k"], args=["after", 2])
                break
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.05)
        assert reply[0] == b"after"
        await channel.aclose()
    finally:
        server.stop()


async def test_a_silent_server_times_out_and_the_next_command_tries_again():
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
    port = listener.getsockname()[1]
    channel = channel_for(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2)
    try:
        for _ in range(2):
            with pytest.raises(redis.exceptions.TimeoutError):
                await asyncio.wait_for(channel.register_script(ECHO)(keys=["k"], args=["a", 1]), 5)
        assert len(accepted) == 2  # the timed-out connection was dropped, a new one opened
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


async def test_auth_and_database_from_the_url(tmp_path):
    server = RedisServer(workdir=tmp_path / "redis", fsync="everysec").start()
    try:
        admin = redis.Redis(port=server.port)
        admin.config_set("requirepass", "s3cret")
        channel = channel_for(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        assert (await channel.register_script(ECHO)(keys=["k:auth"], args=["a", 1]))[2] == [b"k:auth", 1]
        checker = redis.Redis(port=server.port, password="s3cret", db=3)
        assert checker.get("k:auth") == b"1" and redis.Redis(port=server.port, password="s3cret").get("k:auth") is None
        with pytest.raises(redis.exceptions.ConnectionError):
            await channel_for(f"redis://:wrong@127.0.0.1:{server.port}/0").register_script(ECHO)(
                keys=["k"], args=["a", 1]
            )
        await channel.aclose()
    finally:
        server.stop()


def test_only_plain_tcp_urls_get_a_channel():
    assert ScriptChannel.from_pool(aioredis.ConnectionPool.from_url("redis://127.0.0.1:6379/0")) is not None
    assert ScriptChannel.from_pool(aioredis.ConnectionPool.from_url("rediss://127.0.0.1:6379/0")) is None
    assert ScriptChannel.from_pool(aioredis.ConnectionPool.from_url("unix:///tmp/redis.sock")) is None


async def test_a_submission_with_redis_down_is_503(api_factory):
    client = await api_factory(redis_url="redis://127.0.0.1:1/0")
    response = await client.post("/api/ai/generate-flashcards", json={"content": "x"}, headers=auth())
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
