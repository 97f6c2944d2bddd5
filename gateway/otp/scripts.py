"""The atomic Redis logic: Lua files under gateway/lua, loaded once.

Each script is `lib.lua`, then a `CFG` table of the deployment's settings,
then its own file, run by EVALSHA (`Script`) and loaded again after a Redis
restart (NOSCRIPT). Settings that never change while
a process runs (TTLs, limits, the channels that have a provider, key
prefixes) are baked into the script text instead of travelling as arguments
on every call: fewer arguments to encode, send and parse per request. Two
processes with different settings simply run two different scripts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from gateway import keys
from gateway.config import Config, Rate
from gateway.phones import LineType, channels_for


def script_source(name: str, settings: str = "") -> str:
    """`lib.lua`, the `settings` chunk, then `<name>.lua`."""
    lua = files("gateway") / "lua"
    return "\n".join([(lua / "lib.lua").read_text(), settings, (lua / f"{name}.lua").read_text()])


def _lua(value: object) -> str:
    """A Python int, str, bool, sequence or mapping as a Lua literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Iterable):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _rate(rate: Rate) -> tuple[int, int]:
    return rate.count, rate.period * 1000


def settings_chunk(config: Config, channels: Iterable[str]) -> str:
    """`local CFG = {...}`: what the scripts read instead of per-call arguments."""
    otp, limits = config.otp, config.rate_limits
    cfg: dict[str, object] = {
        "ttl_ms": otp.ttl_seconds * 1000,
        "cooldown_ms": otp.resend_cooldown_seconds * 1000,
        "tombstone_ms": otp.tombstone_seconds * 1000,
        "max_attempts": otp.max_attempts,
        "max_sends": otp.max_sends,
        "trusted_ms": otp.trusted_device_days * 86_400_000,
        "step_up_ms": otp.step_up_ttl_seconds * 1000,
        "account_limit": _rate(limits.account),
        "number_limit": _rate(limits.number),
        "country_limit": _rate(limits.country),
        "global_limit": _rate(limits.global_),
        "ip_limit": _rate(limits.ip),
        "failures_limit": _rate(limits.failures),
        # Channels some provider serves, and those each line type takes (preferred first).
        "channels": {channel: True for channel in sorted(channels)},
        "line_channels": {line.value: channels_for(line) for line in LineType},
        # Keys the scripts name from what they read (the account record from a
        # challenge's account id, the number bucket and country from a record).
        "account_prefix": keys.account(""),
        "number_rate_prefix": keys.number_rate(""),
        "number_rate_chars": keys.NUMBER_BUCKET_CHARS,
        "country_rate_prefix": keys.country_rate(""),
        "establishment_rate_prefix": keys.establishment_rate(""),
    }
    if limits.establishment is not None:  # absent: no establishment budget
        cfg["establishment_limit"] = _rate(limits.establishment)
    return f"local CFG = {_lua(cfg)}"


class Script:
    """One script, run by EVALSHA and loaded again when Redis answers NOSCRIPT
    (after a restart or a failover). redis-py's `register_script` does the
    same, plus a check on every call for a pipeline it may have to load the
    script into first: the hot-path scripts are never run in a pipeline."""

    def __init__(self, redis: aioredis.Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self._evalsha(keys, args)
        except NoScriptError:
            await self.redis.script_load(self.source)
            return await self._evalsha(keys, args)

    async def _evalsha(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        reply: Any = self.redis.evalsha(self.sha, len(keys), *keys, *args)
        return await reply


@dataclass(frozen=True, slots=True)
class Scripts:
    create: Script
    verify: Script
    resend: Script
    sent: Script
    drop: Script  # a job ended unsent: dropped or dead-lettered (gateway/otp/queue.py)
    job: Script
    status: Script  # delivery events (gateway/otp/delivery.py)
    retry: Script  # calling again (gateway/otp/delivery.py)

    @classmethod
    def load(cls, redis: aioredis.Redis, config: Config, channels: Iterable[str]) -> Scripts:
        settings = settings_chunk(config, channels)
        return cls(
            create=Script(redis, script_source("create", settings)),
            verify=Script(redis, script_source("verify", settings)),
            resend=Script(redis, script_source("resend", settings)),
            sent=Script(redis, script_source("sent", settings)),
            drop=Script(redis, script_source("drop", settings)),
            job=Script(redis, script_source("job", settings)),
            status=Script(redis, script_source("status", settings)),
            retry=Script(redis, script_source("retry", settings)),
        )
