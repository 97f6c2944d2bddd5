"""A whole gateway on a 3-primary Redis Cluster while slots move under it.

Issue 12 §3: "a test reshards a slot range while challenges are created and
verified (MOVED/ASK handled; nothing lost)". tests/test_cluster.py moves slots
under a plain client; here the gateway and its send worker run a load of
/challenge, the code from the provider's sink, /verify and a second /verify,
while the reshard helper (tests/support/cluster.py, as `redis-cli --cluster
reshard` does it) moves the slots of several key groups (`keys.LABELS`: an
account's record, challenges and the group's send stream) and of the rate
limits (`{rl}`) to another primary one after the other, keys and all, each
held half-moved for a while (TRYAGAIN for scripts over both halves).

The cluster is this test's own, whatever `OTP_TESTS_REDIS` says: it moves
slots the shared one's other users expect in place.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gateway import keys
from gateway.config import Config
from tests.support.cluster import AllPrimaries, Cluster, ClusterServer
from tests.support.config import make_config
from tests.support.gateway import Gateway, add_account, start_gateway
from tests.support.httpfake import Stub
from tests.support.poll import poll
from tests.support.queues import pending, queued, tag

CLIENTS = 8  # concurrent callers, each on accounts of its own
FLOWS = 320  # challenge -> code -> verify -> verify again, over all callers
ACCOUNTS_PER_CLIENT = 3
MOVED_GROUPS = 6  # key groups whose slot moves (of the groups the accounts use)
HOLD = 0.8  # seconds a slot stays half moved: under [redis] timeout_seconds (2)
UNLIMITED = "100000/1m"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path).start()
    yield made
    made.stop()


@pytest.fixture
async def redis(cluster: Cluster) -> AsyncIterator[AllPrimaries]:
    """The tests' own client of this cluster (KEYS, DBSIZE over every primary)."""
    client = ClusterServer(cluster).client()
    yield client
    await client.aclose()


@pytest.fixture
async def gw(cluster: Cluster, sink: Stub) -> AsyncIterator[Gateway]:
    gateway = await start_gateway(_config(cluster, sink), sink)
    yield gateway
    await gateway.client.close()


def _config(cluster: Cluster, sink: Stub) -> Config:
    limits = ("account", "number", "ip", "country", "global", "failures")
    return make_config(
        "redis://unused:1/0",
        redis=cluster.redis_table(),
        providers=[sink.provider()],
        otp={"resend_cooldown_seconds": 0},
        rate_limits=dict.fromkeys(limits, UNLIMITED),
        worker={"claim_idle_seconds": 1.0},
    )


# --- the load ---------------------------------------------------------------------


@dataclass
class Flows:
    """Callers running challenge -> code -> verify -> verify again; every answer kept."""

    gw: Gateway
    answers: list[tuple[str, int]] = field(default_factory=list)  # (route, status)
    created: dict[str, str] = field(default_factory=dict)  # challenge id -> account
    verified: dict[str, str] = field(default_factory=dict)  # challenge id -> code
    reused: dict[str, str] = field(default_factory=dict)  # challenge id -> 2nd verify's error
    left: int = FLOWS
    done: int = 0  # flows finished

    async def caller(self, accounts: list[str]) -> None:
        for account in itertools.cycle(accounts):
            if self.left <= 0:
                return
            self.left -= 1
            await self.flow(account)

    async def flow(self, account: str) -> None:
        status, body = await self._post("/challenge", {"account_id": account})
        if status != 202:
            return
        cid = body["challenge_id"]
        self.created[cid] = account
        code = await self._code(cid)
        status, body = await self._post("/verify", {"challenge_id": cid, "code": code})
        if status == 200 and body.get("verified") is True:
            self.verified[cid] = code
        _, again = await self._post("/verify", {"challenge_id": cid, "code": code})
        self.reused[cid] = again.get("error", "")
        self.done += 1

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await self.gw.post(path, body)
        self.answers.append((path, resp.status))
        return resp.status, await resp.json()

    async def _code(self, challenge_id: str) -> str:
        await poll(lambda: bool(self.gw.sink.codes(challenge_id)), 10, 0.005, "a code sent")
        return self.gw.sink.codes(challenge_id)[0]


# --- the reshard ------------------------------------------------------------------


@dataclass
class Reshard:
    """Moves each of `slots` to the next primary, keys and all, one after the other
    as the flows progress: the first once a few flows are done, the last well
    before they end."""

    cluster: Cluster
    slots: list[int]
    flows: Flows
    moved: list[int] = field(default_factory=list)  # flows done when each move ended
    keys_moved: int = 0
    tryagains: int = 0  # TRYAGAIN replies of the nodes while the slots moved

    async def run(self) -> None:
        step = FLOWS // (len(self.slots) + 2)
        for i, slot in enumerate(self.slots, start=1):
            await poll(partial(self._done, i * step), 20, what=f"{i * step} flows")
            await asyncio.to_thread(self._move, slot)
            self.moved.append(self.flows.done)

    def _done(self, flows: int) -> bool:
        return self.flows.done >= flows

    def _move(self, slot: int) -> None:
        nodes = self.cluster.nodes
        source = self.cluster.owner(slot)
        target = nodes[(nodes.index(source) + 1) % len(nodes)]
        before = self.cluster.tryagains()
        self.cluster.begin_move(slot, source, target)
        # Half the slot's keys now, the rest HOLD seconds later: moving a slot of
        # many keys takes that long (`redis-cli --cluster reshard` sends 10 keys per
        # MIGRATE). Meanwhile a script over keys on both sides gets TRYAGAIN.
        found = source.client.execute_command("CLUSTER GETKEYSINSLOT", slot, 10_000)
        if half := found[: len(found) // 2]:
            self.cluster.migrate(source, target, *half)
        time.sleep(HOLD)
        self.keys_moved += len(half) + self.cluster.migrate_keys(slot, source, target)
        self.cluster.end_move(slot, target)
        self.tryagains += self.cluster.tryagains() - before
        # Every node told before the next move, as `redis-cli --cluster check` would.
        self.cluster.wait_ok()


def _accounts(count: int) -> list[str]:
    """Account ids spread over as many key groups as `count` allows."""
    by_group: dict[int, str] = {}
    for i in range(10_000):
        name = f"acct{i}"
        by_group.setdefault(keys.group_of_tag(tag(name)), name)
        if len(by_group) == min(count, keys.GROUPS):
            break
    spare = (f"more{i}" for i in itertools.count())
    return [*by_group.values(), *itertools.islice(spare, count - len(by_group))]


def _slots_to_move(accounts: list[str]) -> list[int]:
    """The slots of the first `MOVED_GROUPS` groups the accounts use, and `{rl}`'s."""
    groups = sorted({keys.group_of_tag(tag(name)) for name in accounts})[:MOVED_GROUPS]
    return [Cluster.slot_of(keys.hashtag(g)) for g in groups] + [Cluster.slot_of(keys.RATE_TAG)]


async def test_slots_moving_under_a_load_of_flows_lose_nothing_and_answer_no_5xx(
    gw: Gateway, cluster: Cluster, redis: AllPrimaries, caplog: pytest.LogCaptureFixture
) -> None:
    accounts = _accounts(CLIENTS * ACCOUNTS_PER_CLIENT)
    for i, name in enumerate(accounts):
        await add_account(gw, account_id=name, phone=f"06 12 34 {50 + i // 100:02d} {i % 100:02d}")
    flows = Flows(gw)
    reshard = Reshard(cluster, _slots_to_move(accounts), flows)
    owners = {slot: cluster.owner(slot) for slot in reshard.slots}
    worker_stop = asyncio.Event()
    worker = asyncio.create_task(gw.services.worker.run(worker_stop))
    moving = asyncio.create_task(reshard.run())
    try:
        await asyncio.gather(*(
            flows.caller(accounts[i::CLIENTS]) for i in range(CLIENTS)
        ))  # fmt: skip
        await moving
        await poll(lambda: _settled(redis), 10, what="the send streams empty")
    finally:
        moving.cancel()
        worker_stop.set()
        await worker
    cluster.wait_ok()

    statuses = {(route, status) for route, status in flows.answers}
    errors = [
        (r.getMessage(), r.__dict__.get("error"))
        for r in caplog.records
        if r.levelno >= logging.ERROR
    ]
    assert all(status < 500 for _, status in statuses), (statuses, errors)
    assert {s for _, s in statuses} <= {200, 202, 410}, statuses
    assert len(flows.created) == FLOWS
    # Every challenge verified once with the code the sink got, and only once.
    assert flows.verified.keys() == flows.created.keys()
    assert set(flows.reused.values()) == {"already_used"}
    # No send lost, none made twice: one accepted send per challenge, that code.
    sent = [body["challenge_id"] for body in gw.sink.received]
    assert sorted(sent) == sorted(flows.created)
    assert all(gw.sink.codes(cid) == [code] for cid, code in flows.verified.items())
    # The moves really ran under the load, with keys in their slots.
    assert len(reshard.moved) == len(reshard.slots) and reshard.moved[-1] < FLOWS
    assert reshard.keys_moved > 0 and reshard.tryagains > 0
    assert all(cluster.owner(slot) is not owner for slot, owner in owners.items())
    assert await queued(redis) == 0 and await pending(redis) == 0


async def _settled(redis: AllPrimaries) -> bool:
    return await queued(redis) == 0 and await pending(redis) == 0
