"""otp-gateway benchmark: gateway calls as ratios of a bare aiohttp+Redis baseline.

    python bench/run.py [--seconds 10] [--concurrency 50] [--quick] [--skip-always]
                        [--profile DIR] [--worker process|inline] [--event-loop uvloop|asyncio]

Starts, on 127.0.0.1 only and all in a temporary directory: a redis-server
(gateway.embedded.RedisServer), the provider sink (bench/sink.py), the
baseline app (bench/bare.py) and the gateway (`otp-gateway serve`), then
drives them with bench/load.py in its own process. Prints throughput and
latency per call next to the baseline measured in the same run, the targets'
PASS/FAIL, and the Redis memory held per live challenge. See bench/README.md.
Everything it starts is stopped before it exits, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json import loads as read_json_bytes
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import (  # noqa: E402
    HOST,
    account_body,
    account_id,
    phone_for,
    proc_cpu_seconds,
    read_json,
    write_json,
)

from gateway import keys  # noqa: E402
from gateway.accounts import AccountStore, NewAccount  # noqa: E402
from gateway.accounts.audit import Who  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.crypto import Keyring, open_code  # noqa: E402
from gateway.datastore import redis_client  # noqa: E402
from gateway.embedded import RedisServer, free_port  # noqa: E402
from gateway.phones import LineType, PhonePolicy, parse_phone  # noqa: E402
from gateway.runtime import phone_policy  # noqa: E402

# The targets (bench/README.md).
VERIFY_MIN_RATIO = 0.60
CHALLENGE_MIN_RATIO = 0.50
P99_MAX_MS = 25.0
BYTES_PER_CHALLENGE_MAX = 512

GENEROUS = "1000000/1m"
TTL_SECONDS = 600  # the longest allowed: the /verify pool must outlive the whole run
# Phone number ranges per account group, so that no two accounts share a number.
FLOW_PHONES, MEMORY_PHONES, CHALLENGE_PHONES = 0, 1_000_000, 2_000_000
# The memory phase's live challenges become the /verify pools, a slice per
# setting. /challenge gets accounts of its own, this many per second of phase
# (warm-up included), each used once: a second challenge on an account would
# replace the first, whose send the worker would then drop instead of making.
CHALLENGE_ACCOUNTS_PER_SECOND = 6000
# The paced phases: calls at this fixed rate over the same connections, for
# latency at a given load rather than at saturation (everysec only).
PACED_RATE = 2000.0
DIRECT_CONNECTIONS = 32  # Redis connections per process writing accounts directly
DIRECT_PROCESSES = 2
BENCH_ACTOR = Who("operator:bench", "bench")


@dataclass(frozen=True)
class Options:
    seconds: float
    concurrency: int
    flow_accounts: int
    memory_challenges: int
    always: bool
    profile: Path | None
    worker: str  # "process": `otp-gateway worker` beside a --no-worker gateway; "inline"
    paced_rate: float  # calls/s of the paced phases (0: none)
    rounds: int = 1  # bare, /challenge and /verify take turns this many times per setting
    event_loop: str = "uvloop"  # the gateway's [server] event_loop, and bare's --loop


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="per phase (default 10)")
    parser.add_argument("--concurrency", type=int, default=50, help="connections (default 50)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s phases, 10k memory")
    parser.add_argument(
        "--skip-always", action="store_true", help='no repeat under appendfsync "always"'
    )
    parser.add_argument("--profile", type=Path, help="py-spy the gateway's phases into DIR")
    parser.add_argument(
        "--worker", choices=("process", "inline"), default="process",
        help="sends by a worker process beside the gateway (default), or by the gateway's own",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=None,
        help="bare, /challenge and /verify take turns this many times (default 3, 1 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--paced-rate", type=float, default=PACED_RATE,
        help=f"calls/s of the paced (open-loop) phases, 0 for none (default {PACED_RATE:g})",
    )  # fmt: skip
    parser.add_argument(
        "--event-loop", choices=("uvloop", "asyncio"), default=default_loop(),
        help="the event loop of the gateway and of bare alike (default: uvloop when installed)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if not 0.5 <= seconds <= 120 or not 1 <= args.concurrency <= 1000 or not 1 <= rounds <= 10:
        parser.error("--seconds must be 0.5-120, --concurrency 1-1000, --rounds 1-10")
    return Options(
        seconds=seconds,
        concurrency=args.concurrency,
        flow_accounts=500 if args.quick else 2000,
        memory_challenges=20_000 if args.quick else 100_000,
        always=not args.skip_always,
        profile=args.profile,
        worker=args.worker,
        paced_rate=args.paced_rate,
        rounds=rounds,
        event_loop=args.event_loop,
    )


def default_loop() -> str:
    """uvloop when installed: what `[server] event_loop = "auto"` runs."""
    from gateway.loops import choose

    return choose("auto").name


# --- child processes -------------------------------------------------------------


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Service:
    """One child process we started, with its log file and readiness URL."""

    def __init__(
        self, name: str, argv: list[str], logs: Path, ready_url: str,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.log_path = logs / f"{name}.log"
        self.ready_url = ready_url
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if http_ok(self.ready_url):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; safe to call twice."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-2000:]


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "otp-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


# --- statistics --------------------------------------------------------------------


def percentile(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    if not sorted_samples:
        return float("nan")
    rank = max(1, -(-len(sorted_samples) * q // 100))
    return sorted_samples[int(rank) - 1]


@dataclass(frozen=True)
class Calls:
    """One call's figures in one phase."""

    count: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def of(cls, result: dict[str, Any], call: str) -> Calls:
        samples = sorted(s * 1000 for s in result["samples"].get(call, []))
        errors = sum(n for k, n in result["errors"].items() if k.startswith(f"{call}:"))
        return cls(
            len(samples), result["elapsed"], percentile(samples, 50), percentile(samples, 99),
            errors,
        )  # fmt: skip


@dataclass
class Phase:
    """One load run: its result, each process's CPU (% of one core) and Redis commands."""

    result: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    backlog: int = 0  # sends still queued when the load stopped
    drain_seconds: float = 0.0  # until the worker had sent them all
    drain_cpu: float = 0.0  # the sending process's CPU seconds over that drain
    held: bool = False  # the worker process was paused during the window
    delivered: int = 0  # codes the sink received over the phase and the drain
    forks: int = 0  # Redis forks (AOF rewrites) during the window: each one stalls Redis

    def commands_per(self, call: str) -> str:
        """Redis commands per call (scripts' own commands included), most frequent first."""
        calls = max(int(self.result["calls"].get(call, 0)), 1)
        top = sorted(self.commands.items(), key=lambda kv: -kv[1])[:10]
        return " ".join(f"{name} {n / calls:.2f}" for name, n in top if n / calls >= 0.005)


def merged(parts: list[Phase]) -> Phase:
    """The rounds of one call as one phase: samples, counts, times and CPU seconds
    added up (CPU % weighted by each round's length)."""
    if len(parts) == 1:
        return parts[0]
    elapsed = sum(p.result["elapsed"] for p in parts)
    samples: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    cpu: dict[str, float] = {}
    commands: Counter[str] = Counter()
    for p in parts:
        for call, values in p.result["samples"].items():
            samples.setdefault(call, []).extend(values)
        errors.update(p.result["errors"])
        calls.update(p.result["calls"])
        commands.update(p.commands)
        for name, percent in p.cpu.items():
            cpu[name] = cpu.get(name, 0.0) + percent * p.result["elapsed"] / elapsed
    result = {
        **parts[-1].result,
        "elapsed": elapsed,
        "samples": samples,
        "errors": dict(errors),
        "calls": dict(calls),
        "flows": sum(p.result["flows"] for p in parts),
        "late": sum(p.result["late"] for p in parts),
    }
    return Phase(
        result, cpu, dict(commands),
        backlog=sum(p.backlog for p in parts),
        drain_seconds=sum(p.drain_seconds for p in parts),
        drain_cpu=sum(p.drain_cpu for p in parts),
        held=any(p.held for p in parts),
        delivered=sum(p.delivered for p in parts),
        forks=sum(p.forks for p in parts),
    )  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """One appendfsync setting's run: phase length, whether flows run, its accounts."""

    fsync: str
    seconds: float
    flows: bool
    pool: list[list[str]]  # (challenge id, code) for /verify
    fresh: range  # indexes of the "c" accounts for /challenge, one challenge each
    paced_pool: list[list[str]] = field(default_factory=list)  # for the paced /verify
    paced_fresh: range = range(0)  # for the paced /challenge


@dataclass
class SettingResults:
    setting: Setting
    bare: Calls
    challenge: Calls
    verify: Calls
    phases: dict[str, Phase]
    rounds: list[dict[str, Calls]] = field(default_factory=list)  # each turn's three calls
    paced: dict[str, Calls] = field(default_factory=dict)  # bare, challenge, verify at a fixed rate
    late: dict[str, int] = field(default_factory=dict)  # paced calls started behind their slot
    forks: dict[str, int] = field(default_factory=dict)  # Redis forks during each paced phase

    def flows(self) -> tuple[float, Calls, Calls] | None:
        """flows/s and the flows' /challenge and /verify, when the phase ran."""
        if "flows" not in self.phases:
            return None
        result = self.phases["flows"].result
        rate = result["flows"] / result["elapsed"]
        return rate, Calls.of(result, "challenge"), Calls.of(result, "verify")


@dataclass(frozen=True)
class Snapshot:
    """Redis memory at rest: used_memory, clients, key tables (main + expires)."""

    used: int
    clients: int
    tables: int


@dataclass(frozen=True)
class MemoryResults:
    challenges: int
    accounts_seconds: float
    create_rate: float
    create_cpu_ms: float  # gateway CPU per POST /challenge with the worker off
    before: Snapshot
    with_stream: Snapshot
    sent: Snapshot  # after a worker sent every code (and the gateway alone runs again)
    stream_length: int
    send_seconds: float

    def per_challenge(self, after: Snapshot) -> tuple[float, float]:
        """Bytes per challenge: all of used_memory, and the key tables' part of it."""
        n = self.challenges
        return (after.used - self.before.used) / n, (after.tables - self.before.tables) / n


def command_counts(admin: redis.Redis) -> dict[str, int]:
    """INFO commandstats as {command: calls} (commands run by scripts included)."""
    stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


# --- accounts written directly (the memory phase's 100k) ----------------------------


def new_account(prefix: str, index: int, phone_offset: int) -> NewAccount:
    return NewAccount(**account_body(prefix, index, phone_for(phone_offset + index)))


async def create_accounts(
    config_path: Path, prefix: str, indexes: range, phone_offset: int, batch: int = 500
) -> None:
    """AccountStore.create for each index, as the gateway itself would write them."""
    config = load_config(str(config_path))  # the gateway's own file: same Redis, same secret
    assert config.security_secret is not None
    if config.redis.cluster_nodes:  # bench/cluster.py: the gateway's own cluster client
        client: aioredis.Redis = redis_client(config)
    else:
        assert config.redis.url is not None
        client = aioredis.Redis.from_url(config.redis.url, max_connections=DIRECT_CONNECTIONS)
    slots = asyncio.Semaphore(DIRECT_CONNECTIONS)
    try:
        keyring = Keyring.from_secret(config.security_secret.reveal())
        store = AccountStore(client, keyring, phone_policy(config), config.accounts)

        async def one(i: int) -> None:
            async with slots:
                fields = new_account(prefix, i, phone_offset)
                await store.create(fields, who=BENCH_ACTOR)

        for start in range(indexes.start, indexes.stop, batch):
            stop = min(indexes.stop, start + batch)
            await asyncio.gather(*(one(i) for i in range(start, stop)))
    finally:
        await client.aclose()


def create_accounts_sync(config_path: Path, prefix: str, indexes: range, offset: int) -> None:
    asyncio.run(create_accounts(config_path, prefix, indexes, offset))


def split(count: int, parts: int) -> list[range]:
    """range(count) in `parts` contiguous slices."""
    bounds = [count * i // parts for i in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def check_phones(offset: int, count: int, step: int = 1) -> None:
    """Benchmark numbers must pass gateway/phones.py as metropolitan mobiles (every
    `step`-th is checked; AccountStore parses every one anyway)."""
    policy = PhonePolicy()
    for i in range(offset, offset + count, step):
        phone = parse_phone(phone_for(i), policy)
        if phone.region != "FR" or phone.line_type is not LineType.MOBILE:
            raise RuntimeError(f"bench number {i} is not a French mobile: {phone.region}")


# --- the benchmark -------------------------------------------------------------------


class Bench:
    """Owns the children (through `stack`) and runs the phases."""

    def __init__(self, opts: Options, work: Path, stack: contextlib.ExitStack) -> None:
        self.opts = opts
        self.work = work
        self.stack = stack
        self.secret = secrets.token_urlsafe(40)
        self.otp_key = "otp-" + secrets.token_urlsafe(24)
        self.operator_key = "ops-" + secrets.token_urlsafe(24)
        self.sink_secret = secrets.token_urlsafe(24)
        self.redis_server = RedisServer(work / "redis", appendfsync="everysec")
        self.ports = {name: free_port() for name in ("gateway", "sink", "bare", "worker")}
        self.gateway: Service | None = None
        self.worker: Service | None = None
        self.servers: list[Service] = []
        self._runs = 0

    def print_logs(self) -> None:
        """The end of each child's log, to stderr (the temporary directory goes away)."""
        for path in sorted(self.work.glob("*.log")):
            tail = path.read_text(errors="replace")[-3000:]
            print(f"--- {path.name} (end) ---\n{tail}", file=sys.stderr)

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.ports[name]}"

    # --- set-up -------------------------------------------------------------------

    def start_all(self) -> None:
        self.stack.callback(self.redis_server.stop)
        self.redis_server.start()
        self.admin = redis.Redis.from_url(self.redis_server.url)
        self.stack.callback(self.admin.close)
        self.write_config("throughput.toml", default_number_limit=False)
        self.write_config("memory.toml", default_number_limit=True)
        # "=": a secret may begin with "-", which argparse would take for an option.
        sink = [f"{BENCH}/sink.py", f"--secret={self.sink_secret}"]
        bare = [f"{BENCH}/bare.py", "--redis-url", self.redis_server.url,
                "--loop", self.opts.event_loop]  # fmt: skip
        for name, argv in (("sink", sink), ("bare", bare)):
            command = [sys.executable, *argv, "--port", str(self.ports[name])]
            service = Service(name, command, self.work, f"{self.url(name)}/healthz")
            self.stack.callback(service.stop)
            service.start()
            self.servers.append(service)

    def start_gateway(self, config: str, *, worker: bool) -> None:
        """The gateway, and with `worker` something that sends: its own worker
        (`--worker inline`) or an `otp-gateway worker` process beside it."""
        self.stop_gateway()
        config_path = str(self.work / config)
        argv = [*gateway_command(), "serve", "--config", config_path]
        inline = worker and self.opts.worker == "inline"
        if not inline:
            argv.append("--no-worker")
        self.gateway = Service("gateway", argv, self.work, f"{self.url('gateway')}/readyz")
        self.stack.callback(self.gateway.stop)  # stop() is idempotent
        self.gateway.start()
        if worker and not inline:
            self.start_worker(config)

    def start_worker(self, config: str) -> None:
        """An `otp-gateway worker` process beside the gateway."""
        argv = [*gateway_command(), "worker", "--config", str(self.work / config)]
        self.worker = Service("worker", argv, self.work, f"{self.url('worker')}/healthz")
        self.stack.callback(self.worker.stop)
        self.worker.start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.worker = None

    def stop_gateway(self) -> None:
        for service in (self.gateway, self.worker):
            if service is not None:
                service.stop()
        self.gateway = self.worker = None

    def write_config(self, name: str, *, default_number_limit: bool) -> None:
        """The gateway's TOML, every rate limit generous.

        With `default_number_limit`, the per-number limit keeps its default, so its
        key lives as long as in production (a generous GCRA key expires at once).
        The per-account limit lives in the account record whatever its setting.
        """
        names = ["account", "ip", "country", "global", "failures"]
        if not default_number_limit:
            names.append("number")
        limits = "\n".join(f'{n} = "{GENEROUS}"' for n in names)
        path = self.work / name
        path.write_text(
            f"""
[server]
host = "{HOST}"
port = {self.ports["gateway"]}
public_url = "{self.url("gateway")}"
event_loop = "{self.opts.event_loop}"

[redis]
url = "{self.redis_server.url}"

[otp]
ttl_seconds = {TTL_SECONDS}
resend_cooldown_seconds = 0

[security]
secret = "{self.secret}"

[rate_limits]
{limits}

[logging]
level = "warning"

[worker]
metrics_port = {self.ports["worker"]}

[[api_keys]]
name = "bench-otp"
key = "{self.otp_key}"
scopes = ["otp"]

[[api_keys]]
name = "bench-operator"
key = "{self.operator_key}"
scopes = ["operator"]

[[providers]]
name = "sink"
kind = "http"
channels = ["sms", "voice"]
url = "{self.url("sink")}/send"
secret = "{self.sink_secret}"
timeout_seconds = 5
""",
            encoding="utf-8",
        )
        load_config(str(path))  # fail now, naming the key, if it is wrong

    # --- load runs -----------------------------------------------------------------

    def load(self, mode: str, **spec: Any) -> dict[str, Any]:
        """Run bench/load.py in its own process; its result."""
        self._runs += 1
        spec_path = self.work / f"load-{self._runs}-{mode}.json"
        out_path = self.work / f"result-{self._runs}-{mode}.json"
        spec = {"mode": mode, "concurrency": self.opts.concurrency, **spec}
        write_json(spec_path, spec)
        timeout = float(spec["seconds"]) + float(spec.get("warmup_seconds", 0)) + 120
        subprocess.run(
            [sys.executable, str(BENCH / "load.py"), str(spec_path), str(out_path)],
            check=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        result: dict[str, Any] = read_json(out_path)
        return result

    def pids(self) -> dict[str, int]:
        pids = {s.name: s.pid for s in self.servers}
        if self.gateway is not None:
            pids["gateway"] = self.gateway.pid
        if self.worker is not None:
            pids["worker"] = self.worker.pid
        if self.redis_server.process is not None:
            pids["redis"] = self.redis_server.process.pid
        return pids

    def measured(
        self, label: str, mode: str, *, drain: bool = False, hold: bool = False, **spec: Any
    ) -> Phase:
        """A load run, with each process's CPU and Redis's commands over it.

        With `drain`, the commands are counted until the worker has sent every
        send the phase queued (so they include the sends). With `hold`, a worker
        process is paused (SIGSTOP) for the window: the call is measured as the
        gateway serves it, sends left on the stream, and the worker's catching
        up afterwards is timed on its own.
        """
        self.wait_rewrite_done()  # a rewrite left over from the last phase: not this one's
        commands = command_counts(self.admin)
        received = self.sink_received()
        forks = self.redis_forks()
        held = self.worker if hold else None
        if held is not None:
            os.kill(held.pid, signal.SIGSTOP)
        try:
            with self.profiled(label, float(spec["seconds"])):
                result = self.load(mode, watch=self.pids(), **spec)
        finally:
            if held is not None:
                os.kill(held.pid, signal.SIGCONT)
        forks = self.redis_forks() - forks
        backlog = self.queue_length()
        sending = self.worker or self.gateway  # the worker process, else the gateway's own
        sender = sending.pid if sending is not None else 0
        cpu_before = proc_cpu_seconds(sender)
        waited = self.drain_queue() if drain else 0.0
        drain_cpu = proc_cpu_seconds(sender) - cpu_before
        after = command_counts(self.admin)
        used = {k: n - commands.get(k, 0) for k, n in after.items() if k != "info"}
        delivered = self.sink_received() - received
        return Phase(
            result,
            result["cpu"],
            used,
            backlog,
            waited,
            drain_cpu,
            held is not None,
            delivered,
            forks,
        )

    def redis_forks(self) -> int:
        return int(self.admin.info("stats")["total_forks"])

    def queue_length(self) -> int:
        """Sends queued in every slot group's stream."""
        return sum(int(self.admin.xlen(stream)) for stream in keys.STREAMS)

    def sink_received(self) -> int:
        """How many codes the sink has received so far."""
        with urllib.request.urlopen(f"{self.url('sink')}/healthz", timeout=5) as resp:
            return int(read_json_bytes(resp.read())["received"])

    @contextlib.contextmanager
    def profiled(self, label: str, seconds: float) -> Iterator[None]:
        """With --profile, py-spy samples the gateway during the phase."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        idle = label.endswith("-bare")  # the gateway is not under load then
        if self.opts.profile is None or self.gateway is None or idle or not Path(spy).exists():
            yield
            return
        self.opts.profile.mkdir(parents=True, exist_ok=True)
        out = self.opts.profile / f"{label}.txt"
        argv = [spy, "record", "-p", str(self.gateway.pid), "-d", str(int(seconds) + 2),
                "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"]  # fmt: skip
        spying = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            try:
                spying.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                spying.kill()
                spying.wait()

    def wait_gateway_idle(self, timeout: float = 120.0) -> float:
        """Wait until the gateway and its worker use under 5% of a core together
        (their start-up work, such as the expiry sweep, is done)."""
        started = time.monotonic()
        pids = [s.pid for s in (self.gateway, self.worker) if s is not None]
        used = sum(proc_cpu_seconds(pid) for pid in pids)
        while time.monotonic() - started < timeout:
            time.sleep(0.5)
            now = sum(proc_cpu_seconds(pid) for pid in pids)
            if now - used < 0.025:
                break
            used = now
        return time.monotonic() - started

    def drain_queue(self, timeout: float = 60.0) -> float:
        """Wait until the worker has sent (and deleted) every queued send; seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.queue_length() == 0:
                break
            time.sleep(0.1)
        return time.monotonic() - started

    # --- memory (and the /verify pool) ----------------------------------------------

    def run_memory(self) -> tuple[MemoryResults, dict[str, str]]:
        count = self.opts.memory_challenges
        self.stop_gateway()
        print(f"[memory] {count} accounts through AccountStore.create ...", flush=True)
        check_phones(MEMORY_PHONES, count, step=97)
        accounts_seconds = self.create_direct_accounts("m", count, MEMORY_PHONES)
        self.start_gateway("memory.toml", worker=False)
        # Open the gateway's Redis connections first: their buffers are not challenges.
        self.load("ready", base_url=self.url("gateway"), seconds=1.0)
        before = self.settled_memory()
        print(f"[memory] {count} challenges through POST /challenge, worker off ...", flush=True)
        result = self.load(
            "challenge", base_url=self.url("gateway"), api_key=self.otp_key,
            account_prefix="m", account_count=count, seconds=300, max_ops=count,
            watch=self.pids(),
        )  # fmt: skip
        created: dict[str, str] = result["created"]
        if len(created) != count:
            raise RuntimeError(f"created {len(created)} of {count}: {result['errors']}")
        with_stream = self.settled_memory()
        stream_length = self.queue_length()
        # Then really send them: a sent challenge keeps what the worker records
        # (the send done, its provider and state), the stream entry goes.
        print(f"[memory] a worker sends the {stream_length} codes ...", flush=True)
        received = self.sink_received()
        self.start_worker("memory.toml")
        send_seconds = self.drain_queue(timeout=600)
        if self.sink_received() - received != count or self.queue_length():
            raise RuntimeError(f"the worker did not send all {count} codes")
        self.stop_worker()  # its connections are not challenges either
        sent = self.settled_memory()
        self.stop_gateway()
        self.clear_number_limits()
        memory = MemoryResults(
            challenges=count, accounts_seconds=accounts_seconds,
            create_rate=count / result["elapsed"],
            create_cpu_ms=10 * result["cpu"]["gateway"] * result["elapsed"] / count,
            before=before, with_stream=with_stream, sent=sent,
            stream_length=stream_length, send_seconds=send_seconds,
        )  # fmt: skip
        return memory, created

    def clear_number_limits(self) -> None:
        """Forget the per-number rate state, so /challenge may reuse these accounts."""
        batch: list[bytes] = []
        for key in self.admin.scan_iter(match=keys.number_rate("*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.admin.unlink(*batch)
                batch.clear()
        if batch:
            self.admin.unlink(*batch)

    def create_direct_accounts(self, prefix: str, count: int, offset: int) -> float:
        """AccountStore.create in DIRECT_PROCESSES processes (far faster than HTTP); seconds."""
        started = time.perf_counter()
        config = self.work / "memory.toml"
        with ProcessPoolExecutor(DIRECT_PROCESSES, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(create_accounts_sync, config, prefix, part, offset)
                for part in split(count, DIRECT_PROCESSES)
            ]
            for future in futures:
                future.result(timeout=600)
        return time.perf_counter() - started

    def known_codes(self, challenge_ids: list[str]) -> list[list[str]]:
        """(id, code) pairs: the sealed codes read back and opened with the gateway's keys."""
        keyring = Keyring.from_secret(self.secret)
        pairs: list[list[str]] = []
        for start in range(0, len(challenge_ids), 1000):
            chunk = challenge_ids[start : start + 1000]
            with self.admin.pipeline(transaction=False) as pipe:
                for cid in chunk:
                    pipe.hget(keys.challenge(cid), "e")
                sealed = pipe.execute()
            for cid, box in zip(chunk, sealed, strict=True):
                pairs.append([cid, open_code(keyring, cid, box)])
        return pairs

    def wait_rewrite_done(self, timeout: float = 120.0) -> float:
        """Wait until no AOF rewrite runs or waits to run; seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            info = self.admin.info("persistence")
            if not int(info["aof_rewrite_in_progress"]) and not int(info["aof_rewrite_scheduled"]):
                break
            time.sleep(0.2)
        return time.monotonic() - started

    def rewrite_aof(self) -> float:
        """Rewrite the AOF now, while nothing is measured; seconds it took.

        Setting up writes hundreds of MB of accounts: the AOF's automatic
        rewrite (at 100% growth) would otherwise fall in a measured phase, and
        its fork and its child's CPU (seconds on 2 cores) with it.
        """
        self.wait_rewrite_done()
        started = time.monotonic()
        self.admin.bgrewriteaof()
        time.sleep(0.2)
        self.wait_rewrite_done(timeout=600)
        return time.monotonic() - started

    def settled_memory(self) -> Snapshot:
        """Memory once Redis is idle (no AOF rewrite, idle buffers shrunk, rehash done)."""
        self.wait_rewrite_done(timeout=60)
        time.sleep(2.5)  # Redis shrinks an idle client's query buffer after 2 s
        db: dict[str, int] = self.admin.memory_stats().get("db.0", {})
        return Snapshot(
            used=int(self.admin.info("memory")["used_memory"]),
            clients=int(self.admin.info("clients")["connected_clients"]),
            tables=int(db.get("overhead.hashtable.main", 0))
            + int(db.get("overhead.hashtable.expires", 0)),
        )

    # --- throughput ------------------------------------------------------------------

    def create_flow_accounts(self) -> float:
        """The flows' accounts, through POST /accounts with the operator key; rate/s."""
        count = self.opts.flow_accounts
        check_phones(FLOW_PHONES, count)
        result = self.load(
            "accounts", base_url=self.url("gateway"), api_key=self.operator_key,
            account_prefix="f", account_count=count, phone_offset=FLOW_PHONES,
            seconds=120, max_ops=count,
        )  # fmt: skip
        made = len(result["samples"].get("accounts", []))
        if made != count:
            raise RuntimeError(f"created {made} of {count} accounts: {result['errors']}")
        return float(made / result["elapsed"])

    def run_setting(self, setting: Setting) -> SettingResults:
        """bare, /challenge, flows (optional) and /verify under one appendfsync."""
        fsync, seconds, fresh = setting.fsync, setting.seconds, setting.fresh
        self.admin.config_set("appendfsync", fsync)
        if self.admin.config_get("appendfsync")["appendfsync"] != fsync:
            raise RuntimeError(f"redis refused appendfsync {fsync}")
        warm = min(1.0, seconds / 4)
        gateway: dict[str, Any] = {
            "base_url": self.url("gateway"),
            "api_key": self.otp_key,
            "seconds": seconds,
        }
        flows: dict[str, Any] = {"account_prefix": "f", "account_count": self.opts.flow_accounts}
        # bare, /challenge and /verify take turns, so that a slow spell of this
        # shared machine falls on all three instead of on one call's ratio.
        rounds = self.opts.rounds
        turn = seconds / rounds
        turn_warm = min(1.0, turn / 4)
        parts: dict[str, list[Phase]] = {"bare": [], "challenge": [], "verify": []}
        fresh_slices = [range(fresh.start + r.start, fresh.start + r.stop)
                        for r in split(len(fresh), rounds)]  # fmt: skip
        pool_slices = [setting.pool[r.start : r.stop] for r in split(len(setting.pool), rounds)]
        for r in range(rounds):
            tag = f" (round {r + 1} of {rounds})" if rounds > 1 else ""
            print(f"[{fsync}] bare baseline{tag} ...", flush=True)
            parts["bare"].append(self.measured(
                f"{fsync}-bare-{r}", "bare", base_url=self.url("bare"), seconds=turn,
                warmup_seconds=turn_warm,
            ))  # fmt: skip
            chunk = fresh_slices[r]
            print(f"[{fsync}] /challenge{tag} ...", flush=True)
            parts["challenge"].append(self.measured(
                f"{fsync}-challenge-{r}", "challenge", **{**gateway, "seconds": turn},
                account_prefix="c", account_start=chunk.start, account_count=len(chunk),
                max_ops=len(chunk), warmup_seconds=turn_warm, drain=True, hold=True,
            ))  # fmt: skip
            pool = pool_slices[r]
            print(f"[{fsync}] /verify over up to {len(pool)} fresh challenges{tag} ...")
            parts["verify"].append(self.measured(
                f"{fsync}-verify-{r}", "verify", **{**gateway, "seconds": turn}, pool=pool,
            ))  # fmt: skip
        phases = {name: merged(rounds_of) for name, rounds_of in parts.items()}
        if setting.flows:
            print(f"[{fsync}] challenge-then-verify flows ...", flush=True)
            phases["flows"] = self.measured(
                f"{fsync}-flows", "flows", **gateway, **flows, sink_url=self.url("sink"),
                warmup_seconds=warm, drain=True,
            )  # fmt: skip
        results = SettingResults(
            setting=setting,
            bare=Calls.of(phases["bare"].result, "bare"),
            challenge=Calls.of(phases["challenge"].result, "challenge"),
            verify=Calls.of(phases["verify"].result, "verify"),
            phases=phases,
            rounds=[
                {name: Calls.of(parts[name][r].result, name) for name in parts}
                for r in range(rounds)
            ],
        )
        if setting.paced_fresh:
            self.run_paced(setting, gateway, warm, results)
        return results

    def run_paced(
        self, setting: Setting, gateway: dict[str, Any], warm: float, results: SettingResults
    ) -> None:
        """bare, /challenge and /verify again at a fixed rate: latency under a given load."""
        rate = self.opts.paced_rate
        print(f"[{setting.fsync}] paced at {rate:g} calls/s: bare, /challenge, /verify ...")
        fresh = setting.paced_fresh
        specs: dict[str, dict[str, Any]] = {
            "bare": {"base_url": self.url("bare"), "seconds": setting.seconds},
            "challenge": {
                **gateway, "account_prefix": "c", "account_start": fresh.start,
                "account_count": len(fresh), "max_ops": len(fresh),
            },
            "verify": {**gateway, "pool": setting.paced_pool},
        }  # fmt: skip
        for call, spec in specs.items():
            phase = self.measured(
                f"{setting.fsync}-paced-{call}", call, rate=rate, warmup_seconds=warm,
                drain=call == "challenge", hold=call == "challenge", **spec,
            )  # fmt: skip
            results.paced[call] = Calls.of(phase.result, call)
            results.late[call] = int(phase.result["late"])
            results.forks[call] = phase.forks


# --- report --------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def call_line(name: str, calls: Calls, base: Calls, min_ratio: float | None) -> str:
    ratio = calls.rate / base.rate if base.rate else 0.0
    line = f"  {name:<20}{calls.count:>8}{calls.rate:>9.0f}{calls.p50_ms:>9.2f}{calls.p99_ms:>9.2f}"
    line += f"{ratio:>8.2f}"
    if min_ratio is not None:
        line += f"   >={min_ratio:.0%} {verdict(ratio >= min_ratio)}"
        line += f"  p99<{P99_MAX_MS:.0f}ms {verdict(calls.p99_ms < P99_MAX_MS)}"
    return line + (f"  [{calls.errors} errors]" if calls.errors else "")


def print_setting(res: SettingResults, opts: Options) -> None:
    setting = res.setting
    skipped = "" if setting.flows else ", flows skipped"
    print(
        f"\nappendfsync {setting.fsync}  ({opts.concurrency} connections, "
        f"{setting.seconds:g} s/phase{skipped})"
    )
    print(f"  {'call':<20}{'count':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x bare':>8}")
    print(call_line("bare (POST+INCR)", res.bare, res.bare, None) + "   baseline")
    print(call_line("/challenge", res.challenge, res.bare, CHALLENGE_MIN_RATIO))
    print(call_line("/verify", res.verify, res.bare, VERIFY_MIN_RATIO))
    if len(res.rounds) > 1:
        turns = "; ".join(
            f"{t['bare'].rate:.0f} req/s, x{t['challenge'].rate / t['bare'].rate:.2f}"
            f" (p99 {t['challenge'].p99_ms:.1f}), x{t['verify'].rate / t['bare'].rate:.2f}"
            f" (p99 {t['verify'].p99_ms:.1f})"
            for t in res.rounds
        )
        print(f"  turn by turn (bare req/s, /challenge and /verify x bare): {turns}")
    flows = res.flows()
    if flows is not None:
        rate, flow_challenge, flow_verify = flows
        print(call_line("flows: /challenge", flow_challenge, res.bare, None))
        print(call_line("flows: /verify", flow_verify, res.bare, None))
        print(f"  flows/s (challenge, code from the sink, verify): {rate:.0f}")
    if res.paced:
        connections = opts.concurrency
        print(f"  paced at {opts.paced_rate:g} calls/s over the same {connections} connections:")
        for call, calls in res.paced.items():
            late = res.late.get(call, 0)
            behind = f"  [{late} calls started late]" if late else ""
            if res.forks.get(call):
                behind += f"  [Redis forked {res.forks[call]}x: AOF rewrite]"
            ok = f"   p99<{P99_MAX_MS:.0f}ms {verdict(calls.p99_ms < P99_MAX_MS)}"
            ok = "" if call == "bare" else ok
            print(
                f"  {'  ' + call:<20}{calls.count:>8}{calls.rate:>9.0f}{calls.p50_ms:>9.2f}"
                f"{calls.p99_ms:>9.2f}{'':>8}{ok}{behind}"
            )
    print_details(res)


def print_details(res: SettingResults) -> None:
    phase = res.phases["challenge"]
    sustained = res.challenge.count / (res.challenge.seconds + phase.drain_seconds)
    sender = "the worker process (paused during the window)" if phase.held else "the gateway"
    drained = f"{phase.backlog / phase.drain_seconds:.0f} sends/s" if phase.drain_seconds else "-"
    print(
        f"  /challenge left {phase.backlog} sends queued; {sender} sent them in "
        f"{phase.drain_seconds:.1f} s ({drained}, "
        f"{1000 * phase.drain_cpu / max(phase.backlog, 1):.2f} ms CPU per send): "
        f"~{sustained:.0f} challenges/s sustained with their sends; "
        f"the sink received {phase.delivered} codes"
    )
    for name, phase in res.phases.items():
        cpu = " ".join(f"{k} {v:.0f}%" for k, v in sorted(phase.cpu.items()) if v >= 1)
        server = "bare" if name == "bare" else "gateway"
        calls = phase.result["flows"] if name == "flows" else len(phase.result["samples"][name])
        per_call = 10 * phase.cpu.get(server, 0.0) * phase.result["elapsed"] / max(calls, 1)
        unit = "flow" if name == "flows" else "call"
        errors = phase.result["errors"]
        forked = f"  [Redis forked {phase.forks}x: AOF rewrite]" if phase.forks else ""
        print(
            f"  {name:<9} cpu: {cpu}  ({server} {per_call:.2f} ms CPU per {unit})"
            + (f"  errors: {errors}" if errors else "")
            + forked
        )
        if name != "flows":
            print(f"  {'':<9} redis commands per call: {phase.commands_per(name)}")


def print_memory(mem: MemoryResults) -> None:
    n = mem.challenges
    print(f"\nmemory: {n} live challenges across {n} accounts (INFO memory used_memory)")
    print(
        f"  {n} accounts written by AccountStore.create in {mem.accounts_seconds:.1f} s "
        f"(not counted); challenges made over HTTP, worker off, at {mem.create_rate:.0f}/s, "
        f"gateway {mem.create_cpu_ms:.2f} ms CPU each"
    )
    print(
        f"  used_memory before {mem.before.used:,} B, queued {mem.with_stream.used:,} B, "
        f"sent {mem.sent.used:,} B (one worker process sent them in {mem.send_seconds:.1f} s); "
        f"clients {mem.before.clients} -> {mem.with_stream.clients}"
    )
    for label, after in (
        (f"queued: with its {mem.stream_length} stream entries", mem.with_stream),
        ("sent: the worker sent every code", mem.sent),
    ):
        per, tables = mem.per_challenge(after)
        ok = verdict(per <= BYTES_PER_CHALLENGE_MAX)
        print(
            f"  {label:<40}{per:>7.0f} B/challenge   <={BYTES_PER_CHALLENGE_MAX} {ok}"
            f"   (key tables {tables:.0f} B of it)"
        )


# --- main --------------------------------------------------------------------------------


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every finally block runs."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def measure(opts: Options, bench: Bench) -> tuple[list[SettingResults], MemoryResults]:
    bench.start_all()
    # The flows' accounts first, while the database is small: a gateway with its
    # worker sweeps every account at start-up, then not again for an hour.
    bench.start_gateway("throughput.toml", worker=True)
    bench.wait_gateway_idle()
    rate = bench.create_flow_accounts()
    print(f"[setup] {opts.flow_accounts} flow accounts via POST /accounts at {rate:.0f}/s")
    memory, created = bench.run_memory()
    settings = plan_settings(opts, bench, created)
    took = bench.rewrite_aof()
    print(f"[setup] AOF rewritten in {took:.1f} s, before the measured phases")
    bench.start_gateway("throughput.toml", worker=True)
    busy = bench.wait_gateway_idle()
    print(f"[setup] gateway with worker restarted, idle after {busy:.1f} s")
    return [bench.run_setting(setting) for setting in settings], memory


def plan_settings(opts: Options, bench: Bench, created: dict[str, str]) -> list[Setting]:
    """everysec in full, then "always" at half length without flows (~25 s more).

    Each setting gets a slice of the memory phase's challenges, in proportion to
    its length, as its /verify pool, and accounts of its own for /challenge
    (created here, directly in Redis).
    """
    plans = [("everysec", opts.seconds, True)]
    if opts.always:
        plans.append(("always", max(opts.seconds / 2, 1.0), False))
    total = sum(seconds for _, seconds, _ in plans)
    # Each of the rounds' /challenge turns warms up on accounts of its own.
    rounds = opts.rounds
    needs = [
        int(CHALLENGE_ACCOUNTS_PER_SECOND * (s + rounds * min(1.0, s / rounds / 4)))
        for _, s, _ in plans
    ]
    # The paced phases (first setting only) take calls at a known rate, warm-up included.
    paced = int(opts.paced_rate * (opts.seconds + min(1.0, opts.seconds / 4))) + 100
    paced = paced if opts.paced_rate > 0 else 0
    accounts = sum(needs) + paced
    print(f"[setup] {accounts} accounts for /challenge through AccountStore.create ...")
    check_phones(CHALLENGE_PHONES, accounts, step=97)
    bench.create_direct_accounts("c", accounts, CHALLENGE_PHONES)
    count, start, fresh_start = opts.memory_challenges, 0, paced
    settings: list[Setting] = []
    for (fsync, seconds, flows), need in zip(plans, needs, strict=True):
        size = int(count * seconds / total)
        pool = bench.known_codes([created[account_id("m", i)] for i in range(start, start + size)])
        fresh = range(fresh_start, fresh_start + need)
        if not settings and paced:
            if paced >= len(pool) // 2:
                raise SystemExit("--paced-rate too high for the verify pool: lower it or use 0")
            setting = Setting(
                fsync, seconds, flows, pool[paced:], fresh, pool[:paced], range(paced)
            )
        else:
            setting = Setting(fsync, seconds, flows, pool, fresh)
        settings.append(setting)
        start += size
        fresh_start += need
    return settings


def run(opts: Options) -> None:
    started = time.monotonic()
    print(
        f"otp-gateway benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"{opts.event_loop} loop (gateway and bare)",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otp-bench-")))
        bench = Bench(opts, work, stack)
        try:
            results, memory = measure(opts, bench)
        except Exception:
            bench.print_logs()
            raise
    for res in results:
        print_setting(res, opts)
    print_memory(memory)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


def main() -> None:
    with terminate_as_exit():
        run(parse_options())


if __name__ == "__main__":
    main()
