"""The Lua scripts as files: each one loaded by its module, none naming a key it was not given."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from tests.support.scripts import module_scripts
from unilingo.policy import LIMITER_FIELDS
from unilingo.scripts import lua

LUA_ROOT = resources.files("unilingo").joinpath("lua")
LIBRARIES = {"fairness", "limiter/prelude"}  # included by scripts, never run alone


def lua_files() -> set[str]:
    names = set()
    for entry in LUA_ROOT.iterdir():
        if entry.name.endswith(".lua"):
            names.add(entry.name[:-4])
        elif entry.is_dir():
            names.update(f"{entry.name}/{f.name[:-4]}" for f in entry.iterdir() if f.name.endswith(".lua"))
    return names


def test_every_lua_file_is_a_script_some_module_loads():
    assert set(module_scripts()) == lua_files() - LIBRARIES


# A key is the first argument of these commands; a script must take it from KEYS (or from a
# function parameter its caller filled from KEYS), never build it.
_CALL = re.compile(r"redis\.call\('(\w+)',\s*([^,)]+)")
_NO_KEY = {"TIME", "PUBLISH"}  # TIME takes none; a channel is not a key


@pytest.mark.parametrize("name", sorted(lua_files()))
def test_scripts_take_every_key_from_keys(name):
    source = LUA_ROOT.joinpath(f"{name}.lua").read_text()
    for command, first in _CALL.findall(source):
        if command in _NO_KEY:
            continue
        assert "ARGV" not in first and ".." not in first, f"{name}.lua: {command} on a built key name: {first}"


def test_constants_come_before_the_libraries_and_the_script():
    script = lua("limiter/acquire", include=("limiter/prelude",), constants={"POLICY_FIELDS": LIMITER_FIELDS})
    first_line = script.source.splitlines()[0]
    assert first_line == "local POLICY_FIELDS = {" + ", ".join(f"'{f}'" for f in LIMITER_FIELDS) + "}"
    assert script.source.index("local DEFAULTS_AT") < script.source.index("local function deny")


def test_a_constant_that_is_not_a_plain_literal_is_refused():
    with pytest.raises(ValueError):
        lua("quota/hit", constants={"X": "it's"})
