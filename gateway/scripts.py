"""The atomic Redis logic: Lua files under gateway/lua, loaded once.

Each script is `lib.lua` followed by its own file, registered with redis-py,
which runs it by EVALSHA and reloads it after a Redis restart (NOSCRIPT).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript


def script_source(name: str) -> str:
    """`lib.lua` followed by `<name>.lua`."""
    lua = files("gateway") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Scripts:
    create: AsyncScript
    verify: AsyncScript
    resend: AsyncScript
    sent: AsyncScript

    @classmethod
    def load(cls, redis: aioredis.Redis) -> Scripts:
        return cls(
            create=redis.register_script(script_source("create")),
            verify=redis.register_script(script_source("verify")),
            resend=redis.register_script(script_source("resend")),
            sent=redis.register_script(script_source("sent")),
        )
