"""`otp-gateway`: serve the API (with an in-process worker), or run workers only.

    otp-gateway --version
    otp-gateway serve [--config FILE] [--no-worker] [--processes N|auto]
    otp-gateway worker [--config FILE] [--processes N|auto]
    otp-gateway simulate twilio [--port N]   (a Twilio-compatible API, for demos and tests)
    otp-gateway simulate smpp [--port N]     (an SMPP 3.4 SMSC, for demos and tests)
    otp-gateway migrate [--config FILE]      (round-1 data to the hash-slot key layout)

Without a config file and without a Redis URL it starts the embedded default:
a private redis-server under ./var/, the console provider, and development
API keys printed at start-up.

`--processes N` (`auto`: one per core) runs N processes on the one port,
under a supervisor (`gateway/supervisor.py`); 1, the default, runs one
process and no supervisor, exactly as before.
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
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import ApiKey, Config, ProviderConfig, Secret, load_config
from gateway.datadir import embedded_redis_url
from gateway.errors import ConfigError
from gateway.listen import bind, bind_group
from gateway.logs import setup_logging
from gateway.loops import EventLoop, choose
from gateway.supervisor import shared_metrics, supervise

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
    for command in (serve, worker):
        command.add_argument(
            "--processes", type=process_count, default=1, metavar="N",
            help="processes on the one port, supervised (default 1; auto: one per core)",
        )  # fmt: skip
    _simulate_parser(sub)
    migrate = sub.add_parser(
        "migrate", help="move round-1 data to the hash-slot key layout (gateways stopped)"
    )
    migrate.add_argument("--config", help="TOML file (default: $OTPGW_CONFIG, else embedded)")
    return parser


def process_count(text: str) -> int:
    """`--processes`: a whole number from 1, or `auto` (os.cpu_count())."""
    if text == "auto":
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of processes from 1, or auto")
    return int(text)


def _version() -> str:
    """The installed distribution's version (pyproject.toml's `version`)."""
    try:
        return importlib.metadata.version("otp-gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _simulate_parser(sub: Any) -> None:
    from gateway.simulator.twilio import DEFAULT_SID, DEFAULT_TOKEN

    sim = sub.add_parser("simulate", help="run a provider simulator (docs/providers.md)")
    sim.add_argument("vendor", choices=["twilio", "smpp"])
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=None, help="default: twilio 8090, smpp 2775")
    sim.add_argument("--account-sid", default=DEFAULT_SID)
    sim.add_argument("--auth-token", default=DEFAULT_TOKEN)
    sim.add_argument("--ring-seconds", type=float, default=2.0, help="ring time before outcomes")
    sim.add_argument("--seed", type=int, default=None, help="seed of the failure mix")
    sim.add_argument("--system-id", default="otpgw", help="smpp: the bind's system_id")
    sim.add_argument("--password", default="secret12", help="smpp: the bind's password")
    sim.add_argument("--receipt-delay", type=float, default=1.0, help="smpp: seconds to receipt")


def simulate(args: argparse.Namespace) -> int:
    from gateway.simulator.twilio import TwilioSimulator
    from gateway.simulator.twilio import serve as serve_simulator

    if args.vendor == "smpp":
        from gateway.simulator import smpp

        smsc = smpp.run(args.host, args.port or 2775, args.system_id, args.password,
                        args.receipt_delay)  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(smsc)
        return 0
    args.port = args.port or 8090
    simulator = TwilioSimulator(
        args.account_sid, args.auth_token, ring_seconds=args.ring_seconds, seed=args.seed
    )
    serve_simulator(args.host, args.port, simulator)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    processes: int = getattr(args, "processes", 1)
    try:
        if command == "simulate":
            return simulate(args)
        config = load_config(getattr(args, "config", None))
        setup_logging(config.logging)
        loop = choose(config.server.event_loop)
        # Ports first: a port in use stops start-up before Redis or a worker starts.
        groups = [[]] if command == "migrate" else _listen(command, config, processes)
        with embedded_redis(config) as config:
            if command == "migrate":
                from gateway.migrate import run as migrate

                return migrate(config)
            run = _runner(command, config, loop, no_worker=getattr(args, "no_worker", False))
            if processes == 1:
                return run(groups[0])
            return _supervised("worker" if command == "worker" else "api", run, groups)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2


def _listen(command: str, config: Config, processes: int) -> list[list[socket.socket]]:
    """One set of listening sockets per process (SO_REUSEPORT when more than one)."""
    host = config.server.host
    if command == "worker":
        port, key = config.worker.metrics_port, "worker.metrics_port"
        if not port:
            return [[] for _ in range(processes)]
    else:
        port, key = config.server.port, "server.port"
    if processes == 1:
        return [bind(host, port, key)]
    return bind_group(host, port, key, processes)


def _runner(
    command: str, config: Config, loop: EventLoop, *, no_worker: bool
) -> Callable[[list[socket.socket]], int]:
    """What one process runs on its sockets, to its exit status."""

    def run(sockets: list[socket.socket]) -> int:
        try:
            if command == "worker":
                from gateway.worker_main import run_worker

                freeze_startup_objects()
                with asyncio.Runner(loop_factory=loop.new) as runner:
                    runner.run(run_worker(config, sockets, loop=loop.name))
            else:
                serve(config, sockets, run_worker=not no_worker, loop=loop)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        return 0

    return run


def _supervised(
    role: str, run: Callable[[list[socket.socket]], int], groups: list[list[socket.socket]]
) -> int:
    """N processes under a supervisor; their metrics in one multiprocess folder."""
    with shared_metrics():
        # Imported once PROMETHEUS_MULTIPROC_DIR is set: prometheus-client reads it at import.
        from gateway.metrics import process_gone, restart_counter

        restarts = restart_counter(role)
        return supervise(role, run, groups, on_exit=process_gone, on_restart=restarts.inc)


def freeze_startup_objects() -> None:
    """Keep what start-up loaded (modules, phonenumbers' metadata, config: some
    60k objects that live as long as the process) out of the collector's
    full passes. Each such pass otherwise scans them all, about 20 ms during
    which every request in flight waits: the bulk of a busy gateway's p99."""
    gc.collect()
    gc.freeze()


def serve(
    config: Config, sockets: list[socket.socket], *, run_worker: bool, loop: EventLoop | None = None
) -> None:
    from gateway.app import create_app

    loop = loop or choose(config.server.event_loop)

    app = create_app(config, run_worker=run_worker)
    freeze_startup_objects()
    address = f"http://{config.server.host}:{config.server.port}"

    def announce(_: str) -> None:
        # Called by aiohttp once the socket is bound: scripts can wait for this line.
        print(f"otp-gateway listening on {address}", flush=True)
        log.info(
            "gateway listening",
            extra={"address": address, "worker": run_worker, "loop": loop.name, "pid": os.getpid()},
        )

    web.run_app(
        app, sock=sockets, print=announce, access_log=None, shutdown_timeout=30, loop=loop.new(),
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
