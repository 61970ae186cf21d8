"""The platform's Redis Lua scripts: files under ``unilingo/lua/``, loaded in one way.

Each script is a ``.lua`` file in the folder of the module that owns it
(``unilingo/lua/jobs/claim.lua`` belongs to ``unilingo.jobs``); a shared library of Lua
functions (``lua/fairness.lua``) is prepended by the scripts that ``include`` it, and Python
constants a script needs (``constants``) are prepended as Lua ``local`` definitions, so that a
list such as the limiter's policy fields has one source.

``LuaScript.bind(client)`` is redis-py's own ``register_script``: ``Script`` on a synchronous
client, ``AsyncScript`` on an asyncio one, both EVALSHA first and loading the script again when
the server answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``), and both callable with
``client=<pipeline>``.

``PipelinedScripts(client)`` runs the scripts of concurrent asyncio tasks together: the calls
made in one turn of the event loop go to Redis in one redis-py pipeline (one connection
checkout, one write, one read for all of them), which is what keeps the API's submit path fast
(its quota and job record scripts, under load: ``make bench`` measures it).

Every key a script touches is declared in ``KEYS``; no script builds a key name from its
arguments or from what it reads, so each call names all the keys it may touch (what Redis
Cluster, and any proxy that routes by key, needs). Where the keys follow from data in Redis
(the due entries of a sorted set), the caller reads that data first and the script checks it
again before it acts on it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

_ROOT = "lua"


@cache
def _read(name: str) -> str:
    return resources.files("unilingo").joinpath(_ROOT, f"{name}.lua").read_text(encoding="utf-8")


def _lua_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if "'" in value or "\\" in value or "\n" in value:
            raise ValueError(f"a Lua constant must be a plain string, not {value!r}")
        return f"'{value}'"
    if isinstance(value, Iterable):
        return "{" + ", ".join(_lua_value(item) for item in value) + "}"
    raise TypeError(f"no Lua literal for {value!r}")


@dataclass(frozen=True)
class LuaScript:
    """One script's source: its file, after the libraries it includes and its constants."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()

    def bind(self, client: Any) -> Any:
        """The script on ``client`` (sync or asyncio redis-py client): ``script(keys=, args=)``."""
        return client.register_script(self.source)


def lua(name: str, *, include: Sequence[str] = (), constants: Mapping[str, Any] | None = None) -> LuaScript:
    """The script ``unilingo/lua/<name>.lua`` (``name`` like ``"jobs/claim"``)."""
    parts = [f"local {key} = {_lua_value(value)}\n" for key, value in (constants or {}).items()]
    parts.extend(_read(library) for library in include)
    parts.append(_read(name))
    return LuaScript(name, "".join(parts))


class PipelinedScripts:
    """Script calls of concurrent asyncio tasks, sent together in one redis-py pipeline.

    ``register_script(source)`` answers what redis-py's does (``await script(keys=, args=)``), so
    the stores take this in place of a client. A call joins the batch of the current turn of the
    event loop; the batch goes out at the end of the turn as one ``pipeline(transaction=False)``
    of ``EVALSHA``s. Each caller gets its own reply or its own error (``raise_on_error=False``);
    a failure of the whole pipeline (Redis unreachable, ``socket_timeout``) is every caller's. A
    script the server does not know (``NOSCRIPT``: a restart, ``SCRIPT FLUSH``) runs again
    through redis-py's ``AsyncScript``, which loads it. Retries and timeouts are the client's.
    """

    def __init__(self, client: Any):
        self.client = client
        self._batch: list[tuple[_PipelinedScript, tuple, tuple, asyncio.Future]] = []
        self._flushes: set[asyncio.Task] = set()

    def register_script(self, source: str | bytes) -> _PipelinedScript:
        return _PipelinedScript(self, source)

    def _call(self, script: _PipelinedScript, keys: tuple, args: tuple) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._batch.append((script, keys, args, future))
        if len(self._batch) == 1:
            loop.call_soon(self._send)
        return future

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._flushes.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._flushes.discard)

    async def _execute(self, batch: list[tuple[_PipelinedScript, tuple, tuple, asyncio.Future]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed or timed out: every call in it did
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled; the reply was still its own
                continue
            if isinstance(reply, NoScriptError):
                self._reload(script, keys, args, future)
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _reload(self, script: _PipelinedScript, keys: tuple, args: tuple, future: asyncio.Future) -> None:
        async def run() -> None:
            try:
                result = await script.loading(keys=keys, args=args)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

        task = asyncio.get_running_loop().create_task(run())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)


class _PipelinedScript:
    """One script on ``PipelinedScripts``: ``await script(keys=[...], args=[...])``."""

    def __init__(self, runner: PipelinedScripts, source: str | bytes):
        self.runner = runner
        self.sha = hashlib.sha1(source.encode() if isinstance(source, str) else source).hexdigest()
        self.loading = runner.client.register_script(source)  # redis-py's: loads it on NOSCRIPT

    def __call__(self, keys: Iterable[Any] | None = None, args: Iterable[Any] | None = None) -> asyncio.Future:
        return self.runner._call(self, tuple(keys or ()), tuple(args or ()))
