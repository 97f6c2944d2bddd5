"""Memory per live challenge, measured directly (no HTTP): N accounts by
AccountStore.create, then N challenges by ChallengeService.create, INFO
used_memory before, while queued, and once every send is recorded as done by
the worker's own script (sent.lua: the send's state, its provider, the entry
acknowledged and deleted; nothing goes to a provider).

`--redis cluster` runs it on a 3-primary Redis Cluster on loopback (the test
suite's, tests/support/cluster.py), the gateway's cluster client writing,
`used_memory` summed over the primaries; `--redis both` runs one then the
other, same redis-server, same N.
Usage: probe_memory.py [N] [redis-server path] [--redis single|cluster|both]."""

from __future__ import annotations

import argparse
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
from gateway.config import Config, config_from_dict
from gateway.datastore import redis_client
from gateway.metrics import Metrics
from gateway.provider import build_providers
from gateway.runtime import build, provider_context
from gateway.streams import create_group


async def used(r: aioredis.Redis) -> int:
    await asyncio.sleep(0.2)
    info: dict[str, Any] = await r.info("memory")
    return int(info["used_memory"])


class Single:
    """One redis-server, AOF everysec, as the embedded default runs it."""

    name = "single instance"

    def __init__(self, root: Path) -> None:
        self.server = embedded.RedisServer(root, appendfsync="everysec")

    def start(self) -> dict[str, Any]:
        self.server.start()
        return {"url": self.server.url}

    def client(self, config: Config) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.server.url, max_connections=20)

    async def used(self, r: aioredis.Redis) -> int:
        return await used(r)

    def stop(self) -> None:
        self.server.stop()


class OnCluster:
    """Three primaries, no replicas (the suite's fixture); memory summed over them."""

    name = "3-primary cluster"

    def __init__(self, root: Path) -> None:
        from tests.support.cluster import Cluster

        self.cluster = Cluster(root)

    def start(self) -> dict[str, Any]:
        self.cluster.start()
        return self.cluster.redis_table()

    def client(self, config: Config) -> aioredis.Redis:
        return redis_client(config)

    async def used(self, r: aioredis.Redis) -> int:
        await asyncio.sleep(0.2)
        infos = [node.client.info("memory") for node in self.cluster.nodes]
        return sum(int(info["used_memory"]) for info in infos)

    def stop(self) -> None:
        self.cluster.stop()


async def main(n: int, server_path: str | None, topology: str) -> None:
    if server_path:
        embedded.find_redis_server = lambda: server_path  # type: ignore[assignment]
    print(f"server {server_path or embedded.find_redis_server()} n={n}")
    for kind in (Single, OnCluster) if topology == "both" else (TOPOLOGIES[topology],):
        with tempfile.TemporaryDirectory() as tmp:
            target = kind(Path(tmp))
            try:
                await probe(n, target, target.start())
            finally:
                target.stop()


async def probe(n: int, target: Any, redis_table: dict[str, Any]) -> None:
    config = config_from_dict({
        "server": {"mode": "development"},
        "redis": redis_table,
        "security": {"secret": "probe-secret-0123456789-abcdefghijkl"},
        "api_keys": [{"name": "f", "key": "k" * 24, "scopes": ["otp"]}],
        "providers": [{"name": "c", "kind": "console", "channels": ["sms", "voice"]}],
        "rate_limits": {"global": "10000000/1m", "country": "10000000/1h"},
    })  # fmt: skip
    r = target.client(config)
    # The console provider takes both channels (nothing is sent: no worker runs).
    providers = build_providers(config.providers, provider_context(config))
    s = build(config, r, providers, Metrics())
    who = Who("bench", "r")
    sem = asyncio.Semaphore(20)

    async def acct(i: int) -> None:
        async with sem:
            await s.accounts.create(NewAccount(**account_body("p", i, phone_for(i))), who=who)

    await asyncio.gather(*(acct(i) for i in range(n)))
    ids = [account_body("p", i, phone_for(i))["account_id"] for i in range(n)]
    before = await target.used(r)

    async def chal(aid: str) -> None:
        async with sem:
            account = await s.accounts.get(aid)
            assert account is not None
            await s.challenges.create(account, "login", None, None)

    await asyncio.gather(*(chal(a) for a in ids))
    queued = await target.used(r)
    for stream in keys.STREAMS:
        await create_group(r, stream, keys.GROUP)

    async def record_sent(stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        async with sem:
            await s.worker.scripts.sent(
                keys=[keys.challenge(fields[b"c"].decode()), stream],
                args=[1, "sent", "c", keys.GROUP, entry_id, "sms", "", ""],
            )

    for stream in keys.STREAMS:
        while entries := await r.xrange(stream, count=1000):
            await asyncio.gather(*(record_sent(stream, e, f) for e, f in entries))
    sent = await target.used(r)
    tag = s.challenges.account_tag(ids[0])
    cid = (await r.hget(keys.account(tag), "c:login")).decode()[:16] + tag
    print(f"{target.name}: n={n}")
    print(f"  queued {(queued - before) / n:.0f} B  sent {(sent - before) / n:.0f} B")
    print(
        f"  MEMORY USAGE c: {await r.memory_usage(keys.challenge(cid))}"
        f" a: {await r.memory_usage(keys.account(tag))}"
        f" hlen c {await r.hlen(keys.challenge(cid))}"
        f" a {await r.hlen(keys.account(tag))}"
    )
    await r.aclose()


TOPOLOGIES: dict[str, Any] = {"single": Single, "cluster": OnCluster}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=20000)
    parser.add_argument("server", nargs="?", default=None, help="a redis-server binary")
    parser.add_argument("--redis", choices=("single", "cluster", "both"), default="single")
    options = parser.parse_args()
    asyncio.run(main(options.n, options.server, options.redis))
