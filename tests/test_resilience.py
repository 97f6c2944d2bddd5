"""Crashes and outages: a killed worker process, a restarted Redis, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import keys
from gateway.embedded import RedisServer, free_port
from tests.support.config import OPERATOR_KEY, OTP_KEY, SECRET, make_config, redis_section
from tests.support.gateway import ACCOUNT, GatewayFactory, add_account, start_gateway
from tests.support.httpfake import Stub, StubFactory
from tests.support.metrics import sample
from tests.support.poll import poll
from tests.support.queues import queued

OTP_GATEWAY = str(Path(sys.executable).with_name("otp-gateway"))


# --- a standalone worker process ------------------------------------------------


def _toml_table(header: str, values: dict[str, Any]) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML values.
    return header + "\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def write_worker_config(
    path: Path, redis_url: str, providers: list[dict[str, Any]], **worker: Any
) -> Path:
    text = _toml_table("[redis]", redis_section({"url": redis_url}))
    text += _toml_table("[security]", {"secret": SECRET})
    text += _toml_table("[worker]", {"metrics_port": 0, **worker})
    text += _toml_table("[logging]", {"level": "warning", "format": "text"})
    for provider in providers:
        text += _toml_table("[[providers]]", provider)
    path.write_text(text)
    return path


class WorkerProcess:
    """`otp-gateway worker --config FILE` as a child process, output kept in a file."""

    def __init__(self, config: Path) -> None:
        self.log = config.with_suffix(".log")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [OTP_GATEWAY, "worker", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Any]:
    """Starts worker processes; whatever is still alive at the end is killed."""
    started: list[WorkerProcess] = []

    def start(redis_url: str, providers: list[dict[str, Any]], **worker: Any) -> WorkerProcess:
        config = tmp_path / f"worker{len(started)}.toml"
        write_worker_config(config, redis_url, providers, **worker)
        process = WorkerProcess(config)
        started.append(process)
        return process

    yield start
    for process in started:
        process.ensure_dead()


async def pending_entries(redis: aioredis.Redis) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for stream in keys.STREAMS:
        if await redis.exists(stream):
            found += await redis.xpending_range(stream, keys.GROUP, "-", "+", 10)
    return found


async def test_job_of_a_killed_worker_is_claimed_and_sent_exactly_once(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    worker_process: Any,
    redis_server: RedisServer,
    redis: aioredis.Redis,
) -> None:
    # The provider takes the first request and never answers it: the worker
    # process is caught between reading its job and acknowledging it.
    stub = await stubs(hold_first=True)
    providers = [stub.provider("hook")]
    gw = await make_gateway(providers=providers, worker={"claim_idle_seconds": 0.5})
    await add_account(gw)
    doomed = worker_process(redis_server.url, providers, claim_idle_seconds=0.5)

    resp = await gw.post("/challenge", {"account_id": "alice"})
    assert resp.status == 202
    challenge_id = (await resp.json())["challenge_id"]
    try:
        await asyncio.wait_for(stub.arrived.wait(), 15)
    except TimeoutError:
        pytest.fail(f"the worker process sent nothing:\n{doomed.output()}")
    [held] = await pending_entries(redis)
    assert held["consumer"].decode().split("-")[-2] == str(doomed.proc.pid)
    doomed.proc.send_signal(signal.SIGKILL)
    assert doomed.proc.wait(timeout=10) == -signal.SIGKILL
    assert stub.accepted == []
    assert await queued(redis) == 1

    # Another worker takes the job over once it has been idle long enough.
    stop = asyncio.Event()
    task = asyncio.create_task(gw.services.worker.run(stop))
    try:
        await poll(lambda: len(stub.accepted) > 0, within=10, what="the redelivered send")
        await poll(lambda: _stream_empty(redis), within=5, what="the acknowledgement")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)

    assert len(stub.hits) == 2  # the held request (never completed) and the redelivery
    [code] = stub.codes(challenge_id)
    assert [h.headers["Idempotency-Key"] for h in stub.hits] == [f"{challenge_id}:1"] * 2
    assert await pending_entries(redis) == []
    resp = await gw.get(f"/challenge/{challenge_id}")
    assert (await resp.json())["delivery"] == "sent"
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": code})
    assert resp.status == 200, await resp.text()


async def _stream_empty(redis: aioredis.Redis) -> bool:
    return bool(await queued(redis) == 0)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


async def test_standalone_worker_serves_health_and_metrics_and_stops_on_sigterm(
    make_gateway: GatewayFactory,
    sink: Stub,
    worker_process: Any,
    redis_server: RedisServer,
    redis: aioredis.Redis,
) -> None:
    port = free_port()
    providers = [sink.provider("hook")]
    process = worker_process(redis_server.url, providers, metrics_port=port)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            assert process.proc.poll() is None, process.output()
            try:
                return (await _get(session, f"{base}/healthz"))[0] == 200
            except aiohttp.ClientConnectionError:
                return False

        await poll(up, within=15, every=0.05, what="the worker's /healthz")
        status, text = await _get(session, f"{base}/healthz")
        assert (status, json.loads(text)) == (200, {"status": "ok"})

        # It delivers what the API queues.
        gw = await make_gateway(providers=providers)
        await add_account(gw)
        resp = await gw.post("/challenge", {"account_id": "alice"})
        challenge_id = (await resp.json())["challenge_id"]
        await asyncio.wait_for(sink.arrived.wait(), 10)
        assert len(sink.codes(challenge_id)) == 1

        status, text = await _get(session, f"{base}/metrics")
        assert status == 200
        assert sample(text, "otp_deliveries_total", provider="hook", outcome="accepted") == 1
        assert sample(text, "otp_provider_up", provider="hook") == 1

    process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.proc.wait, 10) == 0, process.output()
    assert "Traceback" not in process.output()


async def test_standalone_worker_waits_for_redis_at_start(
    sink: Stub, worker_process: Any, tmp_path: Path
) -> None:
    """Started before its Redis (compose, k8s), a worker waits rather than crashing."""
    server = RedisServer(tmp_path / "late-redis")
    port = free_port()
    process = worker_process(server.url, [sink.provider("hook")], metrics_port=port)
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                assert process.proc.poll() is None, process.output()
                try:
                    return (await _get(session, f"http://127.0.0.1:{port}/healthz"))[0] == 200
                except aiohttp.ClientConnectionError:
                    return False

            await poll(up, within=15, every=0.05, what="the worker's /healthz")
        server.start()
        client = aioredis.Redis.from_url(server.url)
        try:
            await poll(lambda: _has_group(client), within=10, what="the worker's consumer group")
        finally:
            await client.aclose()
        process.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.proc.wait, 10) == 0, process.output()
    finally:
        server.stop()


async def _has_group(client: aioredis.Redis) -> bool:
    for stream in keys.STREAMS:
        try:
            groups: Any = await client.xinfo_groups(stream)
        except aioredis.ResponseError:
            return False
        if not any(g["name"] == keys.GROUP.encode() for g in groups):
            return False
    return True


# --- Redis restarted under a running gateway -------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "r2", appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def running(
    own_redis: RedisServer, sink: Stub
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A gateway with its in-process worker running, on its own Redis."""
    config = make_config(
        own_redis.url,
        providers=[sink.provider()],
        otp={"resend_cooldown_seconds": 0},
    )
    client = (await start_gateway(config, sink, run_worker=True)).client
    try:
        yield client
    finally:
        await client.close()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _ready(client: TestClient[web.Request, web.Application]) -> bool:
    resp = await client.get("/readyz")
    return resp.status == 200


async def _challenge_sent(
    client: TestClient[web.Request, web.Application], sink: Stub
) -> dict[str, Any]:
    resp = await client.post("/challenge", json={"account_id": "alice"}, headers=_auth(OTP_KEY))
    assert resp.status == 202, await resp.text()
    challenge_id = (await resp.json())["challenge_id"]

    async def recorded() -> bool:
        resp = await client.get(f"/challenge/{challenge_id}", headers=_auth(OTP_KEY))
        return resp.status == 200 and (await resp.json())["delivery"] == "sent"

    # Sent, and recorded as sent (the worker records after the provider's answer).
    await poll(recorded, within=10, what="the send")
    assert len(sink.codes(challenge_id)) == 1
    body: dict[str, Any] = await resp.json()
    return body


async def _assert_down(client: TestClient[web.Request, web.Application]) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "not_ready" and body["redis"] is False
    resp = await client.post("/challenge", json={"account_id": "alice"}, headers=_auth(OTP_KEY))
    assert resp.status == 503
    assert (await resp.json())["error"] == "unavailable"
    resp = await client.get("/accounts/alice", headers=_auth(OPERATOR_KEY))
    assert resp.status == 503
    assert (await resp.json())["error"] == "unavailable"
    resp = await client.get("/healthz")  # alive, just not ready
    assert resp.status == 200


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_gateway_rides_out_a_redis_restart(
    running: TestClient[web.Request, web.Application],
    own_redis: RedisServer,
    sink: Stub,
    kill: bool,
) -> None:
    client = running
    resp = await client.post("/accounts", json=ACCOUNT, headers=_auth(OPERATOR_KEY))
    assert resp.status == 201, await resp.text()
    account = await resp.json()
    assert await _ready(client)
    before = await _challenge_sent(client, sink)

    own_redis.stop(kill=kill)
    await _assert_down(client)

    own_redis.start()
    await poll(lambda: _ready(client), within=10, every=0.05, what="/readyz after restart")

    # Nothing acknowledged was lost (AOF, fsync always).
    resp = await client.get("/accounts/alice", headers=_auth(OPERATOR_KEY))
    assert resp.status == 200
    assert await resp.json() == account
    resp = await client.get(f"/challenge/{before['challenge_id']}", headers=_auth(OTP_KEY))
    assert resp.status == 200
    assert (await resp.json())["delivery"] == "sent"

    # The worker came back too: a new challenge is delivered.
    await _challenge_sent(client, sink)
    assert len(sink.received) == 2
