"""A port in use stops start-up with one line naming it, exit 2 (gateway/listen.py):
the gateway's HTTP port, a worker's metrics port, the simulator's port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.listen import bind
from tests.support.ops import write_config
from tests.support.procs import procs


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def refused(tmp_path: Path, *args: str, port: int | None = None) -> str:
    with procs(tmp_path) as start:
        child = start(*args, port=port)
        assert child.exit_code() == 2, child.output()
        output = child.output()
    assert "Traceback" not in output
    [line] = output.strip().splitlines()
    return line


def test_the_gateway_port(tmp_path: Path, taken: int) -> None:
    config = write_config(tmp_path / "c.toml", "redis://127.0.0.1:1/0", [])
    line = refused(tmp_path, "serve", "--config", str(config), port=taken)
    assert line == (
        f"configuration error: server.port: 127.0.0.1:{taken} is already in use "
        "(another otp-gateway, or another program)"
    )


def test_the_worker_metrics_port(tmp_path: Path, taken: int) -> None:
    config = write_config(
        tmp_path / "c.toml", "redis://127.0.0.1:1/0", [], worker={"metrics_port": taken}
    )
    line = refused(tmp_path, "worker", "--config", str(config))
    assert line.startswith(f"configuration error: worker.metrics_port: 127.0.0.1:{taken} ")


def test_the_simulator_port(tmp_path: Path, taken: int) -> None:
    line = refused(tmp_path, "simulate", "twilio", "--port", str(taken))
    assert line.startswith(f"configuration error: --port: 127.0.0.1:{taken} is already in use")


def test_a_host_that_does_not_resolve_is_a_configuration_error_too() -> None:
    with pytest.raises(ConfigError, match=r"server\.port: cannot listen on no-such-host\.invalid:"):
        bind("no-such-host.invalid", 8080, "server.port")


def test_every_address_of_the_host_is_bound() -> None:
    sockets = bind("localhost", 0, "server.port")
    try:
        assert {s.family for s in sockets} <= {socket.AF_INET, socket.AF_INET6}
        assert all(s.getsockname()[1] != 0 for s in sockets)
    finally:
        for s in sockets:
            s.close()
