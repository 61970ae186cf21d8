"""Lean Redis paths for the API's hot commands.

``FastPackConnection``: a redis.asyncio connection that packs commands with hiredis.
redis-py's asyncio connection packs every command in Python (about 1 µs per argument); the
job record script takes some 36 arguments, so on the submit path packing costs more than the
rest of the Redis client. ``hiredis.pack_command`` (C) produces the same bytes several times
faster. Floats are passed as ``repr`` (what redis-py sends); anything hiredis refuses, and
multi-word command names such as ``SCRIPT LOAD``, go through redis-py's own packer.

``ScriptChannel``: the Lua scripts of every request (the client quota, the job record) on one
pipelined connection per process. redis-py's asyncio client costs some 250 µs of CPU per
command even with hiredis: a pool checkout under a lock, a socket poll before each command,
a task per write (``asyncio.wait_for``), a timeout scope per read, and its observability
hooks. Here a command is packed, written and matched to its reply in FIFO order by a
``hiredis.Reader`` fed from an ``asyncio.Protocol``: some 20 µs. Commands of concurrent
requests share the connection (Redis answers a connection's commands in order); those sent
in one turn of the event loop go out in one write, which Redis reads in one system call.

What it keeps from redis-py: the errors (``redis.exceptions.ConnectionError`` when Redis
cannot be reached or the connection drops, ``TimeoutError`` after ``socket_timeout``, and
the ``ResponseError`` family, ``NoScriptError`` included, parsed the way redis-py parses
them), the script interface (``register_script(text)(keys=..., args=...)``, loading the
script again when the server answers ``NOSCRIPT``), no retries (redis-py's asyncio default),
and the connection's ``AUTH`` and ``SELECT``. It serves plain TCP URLs only; TLS, Unix
sockets and Sentinel keep redis-py (``ScriptChannel.from_pool`` answers None).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
from collections import deque
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.connection import Encoder
from redis.exceptions import ConnectionError, InvalidResponse, NoScriptError, TimeoutError


class FastPackConnection(aioredis.Connection):
    def pack_command(self, *args):
        name = args[0]
        if isinstance(name, str) and " " in name:
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(tuple(repr(a) if type(a) is float else a for a in args))]
        except (TypeError, ValueError):
            return super().pack_command(*args)


_ENCODER = Encoder("utf-8", "strict", False)


def pack(args: tuple) -> bytes:
    """RESP bytes of one command, as redis-py would send them (floats as ``repr``)."""
    try:
        return hiredis.pack_command(tuple(repr(a) if type(a) is float else a for a in args))
    except (TypeError, ValueError):
        # redis-py's encoder: the same bytes, or its DataError for what it refuses (None, bool)
        return hiredis.pack_command(tuple(_ENCODER.encode(a) for a in args))


class _Protocol(asyncio.Protocol):
    """One connection: commands written in order, replies matched to them in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str, timeout: float | None):
        self.loop = loop
        self.address = address
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self.waiting: deque[tuple[asyncio.Future, float]] = deque()  # (reply future, deadline)
        self.closed = False
        self.outgoing: list[bytes] = []  # packed commands not written yet
        self._watch: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a protocol error: nothing after it can be trusted
                self.abort(ConnectionError(f"Protocol error from {self.address}: {exc}"))
                return
            if reply is False:
                return
            if not waiting:
                self.abort(ConnectionError(f"Unexpected reply from {self.address}"))
                return
            future = waiting.popleft()[0]
            if not future.done():  # its caller may have been cancelled; the reply is still its own
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self._fail_all(ConnectionError(f"Connection to {self.address} lost{detail}"))

    # --- commands ---------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future:
        future = self.loop.create_future()
        deadline = self.loop.time() + self.timeout if self.timeout else 0.0
        self.waiting.append((future, deadline))
        # Written at the end of this turn of the event loop, with whatever else the requests it
        # runs send by then: one system call (and one wake-up of Redis) for all of them.
        self.outgoing.append(packed)
        if len(self.outgoing) == 1:
            self.loop.call_soon(self._flush)
        if self._watch is None and self.timeout:
            self._watch = self.loop.call_at(deadline, self._check_timeout)
        return future

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if not self.closed:
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _check_timeout(self) -> None:
        """One timer for the oldest command awaiting its reply (a later one cannot be answered first)."""
        self._watch = None
        if not self.waiting or self.closed:
            return
        future, deadline = self.waiting[0]
        if self.loop.time() >= deadline:
            if not future.done():
                future.set_exception(TimeoutError(f"Timeout reading from {self.address}"))
            self.abort(ConnectionError(f"Connection to {self.address} closed after a timeout"))
        else:
            self._watch = self.loop.call_at(deadline, self._check_timeout)

    def abort(self, error: Exception) -> None:
        self._fail_all(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, error: Exception) -> None:
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)


class ScriptChannel:
    """Lua scripts (and any other command) on one pipelined connection, per event loop.

    ``register_script`` returns what redis-py's does (``await script(keys=..., args=...)``),
    so ``unilingo.quota`` and ``unilingo.jobs`` take this in place of a redis client.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        socket_connect_timeout: float | None = None,
        socket_timeout: float | None = None,
    ):
        self.host, self.port, self.db = host, int(port), int(db or 0)
        self.username, self.password = username, password
        self.connect_timeout = socket_connect_timeout
        self.timeout = socket_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task | None = None

    @classmethod
    def from_pool(cls, pool: aioredis.ConnectionPool) -> ScriptChannel | None:
        """The channel for a redis-py pool's server, or None if it is not plain TCP."""
        if not issubclass(pool.connection_class, aioredis.Connection) or issubclass(
            pool.connection_class, aioredis.SSLConnection
        ):
            return None
        kw = pool.connection_kwargs
        return cls(
            host=kw.get("host", "localhost"),
            port=kw.get("port", 6379),
            db=kw.get("db", 0),
            username=kw.get("username"),
            password=kw.get("password"),
            socket_connect_timeout=kw.get("socket_connect_timeout"),
            socket_timeout=kw.get("socket_timeout"),
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def execute_command(self, *args: Any) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.send(pack(args))

    def register_script(self, script: str | bytes) -> ChannelScript:
        return ChannelScript(self, script)

    async def _connect(self) -> _Protocol:
        # One connection attempt at a time, in a task of its own: a caller that is cancelled
        # while waiting (its client went away) does not cancel it for the others.
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.get_running_loop().create_task(self._open_and_keep())
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _open_and_keep(self) -> _Protocol:
        try:
            self._protocol = await self._open(asyncio.get_running_loop())
            return self._protocol
        finally:
            self._connecting = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(loop, self.address, self.timeout), self.host, self.port),
                self.connect_timeout,
            )
        except builtins.TimeoutError:
            raise TimeoutError(f"Timeout connecting to {self.address}") from None
        except OSError as exc:
            raise ConnectionError(f"Error {exc.errno} connecting to {self.address}. {exc.strerror or exc}.") from None
        setup = []
        if self.password is not None or self.username is not None:
            auth = ("AUTH", self.username, self.password or "") if self.username else ("AUTH", self.password)
            setup.append(protocol.send(pack(auth)))
        if self.db:
            setup.append(protocol.send(pack(("SELECT", self.db))))
        try:
            for reply in setup:
                await reply
        except BaseException:
            protocol.abort(ConnectionError(f"Connection to {self.address} could not be set up"))
            raise
        return protocol

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None and not protocol.closed:
            protocol.closed = True
            protocol.transport.close()


def _retrieve(task: asyncio.Task) -> None:
    """Mark a failed connection attempt's error as seen (its callers got it, if any waited)."""
    if not task.cancelled():
        task.exception()


class ChannelScript:
    """redis-py's ``AsyncScript`` on a ``ScriptChannel``."""

    def __init__(self, channel: ScriptChannel, script: str | bytes):
        self.channel = channel
        self.script = script
        self.sha = hashlib.sha1(script.encode() if isinstance(script, str) else script).hexdigest()

    async def __call__(self, keys=None, args=None, client=None):
        keys = tuple(keys or ())
        args = tuple(args or ())
        channel = client or self.channel
        try:
            return await channel.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # The server lost its script cache (a restart, SCRIPT FLUSH): load it again.
            sha = await channel.execute_command("SCRIPT", "LOAD", self.script)
            self.sha = sha.decode() if isinstance(sha, bytes) else sha
            return await channel.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
