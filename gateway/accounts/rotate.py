"""Rotate `[security] secret`: re-seal what it sealed, re-key what it tagged.

Every key derives from the one secret (`gateway.crypto.Keyring`, and the TOTP
key in `gateway.accounts.totp`): the sealed phone numbers and TOTP secrets must be
opened with the old secret and sealed again with the new one, and every Redis
key named after a keyed tag (establishments, an account's record, history,
trusted devices, failures, authenticator app, reminders, index entry and last
login) must be renamed. A new tag may fall in another hash-slot group: RENAME
moves it on a single instance or Sentinel primary; on a Redis Cluster, which
refuses a RENAME across slots, it is copied (DUMP, RESTORE with its TTL) then
deleted, which a run stopped halfway does again.

Run it with every gateway and worker stopped, then start them with the new
secret (see docs/accounts.md):

    OTPGW_OLD_SECRET='<old secret>' python -m gateway.rotate --config new.toml

Live state tied to the old keys is dropped, not migrated: pending challenges
(their codes are sealed and hashed under the old keys; the account records'
pointers at them then point at nothing), rate-limit counters (they start
afresh) and pending phone changes. Step-up
grants and trusted devices survive (their tokens are stored as plain digests).
A run that stopped halfway can be run again: what is done already is skipped.
It ends by recording the new secret's fingerprint (`gateway/keycheck.py`): until
then a gateway or worker started with the new secret refuses to start, and
after it one started with the old secret does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gateway import keys
from gateway.accounts.codec import names
from gateway.accounts.totp import totp_sealer
from gateway.config import load_config
from gateway.crypto import Keyring, Sealer
from gateway.datastore import redis_client
from gateway.keycheck import record_key


@dataclass
class Rotated:
    """What a rotation did."""

    accounts: int = 0
    numbers: int = 0
    totp: int = 0
    establishments: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class _Keys:
    keyring: Keyring
    totp: Sealer

    @classmethod
    def of(cls, secret: str) -> _Keys:
        return cls(Keyring.from_secret(secret), totp_sealer(secret))

    def account_tag(self, account_id: str) -> str:
        return self.keyring.tag("account", account_id)


async def rotate(redis: aioredis.Redis, old_secret: str, new_secret: str) -> Rotated:
    """Move every sealed value and tagged key from the old secret to the new one."""
    old, new = _Keys.of(old_secret), _Keys.of(new_secret)
    done = Rotated(dropped=await _drop_transient(redis))
    establishments: set[str] = set()
    account_ids: set[str] = set()
    for index in keys.ACCOUNT_INDEXES:  # read first: the run moves ids between them
        account_ids.update(names(list(await redis.smembers(index))))
    for account_id in sorted(account_ids):
        establishment = await _account(redis, account_id, old, new, done)
        if establishment is not None:
            establishments.add(establishment)
    for name in establishments:
        for key in (keys.establishment, keys.establishment_history):
            await _rename(
                redis,
                key(old.keyring.tag("establishment", name)),
                key(new.keyring.tag("establishment", name)),
            )
    done.establishments = len(establishments)
    await record_key(redis, new_secret)  # last: the data is the new secret's now
    return done


async def _drop_transient(redis: aioredis.Redis) -> int:
    dropped = 0
    for pattern in keys.TRANSIENT_PATTERNS:
        async for key in redis.scan_iter(match=pattern, count=1000):
            dropped += int(await redis.delete(key))
    return dropped


async def _account(
    redis: aioredis.Redis, account_id: str, old: _Keys, new: _Keys, done: Rotated
) -> str | None:
    before, after = old.account_tag(account_id), new.account_tag(account_id)
    if not await redis.exists(keys.account(before), keys.account(after)):
        # Indexed, so written with the record: neither secret names it (the
        # old secret is wrong). Raised like a seal neither key opens.
        raise InvalidTag()
    await _rename(redis, keys.account(before), keys.account(after))
    record: dict[Any, Any] = await redis.hgetall(keys.account(after))
    if not record:
        return None
    done.accounts += 1
    if b"phone" in record:
        e164 = _reopen(
            record[b"phone"], account_id.encode(), old.keyring.phones, new.keyring.phones
        )
        if e164 is not None:
            sealed = new.keyring.phones.seal(e164, account_id.encode())
            number_tag = new.keyring.tag("number", e164.decode())
            await redis.hset(
                keys.account(after), mapping={"phone": sealed, "number_tag": number_tag}
            )
            done.numbers += 1
    if await _totp(redis, account_id, before, old, new):
        done.totp += 1
    for key in (keys.history, keys.trusted_devices, keys.failures, keys.totp, keys.reminders):
        await _rename(redis, key(before), key(after))
    await _move_entries(redis, account_id, before, after)
    return str(record[b"establishment"].decode())


async def _move_entries(redis: aioredis.Redis, account_id: str, before: str, after: str) -> None:
    """The account's entry in its group's index and last-logins hash, to the new tag's."""
    if before == after:
        return
    await redis.sadd(keys.account_index(keys.group_of_tag(after)), account_id)
    await redis.srem(keys.account_index(keys.group_of_tag(before)), account_id)
    login: Any = await redis.hget(keys.logins_of(before), before)
    if login is not None:
        await redis.hset(keys.logins_of(after), after, login)
        await redis.hdel(keys.logins_of(before), before)


async def _totp(redis: aioredis.Redis, account_id: str, tag: str, old: _Keys, new: _Keys) -> bool:
    key = keys.totp(tag)
    aad = f"totp:{account_id}".encode()
    fields: dict[Any, Any] = await redis.hgetall(key)
    resealed: dict[Any, Any] = {}
    for name in (b"secret", b"pending"):
        if name in fields:
            secret = _reopen(fields[name], aad, old.totp, new.totp)
            if secret is not None:
                resealed[name] = new.totp.seal(secret, aad)
    if resealed:
        await redis.hset(key, mapping=resealed)
    return bool(resealed)


def _reopen(sealed: bytes, aad: bytes, old: Sealer, new: Sealer) -> bytes | None:
    """The plaintext under the old key; None when it is already under the new one."""
    try:
        return old.open(sealed, aad)
    except InvalidTag:
        new.open(sealed, aad)  # neither key: raises, the run stops (wrong old secret?)
        return None


async def _rename(redis: aioredis.Redis, source: str, target: str) -> None:
    if source == target or not await redis.exists(source):
        return
    if isinstance(redis, RedisCluster) and key_slot(source.encode()) != key_slot(target.encode()):
        await _copy_then_delete(redis, source, target)
    else:
        await redis.rename(source, target)  # keeps the TTL


async def _copy_then_delete(redis: aioredis.Redis, source: str, target: str) -> None:
    """A cluster's rename across slots (RENAME is refused there): DUMP, RESTORE
    with the TTL left (REPLACE: a run stopped between the two steps did the
    first already), then DEL. Run again, it does the same: the source is still
    the truth until it is gone."""
    dumped: Any = await redis.dump(source)
    ttl = int(await redis.pttl(source))
    if dumped is None or ttl == -2:  # gone meanwhile
        return
    await redis.restore(target, max(ttl, 0), dumped, replace=True)
    await redis.delete(source)


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.rotate --config FILE [--old-secret-env VAR]`."""
    parser = argparse.ArgumentParser(prog="python -m gateway.rotate", description=__doc__)
    parser.add_argument("--config", required=True, help="the configuration with the NEW secret")
    parser.add_argument("--old-secret-env", default="OTPGW_OLD_SECRET")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    old_secret = os.environ.get(args.old_secret_env, "")
    if config.redis.embedded or config.security_secret is None or not old_secret:
        print(
            "needs [redis] url (or sentinels), the new [security] secret and the old one in "
            f"${args.old_secret_env}",
            file=sys.stderr,
        )
        return 2

    async def run() -> Rotated:
        # The gateway's own client: Sentinel followed, nothing sent twice. A run
        # cut by a Redis blip stops with an error; running it again is safe
        # (what is already under the new key is left as it is).
        redis = redis_client(config)
        try:
            assert config.security_secret is not None
            return await rotate(redis, old_secret, config.security_secret.reveal())
        finally:
            await redis.aclose()

    print(asyncio.run(run()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
