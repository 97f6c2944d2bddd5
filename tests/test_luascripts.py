"""Every Lua script is a file under gateway/lua, loaded by the one loader."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from gateway import runtime
from gateway.config import Config
from gateway.luascripts import script_names, script_source, settings_chunk
from gateway.metrics import Metrics

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def test_every_lua_file_is_a_script() -> None:
    files = {p.stem for p in (GATEWAY / "lua").glob("*.lua")} - {"lib"}
    assert set(script_names()) == files
    assert {"create", "verify", "account_apply", "totp", "release"} <= files


async def test_every_script_compiles_on_redis(config: Config, redis: aioredis.Redis) -> None:
    """SCRIPT LOAD compiles each whole chunk (CFG, lib.lua, the script) on a real Redis."""
    settings = settings_chunk(config, {"sms", "voice"})
    for name in script_names():
        source = script_source(name, settings)
        assert await redis.script_load(source), name


async def test_the_runtime_loads_every_script_through_one_loader(
    config: Config, redis: aioredis.Redis
) -> None:
    services = runtime.build(config, redis, [], Metrics())
    assert services.lua.loaded == set(script_names())


def test_no_python_module_holds_lua_source() -> None:
    """Lua in a Python string escapes the loader, its CFG and this file's checks."""
    holders = [
        str(path.relative_to(GATEWAY))
        for path in GATEWAY.rglob("*.py")
        if any(s in path.read_text(encoding="utf-8") for s in ("redis.call(", "register_script"))
    ]
    assert holders == []
