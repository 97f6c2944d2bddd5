"""A real Prometheus server scrapes a running gateway and a standalone worker.

Prometheus (Debian's `prometheus` binary) runs on loopback with a 1 s scrape
interval and the alert rules; the test drives traffic through the gateway and
reads the counters back through Prometheus's HTTP query API.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.embedded import RedisServer, free_port
from tests.support.gateway import GatewayFactory, add_account
from tests.support.httpfake import Stub
from tests.support.ops import children, prometheus_tool, wait_healthy, write_config
from tests.support.otp import challenge, verify, wrong
from tests.support.poll import poll
from tests.test_prometheus_rules import ALERTS, alert_names, dashboard_exprs


class Prometheus:
    """A `prometheus` server process and a client for its query API."""

    def __init__(self, directory: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = directory / "prometheus.yml"
        config.write_text(json.dumps(_config(targets)))  # JSON is YAML
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    prometheus_tool("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.session = aiohttp.ClientSession(self.base)

    async def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        try:
            async with self.session.get("/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectionError:
            return False

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(f"/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        assert body["status"] == "success", body
        return body["data"]

    async def value(self, promql: str) -> float | None:
        """The value of a query returning one series, or None when it returns none."""
        result = (await self.api("query", query=promql))["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    async def close(self) -> None:
        await self.session.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _config(targets: dict[str, int]) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": "500ms",
            "scrape_timeout": "500ms",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    with children(tmp_path) as start:
        yield start


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Prometheus] = []

    async def start(targets: dict[str, int]) -> Prometheus:
        directory = tmp_path / "prometheus"
        directory.mkdir()
        server = Prometheus(directory, targets)
        made.append(server)
        await poll(server.ready, within=20, every=0.05, what="prometheus /-/ready")
        return server

    yield start
    for server in made:
        await server.close()


async def _all_equal(prom: Prometheus, expected: dict[str, float]) -> bool:
    for promql, value in expected.items():
        if await prom.value(promql) != value:
            return False
    return True


async def test_prometheus_scrapes_gateway_and_worker_and_sees_the_counters_move(
    make_gateway: GatewayFactory,
    sink: Stub,
    spawn: Any,
    started: Any,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    prometheus_tool("prometheus")
    providers = [sink.provider("hook")]
    worker_port = free_port()
    config = write_config(
        tmp_path / "worker.toml", redis_server.url, providers,
        worker={"metrics_port": worker_port},
    )  # fmt: skip
    worker = spawn("worker", "--config", str(config))
    gw = await make_gateway(providers=providers)
    await wait_healthy(worker, f"http://127.0.0.1:{worker_port}")
    assert gw.client.port is not None
    prom = await started({"otp-gateway": gw.client.port, "otp-worker": worker_port})

    queued = 'sum(otp_challenges_total{job="otp-gateway",outcome="queued"})'
    before = {
        'sum(up{job=~"otp-gateway|otp-worker"})': 2,
        queued: 0,  # primed at 0: Prometheus sees the series before any traffic
        'sum(otp_deliveries_total{job="otp-worker",outcome="accepted"})': 0,
    }
    await poll(lambda: _all_equal(prom, before), within=20, every=0.2, what=f"{before}")

    await add_account(gw)
    created = await challenge(gw)
    await poll(lambda: bool(sink.codes(created["challenge_id"])), what="the send")
    code = sink.codes(created["challenge_id"])[0]
    assert (await verify(gw, created["challenge_id"], wrong(code))).status == 422
    assert (await verify(gw, created["challenge_id"], code)).status == 200

    after = {
        queued: 1,
        'sum(otp_verifications_total{job="otp-gateway",outcome="verified"})': 1,
        'sum(otp_verifications_total{job="otp-gateway",outcome="invalid_code"})': 1,
        'sum(otp_sends_by_country_total{job="otp-gateway",country="FR"})': 1,
        'sum(otp_deliveries_total{job="otp-worker",outcome="accepted"})': 1,
        'sum(otp_delivery_seconds_count{job="otp-worker",provider="hook"})': 1,
        'sum(otp_http_request_duration_seconds_count{route="/challenge",status="202"})': 1,
        "min(otp_redis_up)": 1,
        "count(otp_redis_up)": 2,
        'max(otp_queue_depth{job="otp-worker"})': 0,
    }
    await poll(lambda: _all_equal(prom, after), within=20, every=0.2, what=f"{after}")


async def test_prometheus_loads_the_rules_and_runs_every_dashboard_query(
    make_gateway: GatewayFactory, started: Any
) -> None:
    prometheus_tool("prometheus")
    gw = await make_gateway()
    assert gw.client.port is not None
    prom = await started({"otp-gateway": gw.client.port})

    async def evaluated() -> bool:
        groups = (await prom.api("rules"))["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return sorted(r["name"] for r in rules) == sorted(alert_names()) and all(
            r["health"] == "ok" for r in rules
        )

    await poll(evaluated, within=20, every=0.2, what="every alert rule evaluated, health ok")
    for expr in dashboard_exprs():
        await prom.api("query", query=expr.replace("$__rate_interval", "1m"))
