"""Graceful shutdown with real processes: nothing queued is lost, nothing sent twice.

A gateway on SIGTERM stops accepting, finishes the requests in flight, then
its in-process worker finishes the sends it holds; workers restarted one by
one under traffic (a rolling restart) deliver every queued code exactly once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.embedded import RedisServer, free_port
from tests.support.config import OPERATOR_KEY, OTP_KEY
from tests.support.gateway import GatewayFactory
from tests.support.httpfake import Stub, StubFactory
from tests.support.ops import Child, auth, children, wait_healthy, write_config
from tests.support.poll import poll
from tests.support.queues import pending, queued


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    with children(tmp_path) as start:
        yield start


@pytest.fixture
async def paused(redis: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    """The test's Redis client, for CLIENT PAUSE; unpaused whatever happens."""
    try:
        yield redis
    finally:
        await redis.client_unpause()


def _account(account_id: str, line: int = 78) -> dict[str, Any]:
    return {
        "account_id": account_id, "establishment": "Mairie", "last_name": "Martin",
        "first_name": "A", "email": f"{account_id}@example.org", "role": "user",
        "phone": f"06 12 34 {line:02d} 78",
    }  # fmt: skip


async def _challenge(http: aiohttp.ClientSession, account_id: str) -> str:
    async with http.post("/accounts", json=_account(account_id), headers=auth(OPERATOR_KEY)) as r:
        assert r.status == 201, await r.text()
    async with http.post("/challenge", json={"account_id": account_id}, headers=auth(OTP_KEY)) as r:
        assert r.status == 202, await r.text()
        challenge_id: str = (await r.json())["challenge_id"]
        return challenge_id


async def _queue_settled(redis: aioredis.Redis) -> bool:
    return bool(await queued(redis) == 0 and await pending(redis) == 0)


async def _each_delivered_once(
    stub: Stub, challenge_ids: list[str], redis: aioredis.Redis, gw: Any
) -> None:
    """Every challenge got exactly one send, the queue is empty, every code verifies."""

    async def all_sent() -> bool:
        return all(stub.codes(c) for c in challenge_ids) and await _queue_settled(redis)

    await poll(all_sent, within=20, every=0.05, what="every queued code delivered")
    sent = [h.json["challenge_id"] for h in stub.hits]
    assert sorted(sent) == sorted(challenge_ids), "a code was sent twice, or to no one"
    for challenge_id in challenge_ids:
        [code] = stub.codes(challenge_id)
        resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": code})
        assert resp.status == 200, await resp.text()


# --- a gateway with its in-process worker, SIGTERM in the middle of everything ---------


class InFlight:
    """A POST /challenge on its own connection, written at once, read later."""

    def __init__(self, port: int, account_id: str) -> None:
        self.port = port
        self.body = json.dumps({"account_id": account_id}).encode()

    async def send(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"POST /challenge HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {OTP_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nX-Request-ID: in-flight\r\n\r\n"
        )
        self.writer.write(head.encode() + self.body)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        try:
            lines = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            body = json.loads(await self.reader.readexactly(int(headers["Content-Length"])))
            return int(lines[0].split(" ")[1]), headers, body
        finally:
            self.writer.close()
            await self.writer.wait_closed()


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset: the connection sat in the backlog of a listener that just closed.
        return True
    writer.close()
    return False


async def test_sigterm_on_a_gateway_loses_no_request_and_no_send(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    spawn: Any,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    paused: aioredis.Redis,
    tmp_path: Path,
) -> None:
    stub = await stubs(delay=0.3)  # a slow provider: sends are in flight at SIGTERM
    port = free_port()
    config = write_config(
        tmp_path / "gateway.toml", redis_server.url, [stub.provider("hook")],
        server={"host": "127.0.0.1", "port": port}, worker={"metrics_port": 0, "concurrency": 1},
    )  # fmt: skip
    gateway: Child = spawn("serve", "--config", str(config))
    await wait_healthy(gateway, f"http://127.0.0.1:{port}")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        challenge_ids = [await _challenge(http, f"a{i}") for i in range(3)]
        async with http.post("/accounts", json=_account("late"), headers=auth(OPERATOR_KEY)):
            pass
        await poll(lambda: bool(stub.hits), within=10, what="a send in flight")
        # Redis holds writes for a moment: the next request stays in its handler.
        await paused.client_pause(1000, all=False)
        request = InFlight(port, "late")
        await request.send()
        # A request sent after it is answered only once the server has read it.
        async with http.get("/healthz") as resp:
            assert resp.status == 200
        gateway.terminate()

        await poll(lambda: _refused(port), within=10, what="the gateway to stop accepting")
        status, headers, body = await request.answer()
    # The request in flight at SIGTERM completed.
    assert (status, headers["X-Request-ID"]) == (202, "in-flight"), body
    challenge_ids.append(body["challenge_id"])
    assert await gateway.exit_code() == 0, gateway.output()
    assert "Traceback" not in gateway.output()

    # What the stopped gateway did not take, a fresh worker delivers.
    worker_port = free_port()
    config = write_config(
        tmp_path / "worker.toml", redis_server.url, [stub.provider("hook")],
        worker={"metrics_port": worker_port},
    )  # fmt: skip
    worker = spawn("worker", "--config", str(config))
    await wait_healthy(worker, f"http://127.0.0.1:{worker_port}")
    gw = await make_gateway(providers=[stub.provider("hook")])
    await _each_delivered_once(stub, challenge_ids, redis, gw)
    worker.terminate()
    assert await worker.exit_code() == 0, worker.output()


# --- standalone workers restarted one by one under traffic ------------------------------


async def test_a_rolling_restart_of_workers_delivers_every_code_exactly_once(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    spawn: Any,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    stub = await stubs(delay=0.3)
    providers = [stub.provider("hook")]
    gw = await make_gateway(providers=providers)
    challenge_ids: list[str] = []

    async def start_worker() -> Child:
        port = free_port()
        config = write_config(
            tmp_path / f"worker-{port}.toml", redis_server.url, providers,
            worker={"metrics_port": port, "concurrency": 2},
        )  # fmt: skip
        worker: Child = spawn("worker", "--config", str(config))
        await wait_healthy(worker, f"http://127.0.0.1:{port}")  # its SIGTERM handler is set
        return worker

    async def traffic(count: int) -> None:
        for _ in range(count):
            account_id = f"u{len(challenge_ids)}"
            # A number each: the per-number limit (10 an hour) is not what is tested here.
            body = _account(account_id, line=len(challenge_ids))
            resp = await gw.post("/accounts", body, key=OPERATOR_KEY)
            assert resp.status == 201
            resp = await gw.post("/challenge", {"account_id": account_id})
            assert resp.status == 202
            challenge_ids.append((await resp.json())["challenge_id"])

    running = [await start_worker(), await start_worker()]
    stopped: list[Child] = []
    await traffic(3)
    for _ in range(2):  # replace each worker in turn, with sends in flight
        await poll(lambda: len(stub.hits) > len(stub.accepted), what="a send in flight")
        stopped.append(running.pop(0))
        stopped[-1].terminate()
        await traffic(2)
        running.append(await start_worker())
        await traffic(2)
    for old in stopped:
        assert await old.exit_code() == 0, old.output()
        assert "Traceback" not in old.output()
    await _each_delivered_once(stub, challenge_ids, redis, gw)
