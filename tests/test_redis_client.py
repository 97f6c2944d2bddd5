"""The gateway's Redis client: hiredis packs its commands, byte for byte as
redis-py's own Python packer would."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from gateway.config import Config
from gateway.datastore import redis_client, with_hiredis_packing
from gateway.luascripts import Script
from tests.support.config import make_config

COMMANDS: list[tuple[object, ...]] = [
    ("SET", "k", "v"),
    ("EVALSHA", "a" * 40, 2, "otp:a:p-1", "otp:c:x", "login", b"\x00\xff" * 11, "", 0, -5),
    ("HSET", "k", "nom", "Eloïse Œuvre 🙂", "n", 1790000000000),
    ("CONFIG GET", "maxmemory"),  # a command name of two words
    (b"CLIENT SETNAME", b"gw"),
    ("ZADD", "k", 1.5, "m"),
    ("SET", "big", b"x" * 70_000),  # past redis-py's chunking cutoff
]


def test_packs_the_same_bytes_as_redis_py() -> None:
    python, hiredis = Connection(), with_hiredis_packing(Connection)()
    assert type(hiredis).__name__ == "HiredisConnection"
    for args in COMMANDS:
        assert b"".join(hiredis.pack_command(*args)) == b"".join(python.pack_command(*args))
    pipeline = COMMANDS[:3]
    assert b"".join(hiredis.pack_commands(pipeline)) == b"".join(python.pack_commands(pipeline))


def test_every_url_scheme_keeps_its_connection_kind() -> None:
    for url, kind in (
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///run/redis.sock", UnixDomainSocketConnection),
    ):
        client = redis_client(make_config(url))
        cls = client.connection_pool.connection_class
        assert issubclass(cls, kind) and cls is not kind, url


async def test_commands_and_scripts_round_trip(config: Config, redis: aioredis.Redis) -> None:
    client = redis_client(config)
    try:
        value = "Eloïse 🙂".encode() + b"\x00\xff"
        await client.set("otp:test:k", value)
        assert await client.get("otp:test:k") == value
        echo = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await echo(keys=["otp:test:k"], args=[b"\x00", 1790000000000]) == [
            b"otp:test:k",
            b"\x00",
            b"1790000000000",
        ]
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("otp:test:n").incr("otp:test:n")
            assert await pipe.execute() == [1, 2]
    finally:
        await client.aclose()


@pytest.mark.single_only(reason="SCRIPT EXISTS of one instance; a cluster's: test_cluster.py")
async def test_a_script_flushed_from_redis_is_loaded_again(
    config: Config, redis: aioredis.Redis
) -> None:
    """What a Redis restart or a failover does to the scripts: NOSCRIPT, then
    the script is loaded again and the call answered."""
    client = redis_client(config)
    try:
        script = Script(client, "return {KEYS[1], ARGV[1]}")
        assert await script(keys=["k"], args=["a"]) == [b"k", b"a"]
        await redis.script_flush()
        assert await redis.script_exists(script.sha) == [False]
        assert await script(keys=["k"], args=["b"]) == [b"k", b"b"]
        assert await redis.script_exists(script.sha) == [True]
    finally:
        await client.aclose()
