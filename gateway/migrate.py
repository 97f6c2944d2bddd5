"""`otp-gateway migrate`: move a round-1 dataset to the hash-slot key layout.

Round 1 named keys without hash tags (`otp:a:<account id>`, one `otp:sends`
stream...). This version puts every key a script touches in one hash slot
(gateway/keys.py): the account's keys under its group's tag, records and
histories keyed by the account tag, the queue split over 16 streams. Run it
with every gateway and worker stopped, on the single instance or Sentinel
primary that holds the data (round 1 never ran on a cluster); they refuse to
start on round-1 data until it has run (gateway/keycheck.py).

Each key moves in one atomic step (RENAME keeps a key's TTL; a queue entry,
schedule member or dead letter moves with its removal in one MULTI), so a
run stopped halfway can simply be run again: what moved is not found under
its old name any more. The mail outbox and its dead letters move under
their shared hash tag. Rate-limit states are dropped (they start afresh: at
most one period of each limit is forgiven). It ends by writing the
`otp:layout` marker, then prints what it moved.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis

from gateway import keys
from gateway.config import Config
from gateway.crypto import Keyring, constant_time_equal, key_fingerprint
from gateway.datastore import redis_client
from gateway.errors import ConfigError
from gateway.keycheck import KeyMismatch

P = keys.PREFIX
Moved = Counter[str]
# Families keyed by a tag or an id they keep: old `otp:<kind>:<rest>` -> new name.
_BY_TAG: tuple[tuple[str, Callable[[str], str], str], ...] = (
    ("c", keys.challenge, "challenges"),
    ("pc", keys.phone_change, "pending phone changes"),
    ("f", keys.failures, "failure counters"),
    ("td", keys.trusted_devices, "trusted-device sets"),
    ("totp", keys.totp, "authenticator apps"),
    ("rem", keys.reminders, "reminder records"),
    ("su", keys.step_up, "step-up grants"),
    ("e", keys.establishment, "establishment sets"),
    ("eh", keys.establishment_history, "establishment histories"),
)


async def migrate(redis: aioredis.Redis, secret: str) -> Moved:
    """Move everything of the round-1 layout; returns how many of each were moved."""
    moved: Moved = Counter()
    await _check_secret(redis, secret)
    tag = _tagger(Keyring.from_secret(secret))
    await _rename_family(redis, "a", lambda rest: keys.account(tag(rest)), moved, "accounts")
    await _rename_family(redis, "h", lambda rest: keys.history(tag(rest)), moved, "histories")
    for kind, name, label in _BY_TAG:
        await _rename_family(redis, kind, name, moved, label)
    await _index(redis, tag, moved)
    await _logins(redis, moved)
    await _queue(redis, moved)
    await _retries(redis, moved)
    await _dead_letters(redis, moved)
    await _drop_rate_limits(redis, moved)
    await _mail(redis, moved)
    await redis.set(keys.LAYOUT, keys.LAYOUT_VERSION)
    return moved


async def _check_secret(redis: aioredis.Redis, secret: str) -> None:
    """Tags name the new keys: under another secret they would name nothing."""
    recorded: Any = await redis.get(keys.KEY_FINGERPRINT)
    if recorded is not None and not constant_time_equal(recorded, key_fingerprint(secret)):
        raise KeyMismatch()


def _tagger(keyring: Keyring) -> Callable[[str], str]:
    def tag(account_id: str) -> str:
        return keyring.tag("account", account_id)

    return tag


def _old(name: bytes, kind: str) -> str | None:
    """The part after `otp:<kind>:` of a round-1 name, None for a new-layout one."""
    text = name.decode()
    rest = text[len(f"{P}{kind}:") :]
    return None if rest.startswith("{") or not rest else rest


async def _scan(redis: aioredis.Redis, kind: str) -> AsyncIterator[tuple[str, str]]:
    """(old name, rest) of each round-1 key of a family."""
    found = [name async for name in redis.scan_iter(match=f"{P}{kind}:*", count=1000)]
    for name in found:
        rest = _old(name, kind)
        if rest is not None:
            yield name.decode(), rest


async def _rename_family(
    redis: aioredis.Redis, kind: str, new_name: Callable[[str], str], moved: Moved, label: str
) -> None:
    async for old, rest in _scan(redis, kind):
        if ":" in rest:  # another family's prefix (`otp:c:` never holds a colon)
            continue
        await redis.rename(old, new_name(rest))  # keeps the TTL
        moved[label] += 1


async def _index(redis: aioredis.Redis, tag: Callable[[str], str], moved: Moved) -> None:
    old = P + "accounts"
    members: Any = await redis.smembers(old)
    for member in members:
        account_id = member.decode()
        target = keys.account_index(keys.group_of_tag(tag(account_id)))
        await _atomic(redis, ("sadd", target, account_id), ("srem", old, account_id))
        moved["index entries"] += 1


async def _logins(redis: aioredis.Redis, moved: Moved) -> None:
    old = P + "logins"
    entries: Any = await redis.hgetall(old)
    for field, value in entries.items():
        tag = field.decode()
        await _atomic(redis, ("hset", keys.logins_of(tag), tag, value), ("hdel", old, tag))
        moved["last logins"] += 1


async def _queue(redis: aioredis.Redis, moved: Moved) -> None:
    """Every entry of `otp:sends`, pending ones included (entries are deleted
    once acknowledged), into its challenge's group stream."""
    old = P + "sends"
    rows: Any = await redis.xrange(old)
    for entry_id, fields in rows:
        challenge_id = fields.get(b"c", b"").decode(errors="replace")
        target = keys.stream_of(challenge_id)
        await _atomic(redis, ("xadd", target, fields), ("xdel", old, entry_id))
        moved["queued sends"] += 1
    await redis.delete(old)  # empty now: its consumer group goes with it


async def _retries(redis: aioredis.Redis, moved: Moved) -> None:
    old = P + "retries"
    scheduled: Any = await redis.zrange(old, 0, -1, withscores=True)
    for member, due in scheduled:
        challenge_id = member.decode()
        schedule = keys.retries_of(challenge_id)
        await _atomic(redis, ("zadd", schedule, {challenge_id: due}), ("zrem", old, challenge_id))
        moved["calls scheduled"] += 1


async def _dead_letters(redis: aioredis.Redis, moved: Moved) -> None:
    """Into the group of their challenge, with ids unique across the groups
    (drop.lua's rule: the sequence number is the group modulo 16)."""
    old = P + "dead"
    last: dict[int, tuple[int, int]] = {}
    rows: Any = await redis.xrange(old)
    for entry_id, fields in rows:
        group = keys.group_of_challenge(fields.get(b"c", b"").decode(errors="replace"))
        new_id = await _dead_letter_id(redis, group, int(entry_id.split(b"-")[0]), last)
        target = keys.dead_letters(group)
        await _atomic(redis, ("xadd", target, fields, new_id), ("xdel", old, entry_id))
        moved["dead letters"] += 1
    await redis.delete(old)


async def _dead_letter_id(
    redis: aioredis.Redis, group: int, ms: int, last: dict[int, tuple[int, int]]
) -> str:
    if group not in last:
        last[group] = (0, 0)
        if await redis.exists(keys.dead_letters(group)):
            info: Any = await redis.xinfo_stream(keys.dead_letters(group))
            top_ms, top_seq = info["last-generated-id"].split(b"-")
            last[group] = (int(top_ms), int(top_seq))
    top_ms, top_seq = last[group]
    new = (ms, group) if ms > top_ms else (top_ms, top_seq - top_seq % 16 + 16 + group)
    last[group] = new
    return f"{new[0]}-{new[1]}"


async def _drop_rate_limits(redis: aioredis.Redis, moved: Moved) -> None:
    async for old, _ in _scan(redis, "rl"):
        moved["rate limits dropped"] += int(await redis.delete(old))


# The mail outbox and its dead letters, named without a hash tag before they
# shared one (gateway/keys.py, MAIL_TAG).
_MAIL: tuple[tuple[str, str, str], ...] = (
    (P + "mail", keys.MAIL_STREAM, "mail outboxes"),
    (P + "mail:dead", keys.MAIL_DEAD, "mail dead-letter streams"),
)


async def _mail(redis: aioredis.Redis, moved: Moved) -> None:
    """Renamed (a stream keeps its consumer group and pending entries); when
    the new name exists already, its entries are moved over one by one."""
    for old, new, label in _MAIL:
        if not await redis.exists(old):
            continue
        if await redis.renamenx(old, new):
            moved[label] += 1
            continue
        rows: Any = await redis.xrange(old)
        for entry_id, fields in rows:
            await _atomic(redis, ("xadd", new, fields), ("xdel", old, entry_id))
        await redis.delete(old)
        moved[label] += 1


async def _atomic(redis: aioredis.Redis, *calls: tuple[Any, ...]) -> None:
    """The calls (method name, arguments), in one MULTI: a move is never half
    done (a single instance: the keys may be in any slot)."""
    async with redis.pipeline(transaction=True) as pipe:
        for method, *args in calls:
            getattr(pipe, method)(*args)
        await pipe.execute()


def run(config: Config) -> int:
    """`otp-gateway migrate`: prints what moved; 0 when done."""
    if config.security_secret is None:
        raise ConfigError("security.secret", "is needed to name the accounts' keys (their tags)")
    secret = config.security_secret.reveal()

    async def go() -> Moved:
        redis = redis_client(config)
        try:
            return await migrate(redis, secret)
        finally:
            await redis.aclose()

    moved = asyncio.run(go())
    if not moved:
        print("nothing to migrate: the data is in the current layout")
    for what, count in sorted(moved.items()):
        print(f"moved {count} {what}")
    return 0
