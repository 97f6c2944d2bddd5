"""The command line: the embedded default end to end, and bad configuration."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.embedded import free_port
from tests.support.procs import redis_pids

CLI = [sys.executable, "-m", "gateway"]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=30,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_version_is_the_installed_distributions(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"otp-gateway {importlib.metadata.version('otp-gateway')}\n"


def test_the_package_says_it_is_typed_and_licensed() -> None:
    repo = Path(__file__).parent.parent
    assert (repo / "gateway" / "py.typed").is_file() and (repo / "providers" / "py.typed").is_file()
    assert "Apache License" in (repo / "LICENSE").read_text()
    assert "Version 2.0" in (repo / "LICENSE").read_text()


def test_bad_configuration_stops_with_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n[otp]\nttl_seconds = 9999\n')
    result = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and "otp.ttl_seconds" in lines[0]


def test_missing_secret_outside_embedded_default(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n')
    result = run_cli("worker", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "security.secret" in result.stderr


def test_console_provider_refused_in_production(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[redis]\nurl = "redis://127.0.0.1:1/0"\n[security]\nsecret = "' + "s" * 32 + '"\n'
        '[[providers]]\nname = "c"\nkind = "console"\n'
    )
    result = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "providers.c.kind" in result.stderr


class Served:
    def __init__(self, process: asyncio.subprocess.Process, port: int, cwd: Path) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.cwd = cwd
        self.lines: list[str] = []

    async def wait_for_line(self, pattern: str, seconds: float = 20) -> re.Match[str]:
        assert self.process.stdout is not None
        async with asyncio.timeout(seconds):
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"process ended; output: {self.lines}")
                self.lines.append(raw.decode())

    def keys(self) -> dict[str, str]:
        keys: dict[str, str] = json.loads((self.cwd / "var" / "dev-keys.json").read_text())
        return keys


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPGW_")}
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", cwd=tmp_path, env={**env, "OTPGW_PORT": str(port)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    server = Served(process, port, tmp_path)
    try:
        await server.wait_for_line("listening on")
        yield server
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_embedded_default_end_to_end(served: Served) -> None:
    keys = served.keys()
    ops = {"Authorization": f"Bearer {keys['operator']}"}
    otp = {"Authorization": f"Bearer {keys['otp']}"}
    account = {
        "account_id": "alice", "establishment": "Mairie", "last_name": "Martin",
        "first_name": "Alice", "email": "alice@example.org", "role": "user",
        "phone": "06 12 34 56 78",
    }  # fmt: skip
    async with aiohttp.ClientSession(served.base) as http:
        async with http.post("/accounts", json=account, headers=ops) as resp:
            assert resp.status == 201
        async with http.post("/challenge", json={"account_id": "alice"}, headers=otp) as resp:
            assert resp.status == 202
            challenge = await resp.json()
        match = await served.wait_for_line(r"\[console sms to \+33612345678\] Code ([0-9]{6}) ")
        body = {"challenge_id": challenge["challenge_id"], "code": match[1]}
        async with http.post("/verify", json=body, headers=otp) as resp:
            assert resp.status == 200
            assert (await resp.json())["verified"] is True
        async with http.get("/readyz") as resp:
            assert resp.status == 200
    # The embedded Redis keeps its data under ./var/ with an AOF.
    assert any((served.cwd / "var" / "redis").rglob("*.aof*"))


async def test_embedded_redis_stops_with_the_gateway(served: Served) -> None:
    pids = redis_pids(served.cwd / "var" / "redis")
    assert pids, "the embedded redis-server should be running"
    served.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await served.process.wait() == 0
    assert redis_pids(served.cwd / "var" / "redis") == []
