"""Redis Cluster (`[redis] cluster_nodes`, gateway/cluster.py) against real clusters.

Three primaries on loopback (tests/support/cluster.py). Most tests share the
session's cluster (`redis_cluster`: the suite's own Redis under
`OTP_TESTS_REDIS=cluster`); the ones that kill a node or put a proxy in front
of one start a cluster of their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import CrossSlotTransactionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.cluster import ClusterClient, reachable
from gateway.config import Config, config_from_dict
from gateway.datastore import SendsOnce, redis_client
from gateway.embedded import free_port
from gateway.errors import ConfigError
from gateway.luascripts import Script
from gateway.metrics import Metrics
from gateway.web.middleware import build_middleware
from tests.conftest import TOPOLOGY
from tests.support.cluster import (
    PASSWORD,
    Cluster,
    ClusterServer,
    Node,
    key_in_slot,
    keys_of,
)
from tests.support.config import SECRET, make_config
from tests.support.gateway import add_account, start_gateway
from tests.support.httpfake import Stub
from tests.support.metrics import sample
from tests.support.poll import poll
from tests.support.tcpproxy import TcpProxy

INCR = "return redis.call('INCR', KEYS[1])"
INCR_BOTH = "return redis.call('INCR', KEYS[1]) + redis.call('INCR', KEYS[2])"


def cluster_config(cluster: Cluster, **redis: Any) -> Config:
    return make_config("redis://unused:1/0", redis=cluster.redis_table(**redis))


@pytest.fixture
async def client(redis_cluster: Cluster) -> AsyncIterator[aioredis.Redis]:
    """The gateway's client of the session's cluster, the cluster emptied first."""
    redis_cluster.flushall()
    made = redis_client(cluster_config(redis_cluster))
    yield made
    await made.aclose()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own, to kill nodes of."""
    cluster = Cluster(tmp_path).start()
    yield cluster
    cluster.stop()


# --- configuration ----------------------------------------------------------------


def test_cluster_nodes_are_parsed_with_the_data_nodes_credentials_and_tls() -> None:
    raw = {
        "redis": {
            "cluster_nodes": ["10.0.0.1:7000", "[::1]:7001"],
            "username": "otp",
            "password_env": "PW",
            "tls": True,
            "tls_ca_file": "/etc/ssl/ca.pem",
        },
        "security": {"secret": SECRET},
    }
    config = config_from_dict(raw, {"PW": "cluster-password"})
    assert config.redis.cluster_nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert not config.embedded and config.redis.url is None
    assert config.redis.tls and config.redis.username == "otp"
    assert "cluster-password" not in repr(config.redis)


@pytest.mark.parametrize(
    ("redis_table", "key"),
    [
        ({"url": "redis://h:1/0", "cluster_nodes": ["h:7000"]}, "cluster_nodes"),
        ({"sentinels": ["h:1"], "sentinel_master": "m", "cluster_nodes": ["h:7"]}, "cluster_nodes"),
        ({"cluster_nodes": ["h"]}, "cluster_nodes"),
        ({"cluster_nodes": ["h:0"]}, "cluster_nodes"),
        ({"cluster_nodes": ["h:7000"], "wait_replicas": 1}, "wait_replicas"),
        ({"cluster_nodes": ["h:7000"], "sentinel_master": "m"}, "sentinel_master"),
        ({"cluster_nodes": ["h:7000"], "tls_ca_file": "/ca.pem"}, "tls_ca_file"),
        ({"url": "redis://h:1/0", "tls": True}, "tls"),
    ],
)  # fmt: skip
def test_a_bad_cluster_setting_is_one_line_naming_the_key(
    redis_table: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config("redis://unused:1/0", redis=redis_table)
    assert f"redis.{key}" in str(caught.value) and "\n" not in str(caught.value)


def test_the_cluster_client_sends_once_and_packs_with_hiredis(redis_cluster: Cluster) -> None:
    client = redis_client(cluster_config(redis_cluster, timeout_seconds=0.7))
    assert isinstance(client, ClusterClient) and client.budget == 0.7
    made = client.connection_kwargs["connection_class"]
    assert issubclass(made, SendsOnce) and made.__name__.startswith("Hiredis")
    assert all(node.connection_class is made for node in client.startup_nodes)


# --- the suite's switch -----------------------------------------------------------


async def test_the_suites_redis_is_the_topology_asked_for(
    redis_server: Any, config: Config, redis: aioredis.Redis
) -> None:
    """`OTP_TESTS_REDIS=cluster`: the fixtures hand out the cluster, and the tests'
    own client sees every primary's keys."""
    if TOPOLOGY == "single":
        assert config.redis.url is not None and not config.redis.cluster_nodes
        return
    assert isinstance(redis_server, ClusterServer)
    assert len(config.redis.cluster_nodes) == 3
    gateway = redis_client(config)
    try:
        nodes = redis_server.cluster.nodes
        names = [keys_of(redis_server.cluster, node, 1, "switch")[0] for node in nodes]
        for name in names:
            await gateway.set(name, 1)
        assert sorted(await redis.keys("switch*")) == sorted(n.encode() for n in names)
        assert await redis.dbsize() == 3
    finally:
        await gateway.aclose()


# --- routing: MOVED, ASK ----------------------------------------------------------


async def test_one_node_address_is_enough_moved_leads_to_the_others(
    redis_cluster: Cluster,
) -> None:
    redis_cluster.flushall()
    first = redis_cluster.nodes[0]
    client = redis_client(cluster_config(redis_cluster, cluster_nodes=[first.address]))
    try:
        names = [k for node in redis_cluster.nodes for k in keys_of(redis_cluster, node, 5, "m")]
        for i, name in enumerate(names):
            await client.set(name, i)
        assert [int(await client.get(name)) for name in names] == list(range(len(names)))
        assert all(node.client.dbsize() == 5 for node in redis_cluster.nodes)
        assert await reachable(client)
    finally:
        await client.aclose()


async def test_ask_during_a_slot_migration_reaches_the_importing_node(
    redis_cluster: Cluster, client: aioredis.Redis
) -> None:
    source, target = redis_cluster.nodes[0], redis_cluster.nodes[1]
    slot = redis_cluster.slot_of(keys_of(redis_cluster, source, 1, "ask")[0])
    moved, stays = f"{{{key_in_slot(slot)}}}moved", f"{{{key_in_slot(slot)}}}stays"
    await client.set(moved, "a")
    await client.set(stays, "b")
    redis_cluster.begin_move(slot, source, target)
    try:
        redis_cluster.migrate(source, target, moved)
        # `moved` is on the target now: the source answers ASK, the client follows it.
        assert await client.get(moved) == b"a"
        assert await client.get(stays) == b"b"
        assert await client.incr(f"{{{key_in_slot(slot)}}}new") == 1  # ASK: created there
    finally:
        redis_cluster.migrate_keys(slot, source, target)
        redis_cluster.end_move(slot, target)
        redis_cluster.wait_ok()
    assert target.client.get(moved) == b"a" and await client.get(stays) == b"b"


async def test_a_script_over_a_slot_split_by_a_migration_waits_out_tryagain(
    redis_cluster: Cluster, client: aioredis.Redis
) -> None:
    """Half a slot's keys moved, the rest 0.6 s later (a slot of many keys takes
    that long): a script over keys on both sides gets TRYAGAIN all along. redis-py
    gives up after 16 (about 0.1 s, "TTL exhausted"); the client sends it again
    while its budget lasts: nothing ran, and the 503 would be for nothing."""
    source, target = redis_cluster.nodes[1], redis_cluster.nodes[2]
    slot = redis_cluster.slot_of(keys_of(redis_cluster, source, 1, "try")[0])
    here, there = f"{{{key_in_slot(slot)}}}here", f"{{{key_in_slot(slot)}}}there"
    script = Script(client, INCR_BOTH)
    assert await script([here, there]) == 2
    before = redis_cluster.tryagains()
    redis_cluster.begin_move(slot, source, target)
    redis_cluster.migrate(source, target, there)
    rest = threading.Timer(0.6, _finish_move, (redis_cluster, slot, source, target))
    started = time.monotonic()
    rest.start()
    try:
        assert await script([here, there]) == 4
    finally:
        rest.join()
    assert time.monotonic() - started >= 0.6
    assert redis_cluster.tryagains() - before > 16  # more than redis-py's own redirects
    assert target.client.mget(here, there) == [b"2", b"2"]


async def test_noscript_from_the_node_an_ask_led_to_loads_it_there(
    redis_cluster: Cluster, client: aioredis.Redis
) -> None:
    """Mid-migration, EVALSHA goes by ASK to the slot's new node, which may lack the
    script: it is loaded on the node that said NOSCRIPT, not on the key's old one."""
    source, target = redis_cluster.nodes[0], redis_cluster.nodes[2]
    key = keys_of(redis_cluster, source, 1, "askscript")[0]
    slot = redis_cluster.slot_of(key)
    script = Script(client, INCR)
    assert await script([key]) == 1
    redis_cluster.begin_move(slot, source, target)
    try:
        redis_cluster.migrate(source, target, key)
        target.client.script_flush()
        assert await script([key]) == 2  # ASK to the target: NOSCRIPT, loaded there
        assert target.client.script_exists(script.sha) == [True]
    finally:
        _finish_move(redis_cluster, slot, source, target)
    assert target.client.get(key) == b"2"


def _finish_move(cluster: Cluster, slot: int, source: Node, target: Node) -> None:
    cluster.migrate_keys(slot, source, target)
    cluster.end_move(slot, target)
    cluster.wait_ok()


# --- what is sent again, and what is not --------------------------------------------


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[Cluster, TcpProxy]]:
    """A cluster whose first node is reached only through a `TcpProxy`: the node
    announces the proxy's port (`--cluster-announce-port`), so the slot map every
    client learns sends that node's commands through the proxy."""
    proxy_port = free_port()
    cluster = Cluster(tmp_path, announce={0: proxy_port})
    cluster.start()
    proxy = await TcpProxy("127.0.0.1", cluster.nodes[0].port, port=proxy_port).start()
    try:
        yield cluster, proxy
    finally:
        await proxy.close()
        cluster.stop()


async def test_a_write_whose_reply_is_lost_runs_once_and_is_a_connection_error(
    proxied: tuple[Cluster, TcpProxy],
) -> None:
    cluster, proxy = proxied
    behind = cluster.nodes[0]
    client = redis_client(cluster_config(cluster))
    try:
        key = keys_of(cluster, behind, 1, "lost")[0]
        script = Script(client, INCR)
        assert await script([key]) == 1  # loaded, and the path through the proxy works
        proxy.lose_reply_to(script.sha.encode())
        with pytest.raises(RedisConnectionError):
            await script([key])
        assert proxy.sent(script.sha.encode()) == 1
        assert behind.client.get(key) == b"2"  # it ran, once
        assert await script([key]) == 3  # the next call finds a fresh connection
    finally:
        await client.aclose()


async def test_a_pipeline_whose_reply_is_lost_is_not_sent_again(
    proxied: tuple[Cluster, TcpProxy],
) -> None:
    cluster, proxy = proxied
    behind, other = cluster.nodes[0], cluster.nodes[1]
    client = redis_client(cluster_config(cluster))
    try:
        here, there = keys_of(cluster, behind, 1, "p")[0], keys_of(cluster, other, 1, "p")[0]
        sha = behind.client.script_load(INCR)
        other.client.script_load(INCR)
        proxy.lose_reply_to(sha.encode())
        with pytest.raises(RedisConnectionError):
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha(sha, 1, here)
                pipe.evalsha(sha, 1, there)
                await pipe.execute()
        assert proxy.sent(sha.encode()) == 1
        assert behind.client.get(here) == b"1" and other.client.get(there) == b"1"
    finally:
        await client.aclose()


async def test_a_refused_connection_is_sent_again_it_never_left(
    proxied: tuple[Cluster, TcpProxy],
) -> None:
    cluster, proxy = proxied
    client = redis_client(cluster_config(cluster))
    try:
        key = keys_of(cluster, cluster.nodes[0], 1, "refused")[0]
        await client.ping(target_nodes=client.get_primaries())  # every node known
        await client.get_node_from_key(key).disconnect()  # the next command connects
        proxy.refuse(1)  # the next connection through the proxy is reset at once
        assert await client.incr(key) == 1
        assert proxy.refusals_left == 0
    finally:
        await client.aclose()


async def test_noscript_loads_the_script_again_on_the_node_that_answered(
    redis_cluster: Cluster, client: aioredis.Redis
) -> None:
    first, second, third = redis_cluster.nodes
    here, there = (
        keys_of(redis_cluster, first, 1, "s")[0],
        keys_of(redis_cluster, second, 1, "s")[0],
    )
    script = Script(client, INCR)
    assert await script([here]) == 1 and await script([there]) == 1
    first.client.script_flush()
    third.client.script_flush()
    assert await script([here]) == 2  # NOSCRIPT on `first`: loaded there, run again
    assert first.client.script_exists(script.sha) == [True]
    assert third.client.script_exists(script.sha) == [False]  # not loaded everywhere


# --- resharding under load ----------------------------------------------------------


async def test_moving_slots_loses_nothing_and_surfaces_no_error(
    redis_cluster: Cluster, client: aioredis.Redis
) -> None:
    """The reshard helper moves 16 slots, keys and all, while a loop writes and reads
    keys of those slots: MOVED, ASK and TRYAGAIN are the client's business."""
    source, target = redis_cluster.nodes[2], redis_cluster.nodes[0]
    first = redis_cluster.slot_of(keys_of(redis_cluster, source, 1, "r")[0])
    slots = [s for s in range(first, first + 64) if redis_cluster.owner(s) is source][:16]
    names = [f"{{{key_in_slot(slot)}}}:{i}" for slot in slots for i in range(8)]
    written: dict[str, int] = {}
    done = asyncio.Event()

    async def load() -> int:
        rounds = 0
        while not done.is_set() or rounds < 2:
            for name in names:
                written[name] = await client.incr(name)
                assert int(await client.get(name)) == written[name]
            rounds += 1
        return rounds

    for name in names:
        written[name] = await client.incr(name)
    loop = asyncio.create_task(load())
    moved = await asyncio.to_thread(redis_cluster.move_slots, slots, source, target)
    done.set()
    rounds = await loop
    redis_cluster.wait_ok()
    assert moved == len(names) and rounds >= 2
    assert all(redis_cluster.owner(slot) is target for slot in slots)
    assert {n: int(await client.get(n)) for n in names} == written
    assert sum(target.client.exists(n) for n in names) == len(names)
    # Put them back, for the tests that share this cluster.
    await asyncio.to_thread(redis_cluster.move_slots, slots, target, source)
    redis_cluster.wait_ok()


# --- a node down -------------------------------------------------------------------


async def test_a_node_killed_fails_its_slots_fast_and_spares_the_others(
    own_cluster: Cluster,
) -> None:
    budget = 1.0
    client = redis_client(cluster_config(own_cluster, timeout_seconds=budget))
    dead, alive = own_cluster.nodes[0], own_cluster.nodes[1]
    try:
        mine, theirs = keys_of(own_cluster, dead, 1, "d")[0], keys_of(own_cluster, alive, 1, "d")[0]
        await client.set(mine, 1)
        await client.set(theirs, 1)
        dead.kill()
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await client.incr(mine)
        assert time.monotonic() - started < budget
        # The survivors have not marked it failed yet (cluster-node-timeout): theirs work.
        assert await client.incr(theirs) == 2
    finally:
        await client.aclose()


async def test_a_node_that_hangs_is_cut_at_the_budget(own_cluster: Cluster) -> None:
    budget = 0.5
    client = redis_client(cluster_config(own_cluster, timeout_seconds=budget))
    hung = own_cluster.nodes[0]
    assert hung.process is not None
    try:
        key = keys_of(own_cluster, hung, 1, "h")[0]
        await client.set(key, 1)
        os.kill(hung.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await client.incr(key)
            assert time.monotonic() - started < budget + 0.25
        finally:
            os.kill(hung.process.pid, signal.SIGCONT)
        assert int(await client.get(key)) in (1, 2)  # the INCR may have run: never resent
    finally:
        await client.aclose()


async def test_the_send_worker_outlives_a_node_that_hung_and_sends_again(
    own_cluster: Cluster, sink: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis error in the worker's loop (a node cut at the budget) is logged, the
    idle connections of every node dropped, and the loop goes on: the next send
    goes out once the node answers again."""
    # A budget well over the worker's block time (0.25 s): the socket timeout is the
    # budget, and a blocking read answers after its block time.
    redis = own_cluster.redis_table(timeout_seconds=1.0)
    config = make_config("redis://unused:1/0", redis=redis, providers=[sink.provider()])
    gw = await start_gateway(config, sink)
    stop = asyncio.Event()
    worker = asyncio.create_task(gw.services.worker.run(stop))
    hung = own_cluster.nodes[1]
    assert hung.process is not None
    try:
        await add_account(gw)
        os.kill(hung.process.pid, signal.SIGSTOP)
        try:
            await poll(lambda: "worker cannot reach redis" in caplog.text, 5, what="an error")
        finally:
            os.kill(hung.process.pid, signal.SIGCONT)
        resp = await gw.post("/challenge", {"account_id": "alice"})
        assert resp.status == 202, await resp.text()
        cid = (await resp.json())["challenge_id"]
        await poll(lambda: bool(sink.codes(cid)) or worker.done(), 10, what="the code sent")
        assert not worker.done() and len(sink.codes(cid)) == 1
    finally:
        stop.set()
        await worker
        await gw.client.close()


async def test_a_blocking_read_goes_to_the_streams_node_and_waits(
    redis_cluster: Cluster, client: aioredis.Redis
) -> None:
    stream = keys_of(redis_cluster, redis_cluster.nodes[1], 1, "stream")[0]
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    assert await client.xreadgroup("g", "c", {stream: ">"}, count=1, block=200) == []
    await client.xadd(stream, {"f": "v"})
    [[name, [(_, fields)]]] = await client.xreadgroup("g", "c", {stream: ">"}, count=1, block=200)
    assert name == stream.encode() and fields == {b"f": b"v"}


# --- readiness ----------------------------------------------------------------------


async def test_readyz_and_metrics_see_every_primary(own_cluster: Cluster, sink: Stub) -> None:
    redis = own_cluster.redis_table(timeout_seconds=0.5)
    gw = await start_gateway(make_config("redis://unused:1/0", redis=redis), sink)
    try:
        resp = await gw.get("/readyz")
        assert resp.status == 200 and (await resp.json())["redis"] is True
        assert sample(await (await gw.get("/metrics")).read(), "otp_redis_up") == 1
        own_cluster.nodes[2].kill()
        resp = await gw.get("/readyz")
        assert resp.status == 503 and (await resp.json())["redis"] is False
        assert sample(await (await gw.get("/metrics")).read(), "otp_redis_up") == 0
    finally:
        await gw.client.close()


async def test_no_node_reachable_is_a_connection_error_not_a_cluster_exception() -> None:
    """redis-py's own "cannot be connected" is no RedisError: the HTTP layer would
    answer 500. The client raises it as the ConnectionError of an outage (503)."""
    config = make_config(
        "redis://unused:1/0", redis={"cluster_nodes": [f"127.0.0.1:{free_port()}"],
                                     "timeout_seconds": 0.5},
    )  # fmt: skip
    client = redis_client(config)
    try:
        with pytest.raises(RedisConnectionError):
            await client.get("k")
    finally:
        await client.aclose()


async def test_a_transaction_keeps_to_one_slot(
    redis_cluster: Cluster, client: aioredis.Redis
) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.incr("{acct}:a")
        pipe.incr("{acct}:b")
        assert await pipe.execute() == [1, 1]
    with pytest.raises(CrossSlotTransactionError):
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(key_in_slot(1))
            pipe.incr(key_in_slot(2))
            await pipe.execute()


async def test_a_command_over_two_slots_is_a_logged_500_never_a_traceback(
    redis_cluster: Cluster,
    client: aioredis.Redis,
    aiohttp_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing of ours spans two slots any more; if something did, redis-py's
    refusal (before sending) and a node's CROSSSLOT are both a 500 with the
    contract's body and one critical line, not a 503 to retry nor a traceback."""
    node = redis_cluster.live()[0]
    first, second = keys_of(redis_cluster, node, 2)  # two slots of one node: it answers CROSSSLOT

    async def refused_here(_: web.Request) -> web.Response:
        await client.xread({key_in_slot(1): 0, key_in_slot(2): 0})
        return web.Response()

    async def refused_by_the_node(_: web.Request) -> web.Response:
        await client.eval(INCR, 2, key_in_slot(1), key_in_slot(2))
        return web.Response()

    async def refused_there(_: web.Request) -> web.Response:
        plain = aioredis.Redis(port=node.port, password=PASSWORD)
        try:
            await plain.mget(first, second)
        finally:
            await plain.aclose()
        return web.Response()

    app = web.Application(middlewares=[build_middleware(Metrics())])
    app.router.add_post("/here", refused_here)
    app.router.add_post("/node", refused_by_the_node)
    app.router.add_post("/there", refused_there)
    http = await aiohttp_client(app)
    for path in ("/here", "/node", "/there"):
        caplog.clear()
        response = await http.post(path)
        assert response.status == 500, path
        assert await response.json() == {"error": "internal_error", "message": "internal error"}
        [line] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert line.levelno == logging.CRITICAL and "hash slots" in line.getMessage()
        assert line.exc_info is None
