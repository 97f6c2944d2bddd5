"""The alert rules and the dashboard, checked by Prometheus's own promtool and
against the metrics the gateway really exposes."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.embedded import RedisServer
from gateway.metrics import Metrics
from tests.support.config import make_config
from tests.support.ops import REPO, prometheus_tool

PROMETHEUS_DIR = REPO / "config" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
DASHBOARD = REPO / "config" / "grafana" / "dashboards" / "otp-gateway.json"
# Metrics that are Prometheus's own, not the gateway's.
PROMETHEUS_OWN = {"up", "ALERTS"}
_METRIC_RE = re.compile(r"\b(otp_[a-z0-9_]+|up|ALERTS)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_tool("promtool"), *args],
        capture_output=True, text=True, timeout=60, cwd=PROMETHEUS_DIR,
    )  # fmt: skip


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml, as a YAML reader (and Prometheus) reads it."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alert_rules()]


def alert_exprs() -> list[str]:
    """The `expr` of every rule, as text."""
    return [rule["expr"] for rule in alert_rules()]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def exposed_names(redis_url: str) -> set[str]:
    """Every sample name a gateway's registry can expose (with `_total`, `_bucket`...)."""
    metrics = Metrics()
    metrics.prime(make_config(redis_url))
    metrics.delivery_seconds.labels("p", "sms").observe(1)
    metrics.http_seconds.labels("/verify", "POST", "200").observe(0.01)
    metrics.sends_dropped.labels("expired").inc()
    metrics.provider_up.labels("p").set(1)
    text = metrics.render().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_checks_the_compose_prometheus_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        c for t in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]
    ]
    names = alert_names()
    assert {
        "OtpDeliveryFailureRatioHigh",
        "OtpQueueStalled",
        "OtpProviderDown",
        "OtpVerificationSuccessDrop",
        "OtpCountrySendSpike",
        "OtpRedisDown",
    } <= set(names)
    for name in names:
        expected = [case["exp_alerts"] for case in cases if case["alertname"] == name]
        assert any(expected), f"{name}: no test where it fires"
        assert [] in expected, f"{name}: no test where it stays quiet"


def test_rules_and_dashboard_use_only_exposed_metrics(redis_server: RedisServer) -> None:
    exposed = exposed_names(redis_server.url) | PROMETHEUS_OWN
    for expr in alert_exprs() + dashboard_exprs():
        for name in _METRIC_RE.findall(expr):
            assert name in exposed, f"{name} in {expr!r} is not exposed by the gateway"


def test_the_dashboard_covers_every_alert() -> None:
    shown = {n for e in dashboard_exprs() for n in _METRIC_RE.findall(e)}
    for expr in alert_exprs():
        assert set(_METRIC_RE.findall(expr)) <= shown, expr
    titles = " ".join(p["title"] for p in dashboard()["panels"] if p["type"] == "row")
    for name in alert_names():
        assert name in titles, f"no dashboard row names {name}"


def test_dashboard_is_well_formed() -> None:
    data = dashboard()
    assert data["uid"] == "otp-gateway"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    [variable] = data["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]
    provisioned = REPO / "config/grafana/provisioning/datasources/prometheus.yml"
    [source] = yaml.safe_load(provisioned.read_text())["datasources"]
    assert source["uid"] == variable["current"]["value"]


def test_every_alert_has_its_runbook_in_the_operations_guide() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    for rule in alert_rules():
        name = rule["alert"]
        assert f"\n### {name}\n" in guide, f"docs/operations.md has no section {name}"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
