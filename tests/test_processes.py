"""`serve --processes N` and `worker --processes N`, with real processes and sockets.

A supervisor forks N children on one SO_REUSEPORT port (gateway/supervisor.py):
both answer, a killed one comes back while the port keeps answering, SIGTERM
drains a request in flight, none outlives a supervisor killed by SIGKILL, and
one scrape of /metrics adds up what every child counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.cli import _parser
from gateway.embedded import RedisServer, free_port
from tests.support.config import OTP_KEY
from tests.support.metrics import sample
from tests.support.ops import Child, children, wait_healthy, write_config
from tests.support.poll import poll
from tests.support.procs import procs, redis_pids
from tests.support.sockets import children_of, holder, running, server_side

# Never called: the gateways here run --no-worker, or no code is queued.
PROVIDER = {
    "name": "hook", "kind": "http", "channels": ["sms", "voice"],
    "url": "http://127.0.0.1:9/send", "secret": "s" * 32,
}  # fmt: skip
UNKNOWN = "A" * 28  # a well-formed challenge id that names no challenge
VERIFY = json.dumps({"challenge_id": UNKNOWN, "code": "123456"}).encode()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    with children(tmp_path) as start:
        yield start


class Conn:
    """One HTTP/1.1 connection, raw: its client port tells who accepted it."""

    def __init__(self, port: int, key: str = OTP_KEY) -> None:
        self.port = port
        self.key = key

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.client_port: int = self.writer.get_extra_info("sockname")[1]
        return self

    def write_verify(self, body: bytes = VERIFY) -> None:
        """Headers and `body` (all of it, or a part: the rest comes with `finish`)."""
        head = (
            f"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(VERIFY)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)

    async def answer(self) -> tuple[int, dict[str, Any]]:
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = json.loads(await self.reader.readexactly(int(headers["Content-Length"])))
        return int(lines[0].split(" ")[1]), body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _config(tmp_path: Path, redis_url: str, port: int, **sections: Any) -> str:
    server = {"host": "127.0.0.1", "port": port, **sections.pop("server", {})}
    path = write_config(tmp_path / "gateway.toml", redis_url, [PROVIDER], server=server, **sections)
    return str(path)


async def _children(parent: Child, count: int) -> list[int]:
    """The supervisor's `count` children once they all run."""
    await poll(lambda: len(children_of(parent.pid)) == count, within=20, what="the children")
    return children_of(parent.pid)


async def _serving(port: int, parent: int, key: str = OTP_KEY) -> int:
    """A POST /verify on a new connection: answered 404, by a child of `parent`
    (its pid returned)."""
    conn = await Conn(port, key).open()
    try:
        conn.write_verify()
        status, body = await asyncio.wait_for(conn.answer(), 10)
        assert (status, body["error"]) == (404, "challenge_not_found"), body
        side = server_side(port, conn.client_port)
        assert side is not None
        pid = holder(side.inode, children_of(parent))
        assert pid is not None, "answered by none of the children"
        return pid
    finally:
        await conn.close()


async def _until_each_served(
    port: int, parent: int, pids: list[int], key: str = OTP_KEY, limit: int = 400
) -> Counter[int]:
    """New connections until every one of `pids` has answered some; how many each did."""
    served: Counter[int] = Counter()
    while set(served) != set(pids):
        assert sum(served.values()) < limit, f"only {dict(served)} answered"
        served[await _serving(port, parent, key)] += 1
    return served


async def _metrics(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


async def test_two_processes_answer_on_one_port_and_one_scrape_adds_up_their_counters(
    spawn: Any, redis_server: RedisServer, redis: aioredis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, redis_server.url, port)
    gateway: Child = spawn("serve", "--config", config, "--no-worker", "--processes", "2")
    await wait_healthy(gateway, f"http://127.0.0.1:{port}")
    pids = await _children(gateway, 2)
    assert gateway.pid not in pids

    served = await _until_each_served(port, gateway.pid, pids)

    text = await _metrics(port)
    counted = sample(
        text, "otp_verifications_total", purpose="unknown", outcome="challenge_not_found"
    )
    assert counted == sum(served.values()), (served, counted)
    requests = sample(
        text, "otp_http_request_duration_seconds_count",
        route="/verify", method="POST", status="404",
    )  # fmt: skip
    assert requests == sum(served.values())
    # Gauges: one value for the group, not one per process nor their sum.
    assert sample(text, "otp_build_info", version=_version(text)) == 1
    assert sample(text, "otp_redis_up") == 1
    assert sample(text, "otp_queue_depth") == 0
    assert sample(text, "otp_process_restarts_total", role="api") == 0
    assert "process_start_time_seconds" not in text  # per process: not the group's
    gateway.terminate()
    assert await gateway.exit_code() == 0, gateway.output()


def _version(text: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith("otp_build_info{")]
    return line.split('"')[1]


async def test_a_killed_child_is_restarted_and_the_port_keeps_answering(
    spawn: Any, redis_server: RedisServer, redis: aioredis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, redis_server.url, port)
    gateway: Child = spawn("serve", "--config", config, "--no-worker", "--processes", "2")
    await wait_healthy(gateway, f"http://127.0.0.1:{port}")
    before = await _children(gateway, 2)
    victim, survivor = before

    os.kill(victim, signal.SIGKILL)
    # Every connection is answered meanwhile: by the survivor, or, for those the
    # kernel hashes to the victim's socket, by its replacement once it is up.
    await poll(lambda: not running(victim), within=10, what="the child gone")
    for _ in range(20):
        await _serving(port, gateway.pid)
    after = await _children(gateway, 2)
    assert survivor in after and victim not in after
    await _until_each_served(port, gateway.pid, after)

    assert '"exit": "SIGKILL"' in gateway.stderr()
    assert sum("process exited: restarting" in line for line in gateway.stderr().splitlines()) == 1
    assert sample(await _metrics(port), "otp_process_restarts_total", role="api") == 1


async def test_sigterm_drains_every_child_and_the_request_in_flight_completes(
    spawn: Any, redis_server: RedisServer, redis: aioredis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, redis_server.url, port)
    gateway: Child = spawn("serve", "--config", config, "--no-worker", "--processes", "2")
    await wait_healthy(gateway, f"http://127.0.0.1:{port}")
    pids = await _children(gateway, 2)
    await _until_each_served(port, gateway.pid, pids)  # both up: both have to drain
    # A request in flight: read by the child that has it, its script held by Redis.
    await redis.client_pause(1000, all=False)  # scripts wait, within [redis] timeout
    try:
        slow = await Conn(port).open()
        slow.write_verify()

        def read_by_a_child() -> bool:
            side = server_side(port, slow.client_port)
            return side is not None and side.unread == 0 and holder(side.inode, pids) is not None

        await poll(read_by_a_child, within=10, what="the request read by a child")
        gateway.terminate()
        await poll(lambda: _refused(port), within=10, what="the port to stop accepting")
        status, body = await asyncio.wait_for(slow.answer(), 10)
        await slow.close()
    finally:
        await redis.client_unpause()
    assert (status, body["error"]) == (404, "challenge_not_found")
    assert await gateway.exit_code() == 0, gateway.output()
    assert not any(running(pid) for pid in pids)
    assert "Traceback" not in gateway.output()
    assert '"status": 5' not in gateway.stderr()  # no 5xx in the access lines


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    writer.close()
    return False


async def test_children_do_not_outlive_a_killed_supervisor(
    spawn: Any, redis_server: RedisServer, redis: aioredis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, redis_server.url, port)
    gateway: Child = spawn("serve", "--config", config, "--processes", "2")
    await wait_healthy(gateway, f"http://127.0.0.1:{port}")
    pids = await _children(gateway, 2)
    os.kill(gateway.pid, signal.SIGKILL)
    try:
        await poll(lambda: not any(running(p) for p in pids), within=20, what="the children gone")
    finally:  # an orphan left behind would serve (and drain the queue) for the later tests
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_workers_share_the_group_each_under_its_own_name(
    spawn: Any, redis_server: RedisServer, redis: aioredis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    path = tmp_path / "worker.toml"
    write_config(path, redis_server.url, [PROVIDER], worker={"metrics_port": port})
    worker: Child = spawn("worker", "--config", str(path), "--processes", "2")
    await wait_healthy(worker, f"http://127.0.0.1:{port}")
    pids = await _children(worker, 2)

    def started() -> dict[int, str]:
        lines = [json.loads(line) for line in worker.stderr().splitlines() if "{" in line]
        return {e["pid"]: e["worker"] for e in lines if e.get("event") == "worker started"}

    await poll(lambda: set(started()) == set(pids), within=20, what="both workers started")
    assert len(set(started().values())) == 2  # two consumers of the one group
    text = await _metrics(port)
    assert sample(text, "otp_process_restarts_total", role="worker") == 0
    worker.terminate()
    assert await worker.exit_code() == 0, worker.output()


def test_the_embedded_default_runs_one_redis_for_every_child(tmp_path: Path) -> None:
    port = free_port()
    with procs(tmp_path) as start:
        gateway = start("serve", "--processes", "2", port=port)
        gateway.wait_for(r"otp-gateway listening(.|\n)*otp-gateway listening")
        [redis_pid] = redis_pids(tmp_path / "var" / "redis")
        pids = [p for p in children_of(gateway.pid) if p != redis_pid]
        assert len(pids) == 2
        key = json.loads((tmp_path / "var" / "dev-keys.json").read_text())["otp"]
        asyncio.run(_until_each_served(port, gateway.pid, pids, key))
        assert gateway.output().count("development API keys") == 1
        gateway.stop()
        assert gateway.exit_code() == 0, gateway.output()
    assert not running(redis_pid)


# --- the command line ----------------------------------------------------------------


def test_auto_is_one_process_per_core() -> None:
    for command in ("serve", "worker"):
        assert _parser().parse_args([command, "--processes", "auto"]).processes == os.cpu_count()
        assert _parser().parse_args([command]).processes == 1


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", ""])
def test_a_bad_number_of_processes_is_one_usage_line_and_exit_2(value: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", f"--processes={value}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 2
    usage, error = run.stderr.strip().splitlines()
    assert usage.startswith("usage: otp-gateway serve")
    assert error.startswith("otp-gateway serve: error: argument --processes: ")
    assert "Traceback" not in run.stderr


def test_a_port_in_use_stops_start_up_before_any_child(
    spawn: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, redis_server.url, port)
    first: Child = spawn("serve", "--config", config, "--no-worker", "--processes", "2")
    asyncio.run(wait_healthy(first, f"http://127.0.0.1:{port}"))
    # A second group on the same port is refused, not let into the first's.
    second: Child = spawn("serve", "--config", config, "--no-worker", "--processes", "2")
    assert second.proc.wait(30) == 2
    assert second.stderr().strip() == (
        f"configuration error: server.port: 127.0.0.1:{port} is already in use "
        "(another otp-gateway, or another program)"
    )
    assert "listening" not in second.stdout()
