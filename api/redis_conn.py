"""A redis.asyncio connection that packs commands with hiredis.

redis-py's asyncio connection packs every command in Python (about 1 µs per argument); the
job record script takes some 36 arguments, so on the submit path packing costs more than the
rest of the Redis client. ``hiredis.pack_command`` (C) produces the same bytes several times
faster. Floats are passed as ``repr`` (what redis-py sends); anything hiredis refuses, and
multi-word command names such as ``SCRIPT LOAD``, go through redis-py's own packer.
"""

from __future__ import annotations

import hiredis
import redis.asyncio as aioredis


class FastPackConnection(aioredis.Connection):
    def pack_command(self, *args):
        name = args[0]
        if isinstance(name, str) and " " in name:
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(tuple(repr(a) if type(a) is float else a for a in args))]
        except (TypeError, ValueError):
            return super().pack_command(*args)
