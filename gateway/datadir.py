"""One data folder, one embedded Redis: the first process starts it, the others attach.

The embedded default keeps its Redis data and AOF under `<data_dir>/redis/`.
Two redis-servers on one AOF corrupt it, and a worker with a Redis of its own
never sees the codes the gateway queues. So:

- the process that starts the embedded Redis (the *owner*) holds an exclusive
  `flock` on `<data_dir>/redis.lock` for as long as it runs (the kernel drops it
  when the process dies, however it dies), and records the Redis's port,
  password and pid in `<data_dir>/redis.json` (mode 0600);
- a later `serve` or `worker` on the same folder finds the lock taken and
  attaches to that Redis instead of starting one; it never stops it;
- an owner keeps the port and password of the last run when it can, so a
  process that attached reconnects to the owner's next Redis by itself;
- before starting, an owner stops any redis-server still running on the folder
  (a stale one: its owner died where the parent-death signal does not reach,
  see `gateway/embedded.py`), identified by its pid *and* its working directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.embedded import RedisServer, free_port, ping
from gateway.errors import ConfigError

log = logging.getLogger("otp_gateway")
ATTACH_SECONDS = 15.0  # an owner starting at the same moment is ready well within this


@contextlib.contextmanager
def embedded_redis_url(data: Path, appendfsync: str) -> Iterator[str]:
    """The URL of the folder's Redis: started here, or the running one's."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = os.open(data / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if _try_lock(lock):
            with _owned(data, appendfsync) as url:
                yield url
        else:
            yield _attach(data)
    finally:
        os.close(lock)  # releases the lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _owned(data: Path, appendfsync: str) -> Iterator[str]:
    state = read_state(data)
    stop_stale(state, data / "redis")
    port = state.get("port")
    server = RedisServer(
        data / "redis",
        port=port if isinstance(port, int) and _port_free(port) else free_port(),
        password=str(state.get("password") or secrets.token_urlsafe(24)),
        appendfsync=appendfsync,
    )
    server.start()
    assert server.process is not None
    redis = {"port": server.port, "password": server.password}
    _write_state(data, {**redis, "pid": server.process.pid, "owner": os.getpid()})
    try:
        yield server.url
    finally:
        server.stop()
        _write_state(data, redis)  # no pid: nothing runs; the port and password stay


def _attach(data: Path) -> str:
    """The running owner's Redis; waits for an owner that is starting it now."""
    deadline = time.monotonic() + ATTACH_SECONDS
    while True:
        state = read_state(data)
        owner, port, password = state.get("owner"), state.get("port"), state.get("password")
        if _alive(owner) and isinstance(port, int) and ping(port, str(password)):
            print(f"using the embedded redis of process {owner} ({data})", flush=True)
            return f"redis://:{password}@127.0.0.1:{port}/0"
        if time.monotonic() > deadline:
            raise ConfigError(
                "redis.data_dir",
                f"{data} is in use by process {owner or '?'} (lock {data / 'redis.lock'}) "
                "and its Redis does not answer; stop that process or use another data_dir",
            )
        time.sleep(0.05)


def read_state(data: Path) -> dict[str, Any]:
    """`<data_dir>/redis.json`, or {} when missing or unreadable."""
    try:
        state = json.loads((data / "redis.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(data: Path, state: dict[str, Any]) -> None:
    # Written aside then renamed: a reader never sees half a file.
    temporary = data / "redis.json.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    temporary.replace(data / "redis.json")


def stop_stale(state: dict[str, Any], directory: Path) -> None:
    """Stop the redis-server recorded in `state` if it still runs on `directory`."""
    pid = state.get("pid")
    if not isinstance(pid, int) or not is_redis_on(pid, directory):
        return
    log.warning("stopping a stale embedded redis-server", extra={"pid": pid})
    os.kill(pid, signal.SIGTERM)  # it flushes its AOF and exits
    deadline = time.monotonic() + 10
    while _alive(pid) and is_redis_on(pid, directory):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += 10
        time.sleep(0.02)


def is_redis_on(pid: int, directory: Path) -> bool:
    """True when `pid` is a redis-server whose working directory is `directory`
    (redis-server chdirs to its --dir). A reused pid is some other program."""
    proc = Path("/proc") / str(pid)
    try:
        executable = Path(os.readlink(proc / "exe")).name
        cwd = Path(os.readlink(proc / "cwd"))
    except OSError:
        return False
    return executable.startswith("redis-server") and cwd == directory.resolve()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
