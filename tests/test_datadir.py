"""One data folder, one embedded Redis (gateway/datadir.py, gateway/embedded.py):
a second `serve` or a `worker` in the folder attaches to the running Redis, the
Redis dies with the gateway that started it, and a stale one is cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.datadir import read_state, stop_stale
from gateway.embedded import RedisServer, free_port
from tests.support.poll import wait_until
from tests.support.procs import Start, procs, redis_pids

# An embedded configuration (no [redis] url) whose worker has no metrics port,
# so that two of them never fight over 9101.
WORKER_TOML = '[server]\nmode = "development"\n[worker]\nmetrics_port = 0\n'
ALICE = {
    "account_id": "alice", "establishment": "Mairie", "last_name": "Martin",
    "first_name": "Alice", "email": "alice@example.org", "role": "user",
    "phone": "06 12 34 56 78",
}  # fmt: skip


def call(port: int, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data, method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def dev_keys(folder: Path) -> dict[str, str]:
    keys: dict[str, str] = json.loads((folder / "var" / "dev-keys.json").read_text())
    return keys


def serve(start: Start, port: int, *args: str) -> Any:
    gateway = start("serve", *args, port=port)
    gateway.wait_for("listening on")
    return gateway


def test_a_worker_in_the_folder_sends_what_the_running_gateway_queues(tmp_path: Path) -> None:
    (tmp_path / "worker.toml").write_text(WORKER_TOML)
    port = free_port()
    with procs(tmp_path) as start:
        gateway = serve(start, port, "--no-worker")
        worker = start("worker", "--config", "worker.toml")
        worker.wait_for(f"using the embedded redis of process {gateway.pid}")
        keys = dev_keys(tmp_path)
        assert call(port, "POST", "/accounts", keys["operator"], ALICE)[0] == 201
        status, _ = call(port, "POST", "/challenge", keys["otp"], {"account_id": "alice"})
        assert status == 202
        # Only the standalone worker sends (the gateway runs --no-worker).
        worker.wait_for(r"\[console sms to \+33612345678\] Code [0-9]{6}")
        assert len(redis_pids(tmp_path / "var" / "redis")) == 1
        worker.stop()
        assert worker.exit_code() == 0
        # The worker that attached leaves the Redis running for its owner.
        assert call(port, "GET", "/accounts/alice", keys["operator"])[0] == 200


def test_a_second_serve_on_another_port_attaches(tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    with procs(tmp_path) as start:
        owner = serve(start, first)
        keys = dev_keys(tmp_path)
        assert call(first, "POST", "/accounts", keys["operator"], ALICE)[0] == 201
        other = serve(start, second)
        assert f"using the embedded redis of process {owner.pid}" in other.output()
        assert call(second, "GET", "/accounts/alice", keys["operator"])[0] == 200
        assert len(redis_pids(tmp_path / "var" / "redis")) == 1


def test_a_second_serve_on_the_same_port_is_refused_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    with procs(tmp_path) as start:
        owner = serve(start, port)
        again = start("serve", port=port)
        assert again.exit_code() == 2
        assert again.output().strip() == (
            f"configuration error: server.port: 127.0.0.1:{port} is already in use "
            "(another otp-gateway, or another program)"
        )
        assert owner.proc.poll() is None
        assert len(redis_pids(tmp_path / "var" / "redis")) == 1


def test_the_embedded_redis_dies_with_a_killed_gateway_and_the_next_start_has_the_data(
    tmp_path: Path,
) -> None:
    port = free_port()
    redis_dir = tmp_path / "var" / "redis"
    with procs(tmp_path) as start:
        gateway = serve(start, port)
        keys = dev_keys(tmp_path)
        assert call(port, "POST", "/accounts", keys["operator"], ALICE)[0] == 201
        assert len(redis_pids(redis_dir)) == 1
        gateway.proc.send_signal(signal.SIGKILL)
        gateway.proc.wait()
        wait_until(lambda: redis_pids(redis_dir) == [], what="the orphaned redis-server to exit")
        serve(start, port)
        assert call(port, "GET", "/accounts/alice", keys["operator"])[0] == 200
        assert len(redis_pids(redis_dir)) == 1


def test_a_start_stops_a_stale_redis_left_on_the_folder(tmp_path: Path) -> None:
    """A redis-server whose owner is gone (killed where no parent-death signal
    reaches it) is stopped before a new one starts on the same AOF."""
    data = tmp_path / "var"
    stale = RedisServer(data / "redis")
    stale.start()
    try:
        assert stale.process is not None
        state = {"port": stale.port, "password": stale.password, "pid": stale.process.pid}
        (data / "redis.json").write_text(json.dumps({**state, "owner": dead_pid()}))
        port = free_port()
        with procs(tmp_path) as start:
            gateway = serve(start, port)
            assert stale.process.wait(10) == 0  # stopped cleanly (SIGTERM), not killed
            assert redis_pids(data / "redis") == [read_state(data)["pid"]]
            assert read_state(data)["owner"] == gateway.pid
            # The new Redis reuses the port and password, for processes that attached.
            assert (read_state(data)["port"], read_state(data)["password"]) == (
                stale.port, stale.password,
            )  # fmt: skip
    finally:
        stale.stop()


def test_a_recorded_pid_that_is_not_the_folders_redis_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stop_stale({"pid": other.pid}, tmp_path / "redis")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not os.path.exists(f"/proc/{child.pid}/cwd")
    return child.pid
