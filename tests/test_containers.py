"""The container files: Dockerfile, docker-compose.yml, config/docker/, Grafana
provisioning. Docker does not run in the suite: these tests check the files'
structure and that they agree with each other and with the code."""

from __future__ import annotations

import re
from typing import Any

import yaml

from gateway.config import load_config
from gateway.provider import build_providers
from gateway.runtime import provider_context
from tests.support.ops import REPO

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
GATEWAY_TOML = REPO / "config" / "docker" / "gateway.toml"
OTP_SERVICES = ("gateway", "worker", "twilio")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def commands_of(service: str) -> list[str]:
    command: list[str] = services()[service]["command"]
    return command


def expand(value: str) -> str:
    """`${VAR:-default}` -> default, as compose fills it without a .env."""
    return re.sub(r"\$\{([A-Z0-9_]+):-([^}]*)\}", lambda m: m[2], value)


# --- docker-compose.yml ---------------------------------------------------------------


def test_compose_brings_up_the_whole_stack() -> None:
    assert set(services()) == {
        "redis", "gateway", "worker", "twilio", "prometheus", "grafana", "mailpit",
    }  # fmt: skip
    commands = {name: services()[name]["command"] for name in OTP_SERVICES}
    assert commands["gateway"][0] == "serve" and "--no-worker" in commands["gateway"]
    assert commands["worker"][0] == "worker"
    assert commands["twilio"][:6] == ["simulate", "twilio", "--host", "0.0.0.0", "--port", "8081"]
    for name in ("gateway", "worker"):
        assert commands[name][-2:] == ["--config", "/etc/otp-gateway/gateway.toml"]
        assert (
            "./config/docker/gateway.toml:/etc/otp-gateway/gateway.toml:ro"
            in (services()[name]["volumes"])
        )


def test_compose_builds_the_image_once_for_every_otp_service() -> None:
    gateway = services()["gateway"]
    assert (gateway["build"], gateway["image"]) == (".", "otp-gateway:local")
    for name in ("worker", "twilio"):
        service = services()[name]
        # No build of their own (it would build the same image again), and no
        # pull of a name that only exists locally.
        assert "build" not in service, name
        assert (service["image"], service["pull_policy"]) == ("otp-gateway:local", "never")
        assert "gateway" in service["depends_on"], name
    built = [name for name, service in services().items() if "build" in service]
    assert built == ["gateway"]


def test_compose_publishes_ports_on_loopback_only_by_default() -> None:
    """Every secret has a development default: nothing is reachable from the
    network until the operator says so (PUBLISH_ADDRESS)."""
    published = {
        name: [expand(port) for port in service.get("ports", [])]
        for name, service in services().items()
    }
    assert published == {
        "redis": [], "gateway": ["127.0.0.1:8080:8080"], "worker": [], "twilio": [],
        "prometheus": ["127.0.0.1:9090:9090"], "grafana": ["127.0.0.1:3000:3000"],
        "mailpit": ["127.0.0.1:8025:8025"],
    }  # fmt: skip
    for service in services().values():
        for port in service.get("ports", []):
            assert port.startswith("${PUBLISH_ADDRESS:-127.0.0.1}:"), port


def test_compose_redis_keeps_an_aof_fsynced_always() -> None:
    redis = services()["redis"]
    args = redis["command"]
    assert args[0] == "redis-server"
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "always"
    assert pairs["--maxmemory-policy"] == "noeviction"
    # Without a cap, noeviction never applies: Redis grows until the host swaps.
    assert re.fullmatch(r"[1-9][0-9]*(mb|gb)", expand(pairs["--maxmemory"]))
    assert "redis-data:/data" in redis["volumes"]
    password = expand(pairs["--requirepass"])
    for name in ("gateway", "worker"):
        url = expand(services()[name]["environment"]["OTPGW_REDIS_URL"])
        assert url == f"redis://:{password}@redis:6379/0"
    assert expand(redis["environment"]["REDISCLI_AUTH"]) == password


def test_compose_references_resolve() -> None:
    data = compose()
    for name, service in services().items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services(), (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), (name, source)
            else:
                assert source in data["volumes"], (name, source)


def test_compose_shutdown_leaves_time_to_finish() -> None:
    for name in ("gateway", "worker"):
        grace = services()[name]["stop_grace_period"]
        # The gateway waits up to 30 s for requests in flight (cli.serve).
        assert int(grace.removesuffix("s")) > 30, name
    assert services()["worker"]["environment"]["HEALTHCHECK_URL"].endswith(":9101/healthz")


def test_compose_prometheus_and_grafana_get_the_rules_and_the_dashboard() -> None:
    prometheus = services()["prometheus"]
    assert "./config/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    assert scrape["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in scrape["scrape_configs"][:2]}
    assert (jobs["otp-gateway"]["names"], jobs["otp-gateway"]["port"]) == (["gateway"], 8080)
    assert (jobs["otp-worker"]["names"], jobs["otp-worker"]["port"]) == (["worker"], 9101)

    grafana = services()["grafana"]
    assert "./config/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./config/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana["volumes"]
    provider = yaml.safe_load(
        (REPO / "config/grafana/provisioning/dashboards/otp-gateway.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    source = yaml.safe_load(
        (REPO / "config/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert source["url"] == "http://prometheus:9090"


# --- config/docker/gateway.toml -------------------------------------------------------


def test_the_compose_configuration_loads_with_the_compose_environment() -> None:
    environment = {
        k: expand(v) for k, v in services()["gateway"]["environment"].items()
    }  # what compose passes when no .env overrides the defaults
    config = load_config(str(GATEWAY_TOML), env=environment)
    assert config.redis.url == environment["OTPGW_REDIS_URL"]
    assert config.server.host == "0.0.0.0" and config.server.port == 8080
    assert config.server.public_url == "http://gateway:8080"  # the simulator's callbacks
    assert config.worker.metrics_port == 9101
    assert (config.smtp.host, config.smtp.port) == ("mailpit", 1025)
    assert config.security_secret is not None
    [twilio] = build_providers(config.providers, provider_context(config))  # options valid
    assert twilio.name == "twilio"
    # The simulator answers at base_url, with the account SID and token the provider uses.
    options = config.providers[0].options
    assert options["base_url"] == "http://twilio:8081"
    command = commands_of("twilio")
    simulator = dict(zip(command[2::2], command[3::2], strict=True))
    assert simulator["--account-sid"] == options["account_sid"]
    assert expand(simulator["--auth-token"]) == options["auth_token"]


def test_compose_gateway_and_worker_share_one_environment() -> None:
    gateway = services()["gateway"]["environment"]
    worker = dict(services()["worker"]["environment"])
    assert worker.pop("HEALTHCHECK_URL")
    assert worker == gateway


# --- Dockerfile ---------------------------------------------------------------------------


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.MULTILINE)[1:]


def test_dockerfile_builds_in_one_stage_and_runs_in_another() -> None:
    build, final = stages()
    assert build.startswith("python:3.11-slim") and " AS build" in build.splitlines()[0]
    assert "build-essential" in build
    assert final.startswith("python:3.11-slim")
    for tool in ("build-essential", "gcc", "apt-get install", "pip install"):
        assert tool not in final, tool
    assert "COPY --from=build /opt/otp-gateway /opt/otp-gateway" in final


def test_dockerfile_runs_as_a_user_with_a_healthcheck() -> None:
    final = stages()[1]
    [user] = re.findall(r"^USER (\S+)$", final, re.MULTILINE)
    assert user not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*HEALTHCHECK_URL", final, re.MULTILINE)
    assert "ENV PATH=/opt/otp-gateway/bin:$PATH" in final
    assert 'ENTRYPOINT ["otp-gateway"]' in final
    assert 'CMD ["serve", "--config", "/etc/otp-gateway/gateway.toml"]' in final


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests"} <= set(ignored)
