"""The atomic Redis logic: every Lua script is a file under gateway/lua, loaded here.

A script runs as one chunk: `local CFG = {...}` (the deployment's settings),
then `lua/lib.lua` (the helpers every script shares, which may read `CFG`),
then its own file. Settings that never change while a process runs (TTLs,
limits, retry delays, the channels that have a provider, key prefixes) are
baked into the chunk instead of travelling as arguments on every call: fewer
arguments to encode, send and parse per request. Two processes with different
settings simply run two different scripts.

Both wings load their scripts through one `Lua` per process, so every script
sees the same `CFG`; each `Script` runs by EVALSHA and is loaded again when
Redis answers NOSCRIPT (after a restart or a failover); on a Redis Cluster, on
the node that answered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError

from gateway import keys
from gateway.config import Config, Rate
from gateway.phones import LineType, channels_for

LIB: Final = "lib"
NO_SETTINGS: Final = "local CFG = {}"


def _read(name: str) -> str:
    return (files("gateway") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def script_names() -> list[str]:
    """Every script under gateway/lua (`lib.lua` is part of each, not one itself)."""
    found = (entry.name for entry in (files("gateway") / "lua").iterdir())
    return sorted(name[:-4] for name in found if name.endswith(".lua") and name != f"{LIB}.lua")


def script_source(name: str, settings: str = NO_SETTINGS) -> str:
    """The `settings` chunk (`local CFG = ...`), `lib.lua`, then `<name>.lua`."""
    return "\n".join([settings, _read(LIB), _read(name)])


def lua_literal(value: object) -> str:
    """A Python int, str, bool, sequence or mapping as a Lua literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return (
            "{"
            + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, Iterable):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _rate(rate: Rate) -> tuple[int, int]:
    return rate.count, rate.period * 1000


def settings_chunk(config: Config, channels: Iterable[str]) -> str:
    """`local CFG = {...}`: what the scripts read instead of per-call arguments."""
    otp, limits, voice = config.otp, config.rate_limits, config.voice
    channels = frozenset(channels)
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
        # Calling again (status.lua, retry.lua), and an undelivered SMS becoming
        # a call, which needs a provider that calls.
        "retry_delay_ms": int(voice.retry_delay_seconds * 1000),
        "busy_retry_delay_ms": int(voice.busy_retry_delay_seconds * 1000),
        "answer_window_ms": int(voice.answer_window_seconds * 1000),
        "max_calls": voice.max_calls,
        "sms_fallback": config.sms.fallback_to_voice and "voice" in channels,
        # Channels some provider serves, and those each line type takes (preferred first).
        "channels": {channel: True for channel in sorted(channels)},
        "line_channels": {line.value: channels_for(line) for line in LineType},
        # Keys create.lua names from the account record it reads (the number
        # bucket, the country, the establishment): all under the `{rl}` tag.
        "number_rate_prefix": keys.number_rate(""),
        "number_rate_chars": keys.NUMBER_BUCKET_CHARS,
        "country_rate_prefix": keys.country_rate(""),
        "establishment_rate_prefix": keys.establishment_rate(""),
    }
    if limits.establishment is not None:  # absent: no establishment budget
        cfg["establishment_limit"] = _rate(limits.establishment)
    return f"local CFG = {lua_literal(cfg)}"


# NOSCRIPT answers a call gets before it gives up: one per node that may serve
# its keys while their slot moves (the old owner, the new one reached by ASK).
LOADS: Final = 2


class Script:
    """One script, run by EVALSHA and loaded again when Redis answers NOSCRIPT
    (after a restart or a failover). redis-py's own script objects do the
    same, plus a check on every call for a pipeline they may have to load the
    script into first: no script here is ever run in a pipeline."""

    def __init__(self, redis: aioredis.Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        for loads in range(LOADS + 1):
            try:
                return await self._evalsha(keys, args)
            except NoScriptError as exc:
                if loads == LOADS:
                    raise
                await self._load(keys, getattr(exc, "connection", None))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _load(self, keys: Sequence[Any], answered: Any) -> None:
        """SCRIPT LOAD where the NOSCRIPT came from: on a cluster, the node that
        answered it (redis-py names it on the error), else the one that serves the
        first key, not every primary, so that a node down elsewhere does not fail
        this one's scripts. While a slot moves, EVALSHA may reach the slot's new
        node by ASK: the script is loaded there, and the next NOSCRIPT (a move
        ending meanwhile) loads it on the node after."""
        if isinstance(self.redis, RedisCluster) and keys:
            node = answered if isinstance(answered, ClusterNode) else None
            node = node or self.redis.get_node_from_key(keys[0])
            await self.redis.execute_command("SCRIPT LOAD", self.source, target_nodes=node)
        else:
            await self.redis.script_load(self.source)

    async def _evalsha(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        reply: Any = self.redis.evalsha(self.sha, len(keys), *keys, *args)
        return await reply


class Lua:
    """The one loader: every script of a process, over one Redis client, with
    one `CFG`. Without settings (`NO_SETTINGS`) only scripts that read none run."""

    def __init__(self, redis: aioredis.Redis, settings: str = NO_SETTINGS) -> None:
        self.redis = redis
        self.settings = settings
        self._loaded: set[str] = set()

    @classmethod
    def for_config(cls, redis: aioredis.Redis, config: Config, channels: Iterable[str]) -> Lua:
        return cls(redis, settings_chunk(config, channels))

    def script(self, name: str) -> Script:
        """`lua/<name>.lua`, ready to run."""
        self._loaded.add(name)
        return Script(self.redis, script_source(name, self.settings))

    @property
    def split(self) -> bool:
        """On a Redis Cluster: the operations whose one-step script would span
        two slots run as several single-slot scripts (docs/architecture.md,
        "Hash slots"); on one instance, as one atomic script."""
        return isinstance(self.redis, RedisCluster)

    @property
    def loaded(self) -> frozenset[str]:
        """The names of the scripts handed out so far."""
        return frozenset(self._loaded)
