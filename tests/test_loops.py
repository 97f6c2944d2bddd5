"""The event loop: uvloop when installed (`[server] event_loop = "auto"`), asyncio's
on request or without it, said in the start-up log line; real processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.embedded import RedisServer, free_port
from gateway.errors import ConfigError
from gateway.loops import choose
from tests.support.ops import Child, children, wait_healthy, write_config
from tests.support.poll import wait_until

PROVIDER = {
    "name": "hook", "kind": "http", "channels": ["sms", "voice"],
    "url": "http://127.0.0.1:9/send", "secret": "s" * 32,
}  # fmt: skip
# `python -c` with uvloop made unimportable, as on a host without the extra.
WITHOUT_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; from gateway.cli import main; sys.exit(main())"
)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    with children(tmp_path) as start:
        yield start


def _config(tmp_path: Path, redis_url: str, port: int, event_loop: str | None = None) -> Path:
    server: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    if event_loop is not None:
        server["event_loop"] = event_loop
    return write_config(
        tmp_path / "gateway.toml", redis_url, [PROVIDER], server=server,
        worker={"metrics_port": port},
    )  # fmt: skip


def _loop_of(stderr: str, event: str) -> str | None:
    for line in stderr.splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("event") == event:
            return str(entry["loop"])
    return None


@pytest.mark.parametrize(
    ("command", "event_loop", "expected"),
    [
        ("serve", None, "uvloop"),
        ("serve", "asyncio", "asyncio"),
        ("worker", None, "uvloop"),
        ("worker", "asyncio", "asyncio"),
    ],
)
def test_the_start_up_line_names_the_loop_that_runs(
    spawn: Any,
    redis_server: RedisServer,
    tmp_path: Path,
    command: str,
    event_loop: str | None,
    expected: str,
) -> None:
    port = free_port()
    config = _config(tmp_path, redis_server.url, port, event_loop)
    child: Child = spawn(command, "--config", str(config), "--processes", "1")
    asyncio.run(wait_healthy(child, f"http://127.0.0.1:{port}"))
    event = "gateway listening" if command == "serve" else "worker started"
    wait_until(lambda: _loop_of(child.stderr(), event) is not None, what=event)
    assert _loop_of(child.stderr(), event) == expected
    child.terminate()
    assert asyncio.run(child.exit_code()) == 0, child.output()


def test_without_uvloop_auto_runs_asyncio_and_uvloop_is_refused(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    config = _config(tmp_path, redis_server.url, port, "uvloop")
    refused = subprocess.run(
        [sys.executable, "-c", WITHOUT_UVLOOP, "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "configuration error: server.event_loop: uvloop is not installed "
        '(pip install "otp-gateway[uvloop]")'
    )
    config = _config(tmp_path, redis_server.url, port, "auto")
    argv = [sys.executable, "-c", WITHOUT_UVLOOP, "serve", "--config", str(config)]
    with (tmp_path / "auto.err").open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        wait_until(
            lambda: _loop_of((tmp_path / "auto.err").read_text(), "gateway listening") is not None,
            what="the start-up line",
        )
        assert _loop_of((tmp_path / "auto.err").read_text(), "gateway listening") == "asyncio"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_the_setting_is_checked_and_chooses_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nevent_loop = "trio"\n[security]\nsecret = "' + "s" * 40 + '"\n')
    with pytest.raises(ConfigError, match=r"server\.event_loop"):
        load_config(str(path))
    assert choose("auto").name == choose("uvloop").name == "uvloop"
    loop = choose("asyncio").new()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
