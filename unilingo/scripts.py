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

Every key a script touches is declared in ``KEYS``; no script builds a key name from its
arguments or from what it reads, so each call names all the keys it may touch (what Redis
Cluster, and any proxy that routes by key, needs). Where the keys follow from data in Redis
(the due entries of a sorted set), the caller reads that data first and the script checks it
again before it acts on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

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
