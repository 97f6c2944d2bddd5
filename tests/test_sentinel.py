"""Redis Sentinel: a failover is an event, not an outage (gateway/datastore.py).

Real processes: a primary, replicas and three sentinels (`redis-server
--sentinel`), small detection times. A load of /challenge + /verify runs
against a gateway that finds its primary through the sentinels, with its send
worker running, while the primary is failed over (planned) or killed -9.
Every answer is 2xx, 4xx or 503; the gateway serves again within the
detection time plus a few seconds; every /verify acknowledged 200 stays
consumed on the new primary (`wait_replicas = 1`); the worker goes on sending.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from gateway import keys
from gateway.config import config_from_dict
from gateway.datastore import NotReplicated, redis_client
from gateway.embedded import find_redis_server, free_port
from tests.support.config import SECRET, make_config
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.poll import poll
from tests.support.queues import tag

# A failover makes the time budget cancel connects in flight, and Python 3.11's
# asyncio can drop a socket (or its transport) cancelled mid-`create_connection`
# to the garbage collector, which then warns "unclosed". Our own half-open
# connections are closed (datastore.SendsOnce); what is left is asyncio's, is
# closed by the collector, and would turn these tests flaky under the suite's
# `filterwarnings = error`, so it is let through here only.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.single_only(reason="Sentinel topologies and wait_replicas on one instance"),
]


@pytest.fixture(autouse=True)
def _collect_leftovers() -> Iterator[None]:
    """Collect those leftovers before the test ends, under its filter: left to a
    later collection, they would warn (and fail) in whichever test runs then."""
    yield
    gc.collect()


PASSWORD = "data-nodes-password-0123456789"
SENTINEL_PASSWORD = "sentinels-password-0123456789"
MASTER = "mymaster"
DOWN_AFTER_MS = 1000  # the sentinels' detection time


def _popen(args: list[str], where: Path) -> subprocess.Popen[bytes]:
    where.mkdir(parents=True, exist_ok=True)
    with (where / "out.log").open("wb") as out:
        # A session of its own: the teardown kills the whole process group.
        return subprocess.Popen(
            args, cwd=where, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


@dataclass
class Topology:
    """One primary, `replicas` replicas and three sentinels on loopback."""

    root: Path
    replicas: int
    nodes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    sentinels: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    clients: dict[int, redis.Redis] = field(default_factory=dict)

    def start(self) -> None:
        primary = free_port()
        self._node(primary, None)
        for _ in range(self.replicas):
            self._node(free_port(), primary)
        for i in range(3):
            port = free_port()
            conf = self.root / f"sentinel{i}" / "sentinel.conf"
            conf.parent.mkdir(parents=True)
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {conf.parent}\n"
                f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                f"sentinel auth-pass {MASTER} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self.sentinels[port] = _popen(
                [find_redis_server(), str(conf), "--sentinel"], conf.parent
            )
        self.wait_ready(primary)

    def _node(self, port: int, primary: int | None) -> None:
        args = [
            find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
            "--requirepass", PASSWORD, "--masterauth", PASSWORD,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            # A primary that lost its replicas refuses writes (docs/operations.md).
            "--min-replicas-to-write", "1", "--min-replicas-max-lag", "10",
        ]  # fmt: skip
        if primary is not None:
            args += ["--replicaof", "127.0.0.1", str(primary)]
        self.nodes[port] = _popen(args, self.root / f"node{port}")

    def sentinel(self, port: int | None = None) -> redis.Redis:
        return self._client(port or next(iter(self.sentinels)), SENTINEL_PASSWORD)

    def node(self, port: int) -> redis.Redis:
        return self._client(port, PASSWORD)

    def _client(self, port: int, password: str) -> redis.Redis:
        if port not in self.clients:
            self.clients[port] = redis.Redis(port=port, password=password, decode_responses=True)
        return self.clients[port]

    def primary(self) -> int:
        return int(self.sentinel().sentinel_get_master_addr_by_name(MASTER)[1])

    def wait_ready(self, primary: int, within: float = 20) -> None:
        """Until every sentinel knows the others, the replicas, and they are in sync."""

        def ready() -> bool:
            try:
                for port in self.sentinels:
                    state = self.sentinel(port).sentinel_master(MASTER)
                    if state["num-other-sentinels"] != 2 or state["num-slaves"] != self.replicas:
                        return False
                info = self.node(primary).info("replication")
                return bool(info["connected_slaves"] == self.replicas)
            except (redis.RedisError, KeyError):
                return False

        _until(ready, within, "the sentinel topology")

    def kill(self, port: int) -> None:
        os.killpg(self.nodes[port].pid, signal.SIGKILL)
        self.nodes[port].wait()

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        for process in [*self.sentinels.values(), *self.nodes.values()]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def config(self) -> dict[str, Any]:
        return {
            "sentinels": [f"127.0.0.1:{port}" for port in self.sentinels],
            "sentinel_master": MASTER,
            "sentinel_password": SENTINEL_PASSWORD,
            "password": PASSWORD,
            "timeout_seconds": 0.5,
            "wait_replicas": 1,
        }


def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def topology(tmp_path: Path, replicas: int) -> Iterator[Topology]:
    topo = Topology(tmp_path, replicas)
    try:
        topo.start()
        yield topo
    finally:
        topo.stop()


@pytest.fixture
def one_replica(tmp_path: Path) -> Iterator[Topology]:
    yield from topology(tmp_path, 1)


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[Topology]:
    yield from topology(tmp_path, 2)


# --- the load ---------------------------------------------------------------------


@dataclass
class Load:
    """Challenges and verifications in a loop per account; what each answer was, when."""

    gw: Gateway
    answers: list[tuple[float, str, int]] = field(default_factory=list)  # (time, route, status)
    verified: list[tuple[str, str]] = field(default_factory=list)  # acknowledged (id, code)
    created: list[str] = field(default_factory=list)  # acknowledged challenges
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, account: str) -> None:
        while not self.stop.is_set():
            challenge = await self._post("/challenge", {"account_id": account})
            if challenge is None:
                continue
            cid = challenge["challenge_id"]
            self.created.append(cid)
            code = await self._code(cid)
            body = {"challenge_id": cid, "code": code}
            if code is not None and await self._post("/verify", body) is not None:
                self.verified.append((cid, code))

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        resp = await self.gw.post(path, body)
        self.answers.append((time.monotonic(), path, resp.status))
        if resp.status in (200, 202):
            reply: dict[str, Any] = await resp.json()
            return reply
        await asyncio.sleep(0.02)  # paces a client retrying a 503
        return None

    async def _code(self, challenge_id: str, within: float = 10) -> str | None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not self.stop.is_set():
            if codes := self.gw.sink.codes(challenge_id):
                return codes[-1]
            await asyncio.sleep(0.01)
        return None

    def served_again(self, since: float) -> float:
        """Seconds from `since` to the first 200 /verify after the last 503."""
        last_503 = max((t for t, _, s in self.answers if s == 503 and t >= since), default=since)
        ok = [t for t, path, s in self.answers if path == "/verify" and s == 200 and t > last_503]
        return (min(ok) if ok else float("inf")) - since


async def _gateway(make_gateway: GatewayFactory, topo: Topology) -> Gateway:
    return await make_gateway(  # type: ignore[no-any-return]
        redis=topo.config(),
        otp={"resend_cooldown_seconds": 0},
        rate_limits={"account": "10000/1m", "number": "10000/1m", "ip": "10000/1m",
                     "country": "10000/1m", "global": "10000/1m"},
        worker={"claim_idle_seconds": 1.0},
    )  # fmt: skip


async def _under_load(
    gw: Gateway, fail: Any, recovered_within: float, accounts: int = 4
) -> tuple[Load, float]:
    """Runs the load (and the send worker), calls `fail()` once it is steady, stops
    the load once the gateway has verified codes again; returns the load and the
    recovery time."""
    names = [f"acct{i}" for i in range(accounts)]
    for i, name in enumerate(names):
        await add_account(gw, account_id=name, phone=f"06 12 34 56 {10 + i}")
    load = Load(gw)
    worker_stop = asyncio.Event()
    worker = asyncio.create_task(gw.services.worker.run(worker_stop))
    loops = [asyncio.create_task(load.run(name)) for name in names]
    try:
        await poll(lambda: len(load.verified) >= 20, within=15, what="a steady load")
        started = time.monotonic()
        await asyncio.to_thread(fail)
        before = len(load.verified)
        await poll(
            lambda: len(load.verified) >= before + 20 and load.served_again(started) < 1e9,
            within=recovered_within + 10,
            what="verifications after the failover",
        )
    finally:
        load.stop.set()
        await asyncio.gather(*loops)
        worker_stop.set()
        await worker
    return load, load.served_again(started)


async def _check(gw: Gateway, load: Load, recovery: float, bound: float) -> None:
    statuses = {s for _, _, s in load.answers}
    assert statuses <= {200, 202, 503}, statuses  # never a 500
    print(f"\nrecovery: {recovery:.2f}s, answers: {len(load.answers)}, 503s: "
          f"{sum(s == 503 for _, _, s in load.answers)}")  # fmt: skip
    assert recovery < bound, f"served again only after {recovery:.2f}s"
    # Every acknowledged verification stays consumed on the new primary.
    for cid, code in load.verified:
        resp = await gw.post("/verify", {"challenge_id": cid, "code": code})
        assert resp.status == 410, (cid, resp.status, await resp.text())
        assert (await resp.json())["error"] == "already_used"


async def test_a_planned_failover_is_served_through(
    make_gateway: GatewayFactory, two_replicas: Topology
) -> None:
    """SENTINEL FAILOVER, as docs/operations.md says: writes paused on the old
    primary first, so that it acknowledges nothing the new one lacks."""
    topo = two_replicas
    gw = await _gateway(make_gateway, topo)
    old = topo.primary()

    def fail() -> None:
        topo.node(old).execute_command("CLIENT", "PAUSE", 20000, "WRITE")
        topo.sentinel().sentinel_failover(MASTER)

    load, recovery = await _under_load(gw, fail, recovered_within=5)
    assert topo.primary() != old
    await _check(gw, load, recovery, bound=5)


async def test_a_killed_primary_is_replaced_within_detection_time(
    make_gateway: GatewayFactory, two_replicas: Topology
) -> None:
    topo = two_replicas
    gw = await _gateway(make_gateway, topo)
    old = topo.primary()
    load, recovery = await _under_load(gw, lambda: topo.kill(old), recovered_within=10)
    assert topo.primary() != old
    await _check(gw, load, recovery, bound=DOWN_AFTER_MS / 1000 + 6)
    # The worker went on: every challenge acknowledged got its code.
    for cid in load.created:
        await poll(lambda cid=cid: bool(gw.sink.codes(cid)), within=5, what=f"send {cid}")


async def test_a_worker_whose_group_vanished_recreates_it_and_goes_on(
    gw: Gateway, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A primary promoted without the send stream (or a flush): NOGROUP makes the
    worker create the group again at once, not wait as for a Redis outage."""
    await add_account(gw)
    stop = asyncio.Event()
    worker = asyncio.create_task(gw.services.worker.run(stop))
    try:
        alices = keys.stream(keys.group_of_tag(tag("alice")))  # where her sends go
        await poll(lambda: redis.exists(alices), what="the group")
        await redis.delete(alices)
        resp = await gw.post("/challenge", {"account_id": "alice"})
        cid = (await resp.json())["challenge_id"]
        await poll(lambda: bool(gw.sink.codes(cid)), within=5, what="the send")
    finally:
        stop.set()
        await worker
    messages = [r.getMessage() for r in caplog.records]
    assert "worker: consumer group missing, created again" in messages
    assert "worker cannot reach redis" not in messages


@pytest.mark.parametrize(
    ("redis_table", "key"),
    [
        ({"url": "redis://h:1/0", "sentinels": ["h:26379"], "sentinel_master": "m"}, "sentinels"),
        ({"url": "redis://h:1/0", "cluster_nodes": ["h:7000"]}, "cluster_nodes"),
        ({"sentinels": ["h:26379"]}, "sentinel_master"),
        ({"sentinels": ["h"], "sentinel_master": "m"}, "sentinels"),
        ({"sentinels": ["h:99999"], "sentinel_master": "m"}, "sentinels"),
        ({"url": "redis://h:1/0", "sentinel_master": "m"}, "sentinel_master"),
        ({"url": "redis://h:1/0", "tls": True}, "tls"),
        ({"url": "redis://:pw@h:1/0", "password": "x"}, "password"),
        ({"sentinels": ["h:1"], "sentinel_master": "m", "wait_replicas": 17}, "wait_replicas"),
        ({"sentinels": ["h:1"], "sentinel_master": "m", "password_env": "NOPE"}, "password_env"),
    ],
)
def test_a_bad_redis_topology_is_one_line_naming_the_key(
    redis_table: dict[str, Any], key: str
) -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_config("redis://unused:1/0", redis=redis_table)
    assert f"redis.{key}" in str(caught.value) and "\n" not in str(caught.value)


def test_sentinels_are_parsed_and_are_not_the_embedded_default() -> None:
    raw = {
        "redis": {
            "sentinels": ["10.0.0.1:26379", "[::1]:26380"],
            "sentinel_master": "otp",
            "password_env": "PW",
            "wait_replicas": 1,
        },
        "security": {"secret": SECRET},
    }
    config = config_from_dict(raw, {"PW": "data-password"})
    assert config.redis.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert not config.embedded and config.redis.url is None
    assert config.redis.password is not None and config.redis.password.reveal() == "data-password"
    assert "data-password" not in repr(config.redis)


async def test_a_script_not_confirmed_by_a_replica_is_a_503_error_never_resent(
    redis_server: Any, redis: aioredis.Redis
) -> None:
    """`wait_replicas` without a replica: the script ran once, its caller gets an
    error (503), and NOSCRIPT still reaches `Script` unannotated."""
    config = make_config(redis_server.url, redis={"url": redis_server.url, "wait_replicas": 1,
                                                 "timeout_seconds": 1.0})  # fmt: skip
    client = redis_client(config)
    try:
        with pytest.raises(NotReplicated):
            await client.eval("return redis.call('INCR', KEYS[1])", 1, "counter")
        assert await redis.get("counter") == b"1"
        with pytest.raises(redis_exceptions.NoScriptError):
            await client.evalsha("0" * 40, 0)
    finally:
        await client.aclose()
