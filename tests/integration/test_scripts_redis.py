"""Every Lua script compiles on a real Redis, and the loader's scripts survive a script flush."""

from __future__ import annotations

import redis

from tests.support.scripts import module_scripts
from unilingo.quota import ClientQuota


def test_every_script_compiles(redis_url):
    client = redis.Redis.from_url(redis_url)
    for name, script in sorted(module_scripts().items()):
        assert client.script_load(script.source) == script.sha, name
    client.close()


def test_a_flushed_script_cache_is_loaded_again(redis_url):
    client = redis.Redis.from_url(redis_url)
    quota = ClientQuota(client)
    assert quota.hit("ip", "203.0.113.9", "2/1m").allowed
    client.script_flush()  # what a Redis restart does to the cache
    assert quota.hit("ip", "203.0.113.9", "2/1m").remaining == 0
    client.close()
