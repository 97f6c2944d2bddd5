"""Helpers for the operations tests: real `otp-gateway` child processes, their
configuration files, and the Prometheus binaries (Debian's `prometheus` package).

The Prometheus tests skip when `prometheus` or `promtool` is not on PATH, unless
OTP_TESTS_REQUIRE_PROMETHEUS is set (as .ci/run does): then they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.config import (
    ADMIN_KEY,
    METRICS_KEY,
    OPERATOR_KEY,
    OTP_KEY,
    SECRET,
    redis_section,
)
from tests.support.poll import poll

OTP_GATEWAY = str(Path(sys.executable).with_name("otp-gateway"))
REQUIRE_ENV = "OTP_TESTS_REQUIRE_PROMETHEUS"
REPO = Path(__file__).resolve().parents[2]
API_KEYS = [
    {"name": "front", "key": OTP_KEY, "scopes": ["otp"]},
    {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
    {"name": "ops", "key": OPERATOR_KEY, "scopes": ["operator"]},
    {"name": "prom", "key": METRICS_KEY, "scopes": ["metrics"]},
]


def prometheus_tool(name: str) -> str:
    """The path of `prometheus` or `promtool`; skip without it (fail when CI requires it)."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{name} is not on PATH and {REQUIRE_ENV} is set")
    pytest.skip(f"{name} is not on PATH (Debian: apt-get install prometheus)")


def to_toml(sections: dict[str, Any]) -> str:
    """Tables (dicts) and arrays of tables (lists of dicts) of JSON-compatible values."""
    text = ""
    for name, value in sections.items():
        tables = value if isinstance(value, list) else [value]
        header = f"[[{name}]]" if isinstance(value, list) else f"[{name}]"
        for table in tables:
            # JSON strings, numbers, booleans and arrays of them are valid TOML values.
            text += header + "\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    return text


def write_config(
    path: Path, redis_url: str, providers: list[dict[str, Any]], **sections: Any
) -> Path:
    """A complete configuration file; keyword arguments replace or add sections."""
    raw: dict[str, Any] = {
        "redis": {"url": redis_url},
        "security": {"secret": SECRET},
        "logging": {"level": "info", "format": "json"},
        "worker": {"metrics_port": 0},
        **sections,
        "api_keys": API_KEYS,
        "providers": providers,
    }
    raw["redis"] = redis_section(raw["redis"])  # a cluster:// URL: cluster_nodes
    path.write_text(to_toml(raw))
    return path


class Child:
    """One `otp-gateway ...` child process; its stdout and its stderr (the logs) kept
    in two files."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.out = log.with_suffix(".out")
        self.err = log.with_suffix(".err")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTPGW_")}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [OTP_GATEWAY, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def exit_code(self, within: float = 20) -> int:
        """Wait for the process to end (it must, within `within` seconds)."""
        return await asyncio.to_thread(self.proc.wait, within)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@contextmanager
def children(directory: Path) -> Iterator[Any]:
    """Yields `start(*args) -> Child`; kills whatever is still running at the end."""
    started: list[Child] = []

    def start(*args: str) -> Child:
        child = Child(list(args), directory / f"child{len(started)}.log")
        started.append(child)
        return child

    try:
        yield start
    finally:
        for child in started:
            child.ensure_dead()


async def wait_healthy(child: Child, base_url: str, within: float = 20) -> None:
    """Poll `base_url`/healthz until it answers 200 (the child must stay alive)."""
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            assert child.alive(), child.output()
            try:
                async with session.get(f"{base_url}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await poll(up, within=within, every=0.05, what=f"{base_url}/healthz")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
