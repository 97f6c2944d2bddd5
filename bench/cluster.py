"""/challenge and /verify on a 3-primary Redis Cluster against one instance, in one run.

    python bench/cluster.py [--seconds 8] [--rounds 2] [--concurrency 50] [--pool 24000]

On 127.0.0.1, in a temporary directory: run.py's redis-server (AOF everysec),
sink and bare endpoint (one INCR on that redis-server), plus a 3-primary
Redis Cluster (tests/support/cluster.py: the same redis-server binary, no
replicas, no AOF), and two gateways, `otp-gateway serve --no-worker`, one
on each. Nothing sends: the sends stay queued, as in run.py's /challenge
window with its worker paused. Accounts are written by AccountStore.create
(the gateway's own client of each topology); the /verify pool of each is
challenged over HTTP first, its codes opened with the gateway's keys. Then
bare, /challenge and /verify on one instance, /challenge and /verify on the
cluster take turns (`--rounds`), and the report gives each one's req/s,
latency, CPU, its ratio to bare, and cluster / single. See bench/README.md,
"Redis Cluster".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from common import HOST  # noqa: E402
from run import (  # noqa: E402
    CHALLENGE_PHONES,
    DIRECT_PROCESSES,
    MEMORY_PHONES,
    Bench,
    Calls,
    Options,
    Service,
    create_accounts_sync,
    default_loop,
    gateway_command,
    split,
    terminate_as_exit,
)

from gateway.embedded import free_port  # noqa: E402
from tests.support.cluster import PASSWORD, Cluster  # noqa: E402

CHALLENGES_PER_SECOND = 3000  # accounts of its own per second of /challenge turn (upper bound)
TOPOLOGIES = ("single", "cluster")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per call (all turns)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--pool", type=int, default=24000,
        help="/verify challenges per topology: enough for every turn, warm-up included",
    )  # fmt: skip
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default=default_loop())
    return parser.parse_args(argv)


@dataclass
class Totals:
    """One variant's turns: calls, seconds, CPU of the server and of Redis."""

    count: int = 0
    seconds: float = 0.0
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    redis_cpu: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, calls: Calls, cpu: dict[str, float]) -> None:
        self.count += calls.count
        self.seconds += calls.seconds
        if calls.count:  # a turn whose pool ran out in its warm-up has no latency
            self.p50.append(calls.p50_ms)
            self.p99.append(calls.p99_ms)
        self.server_cpu.append(cpu.get("server", 0.0))
        self.redis_cpu.append(sum(v for k, v in cpu.items() if k.startswith("redis")))
        self.errors += calls.errors

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


class ClusterBench:
    """run.py's Bench (one instance, sink, bare) plus a cluster and a gateway on each."""

    def __init__(self, args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.turn = args.seconds / args.rounds
        self.warm = min(1.0, self.turn / 4)
        opts = Options(
            seconds=args.seconds, concurrency=args.concurrency, flow_accounts=0,
            memory_challenges=0, always=False, profile=None, worker="process", paced_rate=0,
            rounds=args.rounds, event_loop=args.event_loop,
        )  # fmt: skip
        self.bench = Bench(opts, work, stack)
        self.cluster = Cluster(work / "cluster")
        self.work, self.stack = work, stack
        self.urls: dict[str, str] = {}
        self.pids: dict[str, dict[str, int]] = {}
        self.pools: dict[str, list[list[str]]] = {}
        self.next_account = dict.fromkeys(TOPOLOGIES, 0)

    def start(self) -> None:
        self.bench.start_all()
        self.stack.callback(self.cluster.stop)
        self.cluster.start()
        single = (self.work / "throughput.toml").read_text()
        url_line = f'url = "{self.bench.redis_server.url}"'
        nodes = ", ".join(f'"{n}"' for n in self.cluster.startup_nodes)
        clustered = single.replace(url_line, f'cluster_nodes = [{nodes}]\npassword = "{PASSWORD}"')
        (self.work / "single.toml").write_text(single)
        (self.work / "cluster.toml").write_text(clustered)

    def start_gateway(self, topology: str) -> None:
        port = free_port()
        argv = [*gateway_command(), "serve", "--no-worker", "--config",
                str(self.work / f"{topology}.toml")]  # fmt: skip
        ready = f"http://{HOST}:{port}/readyz"
        service = Service(f"gateway-{topology}", argv, self.work, ready, {"OTPGW_PORT": str(port)})
        self.stack.callback(service.stop)
        service.start()
        self.urls[topology] = f"http://{HOST}:{port}"
        redis = self._redis_pids(topology)
        self.pids[topology] = {"server": service.pid, **redis}

    def _redis_pids(self, topology: str) -> dict[str, int]:
        if topology == "single":
            process = self.bench.redis_server.process
            return {"redis": process.pid} if process is not None else {}
        return {f"redis{i}": n.process.pid for i, n in enumerate(self.cluster.nodes) if n.process}

    def accounts(self, topology: str, prefix: str, count: int, offset: int) -> None:
        config = self.work / f"{topology}.toml"
        with ProcessPoolExecutor(DIRECT_PROCESSES, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(create_accounts_sync, config, prefix, part, offset)
                for part in split(count, DIRECT_PROCESSES)
            ]
            for future in futures:
                future.result(timeout=900)

    def make_pool(self, topology: str) -> None:
        """`--pool` live challenges with their codes, for /verify (each verified once)."""
        count = self.args.pool
        self.accounts(topology, "m", count, MEMORY_PHONES)
        result = self.bench.load(
            "challenge", base_url=self.urls[topology], api_key=self.bench.otp_key,
            account_prefix="m", account_count=count, seconds=600, max_ops=count,
        )  # fmt: skip
        created: dict[str, str] = result["created"]
        single_admin = self.bench.admin
        if topology == "cluster":
            self.bench.admin = self.cluster_admin()
        try:
            self.pools[topology] = self.bench.known_codes(list(created.values()))
        finally:
            if self.bench.admin is not single_admin:
                self.bench.admin.close()
            self.bench.admin = single_admin
        print(f"[setup] {topology}: {count} challenges at {count / result['elapsed']:.0f}/s")

    def cluster_admin(self) -> Any:
        import redis

        host, port = self.cluster.startup_nodes[0].split(":")
        return redis.RedisCluster(host=host, port=int(port), password=PASSWORD)

    def measure(self, variant: str) -> tuple[Calls, dict[str, float]]:
        topology, _, call = variant.partition(" ")
        spec: dict[str, Any] = {"seconds": self.turn, "warmup_seconds": self.warm}
        if topology == "bare":
            watch = {"server": self.bare_pid(), **self._redis_pids("single")}
            spec.update(base_url=self.bench.url("bare"), watch=watch)
            result = self.bench.load("bare", **spec)
            return Calls.of(result, "bare"), result["cpu"]
        spec.update(base_url=self.urls[topology], api_key=self.bench.otp_key,
                    watch=self.pids[topology])  # fmt: skip
        if call == "/challenge":
            need = int(CHALLENGES_PER_SECOND * (self.turn + self.warm))
            start = self.next_account[topology]
            self.next_account[topology] += need
            spec.update(account_prefix="c", account_start=start, account_count=need)
            result = self.bench.load("challenge", **spec)
            return Calls.of(result, "challenge"), result["cpu"]
        pool = self.pools[topology]
        take = len(pool) // self.args.rounds
        spec["pool"], self.pools[topology] = pool[:take], pool[take:]
        result = self.bench.load("verify", **spec)
        return Calls.of(result, "verify"), result["cpu"]

    def bare_pid(self) -> int:
        return next(s.pid for s in self.bench.servers if s.name == "bare")


VARIANTS = ("bare", "single /challenge", "single /verify", "cluster /challenge", "cluster /verify")


def report(totals: dict[str, Totals], args: argparse.Namespace) -> None:
    print(f"\n{args.concurrency} connections, {args.rounds} turns of "
          f"{args.seconds / args.rounds:g} s per call")  # fmt: skip
    print(f"  {'call':<20}{'req/s':>8}{'x bare':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'server%':>9}{'redis%':>8}{'ms CPU':>8}")  # fmt: skip
    bare = totals["bare"].rate
    for name, t in totals.items():
        server = sum(t.server_cpu) / len(t.server_cpu)
        cost = 10 * server / t.rate if t.rate else 0.0  # % of a core / (calls/s) -> ms per call
        errors = f"  [{t.errors} errors]" if t.errors else ""
        p50 = sorted(t.p50)[len(t.p50) // 2] if t.p50 else 0.0
        redis = sum(t.redis_cpu) / len(t.redis_cpu)
        print(f"  {name:<20}{t.rate:>8.0f}{t.rate / bare:>8.2f}{p50:>8.2f}"
              f"{max(t.p99, default=0.0):>8.2f}{server:>9.0f}{redis:>8.0f}"
              f"{cost:>8.3f}{errors}")  # fmt: skip
    for call in ("/challenge", "/verify"):
        ratio = totals[f"cluster {call}"].rate / totals[f"single {call}"].rate
        print(f"  {call}: cluster / single {ratio:.2f}")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def main() -> None:
    args = parse()
    started = time.monotonic()
    print(f"otp-gateway cluster benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    with terminate_as_exit(), contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otp-cluster-")))
        bench = ClusterBench(args, work, stack)
        try:
            bench.start()
            need = int(CHALLENGES_PER_SECOND * args.seconds * 1.25)
            for topology in TOPOLOGIES:
                print(f"[setup] {topology}: {need} + {args.pool} accounts ...", flush=True)
                bench.accounts(topology, "c", need, CHALLENGE_PHONES)
                bench.start_gateway(topology)
                bench.make_pool(topology)
            totals = {name: Totals() for name in VARIANTS}
            for r in range(args.rounds):
                for name in VARIANTS:
                    print(f"[round {r + 1} of {args.rounds}] {name} ...", flush=True)
                    calls, cpu = bench.measure(name)
                    totals[name].add(calls, cpu)
        except Exception:
            bench.bench.print_logs()
            raise
    report(totals, args)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
