"""A secret other than the one the data was written with is refused at start
(gateway/keycheck.py); `gateway.rotate` moves the recorded fingerprint along."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.accounts.rotate import rotate
from gateway.crypto import Keyring, key_fingerprint
from gateway.embedded import RedisServer, free_port
from gateway.keycheck import ROUND1_KEYS, KeyMismatch, LayoutOutdated, check_key
from tests.support.config import SECRET
from tests.support.ops import write_config
from tests.support.procs import procs
from tests.support.queues import record, tag

OTHER = "another-secret-0123456789-abcdefghijklmno"


async def fingerprint(redis: aioredis.Redis) -> bytes | None:
    recorded: bytes | None = await redis.get(keys.KEY_FINGERPRINT)
    return recorded


async def test_the_first_start_records_its_key_and_the_same_key_starts_again(
    redis: aioredis.Redis,
) -> None:
    await check_key(redis, SECRET)
    assert await fingerprint(redis) == key_fingerprint(SECRET).encode()
    await check_key(redis, SECRET)


async def test_another_key_is_refused_with_how_to_rotate(redis: aioredis.Redis) -> None:
    await check_key(redis, SECRET)
    with pytest.raises(KeyMismatch) as refused:
        await check_key(redis, OTHER)
    message = str(refused.value)
    assert message.startswith("configuration error: security.secret: ")
    assert "python -m gateway.rotate" in message and "\n" not in message
    assert SECRET not in message and OTHER not in message
    assert await fingerprint(redis) == key_fingerprint(SECRET).encode()


async def test_processes_starting_together_agree_on_one_key(redis: aioredis.Redis) -> None:
    for _ in range(10):
        await redis.delete(keys.KEY_FINGERPRINT)
        results = await asyncio.gather(
            check_key(redis, SECRET), check_key(redis, OTHER), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["KeyMismatch", "NoneType"]
        winner = SECRET if results[0] is None else OTHER
        assert await fingerprint(redis) == key_fingerprint(winner).encode()


def test_the_fingerprint_is_a_keyed_hash_not_the_secret_or_its_plain_hash() -> None:
    recorded = key_fingerprint(SECRET)
    assert recorded == key_fingerprint(SECRET) != key_fingerprint(OTHER)
    digest = hashlib.sha256(SECRET.encode()).digest()
    plain = {digest.hex(), base64.urlsafe_b64encode(digest).decode().rstrip("=")}
    assert SECRET not in recorded and not any(p.startswith(recorded) for p in plain)


async def test_data_from_before_fingerprints_is_checked_on_a_sealed_number(
    redis: aioredis.Redis,
) -> None:
    sealed = Keyring.from_secret(SECRET).phones.seal(b"+33612345678", b"alice")
    await redis.sadd(keys.account_index(keys.group_of_tag(tag("alice"))), "alice")
    await redis.hset(record("alice"), mapping={"phone": sealed})
    with pytest.raises(KeyMismatch):
        await check_key(redis, OTHER)
    assert await fingerprint(redis) is None
    await check_key(redis, SECRET)
    assert await fingerprint(redis) == key_fingerprint(SECRET).encode()


async def test_rotation_moves_the_fingerprint_to_the_new_key(redis: aioredis.Redis) -> None:
    await check_key(redis, SECRET)
    await rotate(redis, SECRET, OTHER)
    await check_key(redis, OTHER)
    with pytest.raises(KeyMismatch):
        await check_key(redis, SECRET)


async def test_an_empty_redis_is_marked_with_the_new_layout(redis: aioredis.Redis) -> None:
    await check_key(redis, SECRET)
    assert await redis.get(keys.LAYOUT) == keys.LAYOUT_VERSION.encode()


@pytest.mark.parametrize("old_key", ROUND1_KEYS)
async def test_round_one_data_without_the_marker_is_refused(
    redis: aioredis.Redis, old_key: str
) -> None:
    await redis.set(old_key, "x")
    with pytest.raises(LayoutOutdated) as refused:
        await check_key(redis, SECRET)
    assert "otp-gateway migrate" in str(refused.value)
    assert await redis.get(keys.LAYOUT) is None
    assert await fingerprint(redis) is None


# --- the processes ------------------------------------------------------------------


def config_with(path: Path, redis_url: str, secret: str) -> Path:
    return write_config(
        path, redis_url, [], security={"secret": secret}, worker={"metrics_port": 0}
    )


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_a_process_with_another_secret_refuses_to_start_in_one_line(
    command: str, tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    await check_key(redis, SECRET)  # the data's secret
    config = config_with(tmp_path / "other.toml", redis_server.url, OTHER)
    with procs(tmp_path) as start:
        child = start(command, "--config", str(config), port=free_port())
        assert await asyncio.to_thread(child.exit_code) == 2, child.output()
        output = child.output()
    assert "Traceback" not in output
    refusals = [line for line in output.splitlines() if line.startswith("configuration error")]
    assert refusals == [str(KeyMismatch())]


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_a_process_on_round_one_data_refuses_to_start_naming_migrate(
    command: str, tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    await redis.sadd(keys.PREFIX + "accounts", "alice")  # the round-1 account index
    config = config_with(tmp_path / "gw.toml", redis_server.url, SECRET)
    with procs(tmp_path) as start:
        child = start(command, "--config", str(config), port=free_port())
        assert await asyncio.to_thread(child.exit_code) == 2, child.output()
        output = child.output()
    refusals = [line for line in output.splitlines() if line.startswith("configuration error")]
    assert refusals == [str(LayoutOutdated())]


async def test_after_a_rotation_the_new_secret_starts(
    tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    await check_key(redis, SECRET)
    config = config_with(tmp_path / "new.toml", redis_server.url, OTHER)
    rotated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.rotate", "--config", str(config)],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "OTPGW_OLD_SECRET": SECRET},
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    with procs(tmp_path) as start:
        gateway = start("serve", "--config", str(config), port=free_port())
        await asyncio.to_thread(gateway.wait_for, "listening on")
    assert await fingerprint(redis) == key_fingerprint(OTHER).encode()
