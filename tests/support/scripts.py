"""The Lua scripts the shared package's modules load (``unilingo.scripts``)."""

from __future__ import annotations

from unilingo import jobs, limiter, metrics, policy, quota, webhooks
from unilingo.scripts import LuaScript


def module_scripts() -> dict[str, LuaScript]:
    """Every module-level ``LuaScript`` of the modules that own scripts, by name."""
    found = {}
    for module in (jobs, limiter, metrics, policy, quota, webhooks):
        for value in vars(module).values():
            if isinstance(value, LuaScript):
                found[value.name] = value
    return found
