"""`otp-gateway`: serve the API (with an in-process worker), or run workers only.

    otp-gateway --version
    otp-gateway serve [--config FILE] [--no-worker]
    otp-gateway worker [--config FILE]
    otp-gateway simulate twilio [--port N]   (a Twilio-compatible API, for demos and tests)
    otp-gateway migrate [--config FILE]      (round-1 data to the hash-slot key layout)

Without a config file and without a Redis URL it starts the embedded default:
a private redis-server under ./var/, the console provider, and development
API keys printed at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import ApiKey, Config, ProviderConfig, Secret, load_config
from gateway.datadir import embedded_redis_url
from gateway.errors import ConfigError
from gateway.listen import bind
from gateway.logs import setup_logging

log = logging.getLogger("otp_gateway")
DEV_SCOPES = ("otp", "admin", "operator", "metrics")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otp-gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"otp-gateway {_version()}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the HTTP API (and a send worker)")
    serve.add_argument("--config", help="TOML file (default: $OTPGW_CONFIG, else embedded)")
    serve.add_argument("--no-worker", action="store_true", help="do not run a send worker")
    worker = sub.add_parser("worker", help="run send workers only")
    worker.add_argument("--config", help="TOML file (default: $OTPGW_CONFIG)")
    _simulate_parser(sub)
    migrate = sub.add_parser(
        "migrate", help="move round-1 data to the hash-slot key layout (gateways stopped)"
    )
    migrate.add_argument("--config", help="TOML file (default: $OTPGW_CONFIG, else embedded)")
    return parser


def _version() -> str:
    """The installed distribution's version (pyproject.toml's `version`)."""
    try:
        return importlib.metadata.version("otp-gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _simulate_parser(sub: Any) -> None:
    from gateway.simulator.twilio import DEFAULT_SID, DEFAULT_TOKEN

    sim = sub.add_parser("simulate", help="run a provider simulator (docs/providers.md)")
    sim.add_argument("vendor", choices=["twilio"])
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.add_argument("--account-sid", default=DEFAULT_SID)
    sim.add_argument("--auth-token", default=DEFAULT_TOKEN)
    sim.add_argument("--ring-seconds", type=float, default=2.0, help="ring time before outcomes")
    sim.add_argument("--seed", type=int, default=None, help="seed of the failure mix")


def simulate(args: argparse.Namespace) -> int:
    from gateway.simulator.twilio import TwilioSimulator
    from gateway.simulator.twilio import serve as serve_simulator

    simulator = TwilioSimulator(
        args.account_sid, args.auth_token, ring_seconds=args.ring_seconds, seed=args.seed
    )
    serve_simulator(args.host, args.port, simulator)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    try:
        if command == "simulate":
            return simulate(args)
        config = load_config(getattr(args, "config", None))
        setup_logging(config.logging)
        # Ports first: a port in use stops start-up before Redis or a worker starts.
        sockets = [] if command == "migrate" else _listen(command, config)
        with embedded_redis(config) as config:
            if command == "migrate":
                from gateway.migrate import run

                return run(config)
            if command == "worker":
                from gateway.worker_main import run_worker

                freeze_startup_objects()
                asyncio.run(run_worker(config, sockets))
            else:
                serve(config, sockets, run_worker=not getattr(args, "no_worker", False))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def _listen(command: str, config: Config) -> list[socket.socket]:
    if command == "worker":
        if not config.worker.metrics_port:
            return []
        return bind(config.server.host, config.worker.metrics_port, "worker.metrics_port")
    return bind(config.server.host, config.server.port, "server.port")


def freeze_startup_objects() -> None:
    """Keep what start-up loaded (modules, phonenumbers' metadata, config: some
    60k objects that live as long as the process) out of the collector's
    full passes. Each such pass otherwise scans them all, about 20 ms during
    which every request in flight waits: the bulk of a busy gateway's p99."""
    gc.collect()
    gc.freeze()


def serve(config: Config, sockets: list[socket.socket], *, run_worker: bool) -> None:
    from gateway.app import create_app

    app = create_app(config, run_worker=run_worker)
    freeze_startup_objects()
    address = f"http://{config.server.host}:{config.server.port}"

    def announce(_: str) -> None:
        # Called by aiohttp once the socket is bound: scripts can wait for this line.
        print(f"otp-gateway listening on {address}", flush=True)
        log.info("gateway listening", extra={"address": address, "worker": run_worker})

    web.run_app(
        app, sock=sockets, print=announce, access_log=None, shutdown_timeout=30,
    )  # fmt: skip


@contextlib.contextmanager
def embedded_redis(config: Config) -> Iterator[Config]:
    """On the embedded default, the data folder's private redis-server (started
    here, or the one another process of the folder runs) and the dev settings."""
    if not config.embedded:
        yield config
        return
    data = Path(config.redis.data_dir)
    with embedded_redis_url(data, config.redis.appendfsync) as url:
        yield _development_settings(config, data, url)


def _development_settings(config: Config, data: Path, url: str) -> Config:
    secret = config.security_secret or Secret(
        _kept(data / "secret", lambda: secrets.token_urlsafe(48))
    )
    keys = config.api_keys or _dev_keys(data)
    providers = config.providers
    if not providers and config.server.development:
        providers = (ProviderConfig("console", "console", ("sms", "voice"), {}),)
    redis = replace(config.redis, url=url)
    return replace(config, redis=redis, security_secret=secret, api_keys=keys, providers=providers)


def _kept(path: Path, make: object) -> str:
    """A value generated once and kept in a private file."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    assert callable(make)
    value: str = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def _dev_keys(data: Path) -> tuple[ApiKey, ...]:
    raw = _kept(
        data / "dev-keys.json",
        lambda: json.dumps({s: f"dev-{s}-{secrets.token_urlsafe(18)}" for s in DEV_SCOPES}),
    )
    keys = json.loads(raw)
    print("development API keys (kept in", data / "dev-keys.json", "):", flush=True)
    for scope in DEV_SCOPES:
        print(f"  {scope:9} {keys[scope]}", flush=True)
    return tuple(ApiKey(f"dev-{s}", Secret(keys[s]), frozenset({s})) for s in DEV_SCOPES)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
