"""Memory per live challenge, measured directly (no HTTP): N accounts by
AccountStore.create, then N challenges by ChallengeService.create, INFO
used_memory before, while queued, and once every send is recorded as done by
the worker's own script (sent.lua: the send's state, its provider, the entry
acknowledged and deleted; nothing goes to a provider).
Usage: probe_memory.py [N] [redis-server path]."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import account_body, phone_for

from gateway import embedded, keys
from gateway.accounts import NewAccount
from gateway.accounts.audit import Who
from gateway.config import config_from_dict
from gateway.metrics import Metrics
from gateway.provider import build_providers
from gateway.runtime import build, provider_context


async def used(r: aioredis.Redis) -> int:
    await asyncio.sleep(0.2)
    info: dict[str, Any] = await r.info("memory")
    return int(info["used_memory"])


async def main(n: int, server_path: str | None) -> None:
    if server_path:
        embedded.find_redis_server = lambda: server_path  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        server = embedded.RedisServer(Path(tmp), appendfsync="everysec")
        server.start()
        try:
            r = aioredis.Redis.from_url(server.url, max_connections=20)
            config = config_from_dict({
                "server": {"mode": "development"},
                "redis": {"url": server.url},
                "security": {"secret": "probe-secret-0123456789-abcdefghijkl"},
                "api_keys": [{"name": "f", "key": "k" * 24, "scopes": ["otp"]}],
                "providers": [{"name": "c", "kind": "console", "channels": ["sms", "voice"]}],
                "rate_limits": {"global": "10000000/1m", "country": "10000000/1h"},
            })  # fmt: skip
            # The console provider takes both channels (nothing is sent: no worker runs).
            providers = build_providers(config.providers, provider_context(config))
            s = build(config, r, providers, Metrics())
            who = Who("bench", "r")
            sem = asyncio.Semaphore(20)

            async def acct(i: int) -> None:
                async with sem:
                    await s.accounts.create(
                        NewAccount(**account_body("p", i, phone_for(i))), who=who
                    )

            await asyncio.gather(*(acct(i) for i in range(n)))
            ids = [account_body("p", i, phone_for(i))["account_id"] for i in range(n)]
            before = await used(r)

            async def chal(aid: str) -> None:
                async with sem:
                    account = await s.accounts.get(aid)
                    assert account is not None
                    await s.challenges.create(account, "login", None, None)

            await asyncio.gather(*(chal(a) for a in ids))
            queued = await used(r)
            for stream in keys.STREAMS:
                await r.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)

            async def record_sent(stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
                async with sem:
                    await s.worker.scripts.sent(
                        keys=[keys.challenge(fields[b"c"].decode()), stream],
                        args=[1, "sent", "c", keys.GROUP, entry_id, "sms", "", ""],
                    )

            for stream in keys.STREAMS:
                while entries := await r.xrange(stream, count=1000):
                    await asyncio.gather(*(record_sent(stream, e, f) for e, f in entries))
            sent = await used(r)
            one = ids[0]
            tag = s.challenges.account_tag(one)
            cid = (await r.hget(keys.account(tag), "c:login")).decode()[:16] + tag
            print(f"server {server_path or 'default'} n={n}")
            print(f"  queued {(queued - before) / n:.0f} B  sent {(sent - before) / n:.0f} B")
            print(
                f"  MEMORY USAGE c: {await r.memory_usage(keys.challenge(cid))}"
                f" a: {await r.memory_usage(keys.account(tag))}"
                f" hlen c {await r.hlen(keys.challenge(cid))}"
                f" a {await r.hlen(keys.account(tag))}"
            )
            await r.aclose()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 20000,
            sys.argv[2] if len(sys.argv) > 2 else None,
        )
    )
