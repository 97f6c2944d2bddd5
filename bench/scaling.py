"""Scaling: the bare endpoint and the gateway's /verify, each as 1 and 2 processes.

    python bench/scaling.py [--seconds 9] [--rounds 3] [--concurrency 64] [--loaders 2]
                            [--event-loop uvloop|asyncio] [--loops]

In one run, on 127.0.0.1, in a temporary directory: a redis-server, the
bare app once alone and twice on one port (`bench/bare.py --reuse-port`),
the gateway as `otp-gateway serve --no-worker` and as `serve --no-worker
--processes 2`. The four take turns (`--rounds`), each measured by
`--loaders` load generator processes (bench/load.py) sharing the
connections, so the generator is not the one process everything waits on.
Prints each one's req/s, latency and CPU, the 2/1 ratio of bare and of the
gateway, and the gateway's 2/1 over bare's 2/1 (target >= 0.90). The /verify
pool is made first: accounts written directly, a challenge each over HTTP,
the codes opened with the gateway's keys. With `--loops`, the four are bare
and the gateway, one process each, on asyncio's loop and on uvloop: what
uvloop changes, in one run. See bench/README.md, "Scaling".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import HOST, read_json, write_json  # noqa: E402
from run import (  # noqa: E402
    MEMORY_PHONES,
    Bench,
    Calls,
    Options,
    Service,
    default_loop,
    gateway_command,
    percentile,
    terminate_as_exit,
)

from gateway.embedded import free_port  # noqa: E402

TARGET = 0.90
MAX_VERIFY_RATE = 4000  # /verify calls per second a turn may take from the pool, at most
Variant = tuple[str, int, str]  # bare or gateway, processes, event loop


def variants(args: argparse.Namespace) -> dict[str, Variant]:
    """The scaling set (1 and 2 processes), or with --loops, asyncio's loop against uvloop."""
    if args.loops:
        return {f"{kind} {loop}": (kind, 1, loop)
                for kind in ("bare", "gateway") for loop in ("asyncio", "uvloop")}  # fmt: skip
    return {f"{kind} x{n}": (kind, n, args.event_loop)
            for kind in ("bare", "gateway") for n in (1, 2)}  # fmt: skip


@dataclass(frozen=True)
class Turn:
    """One variant's turn: calls, wall time, latencies, CPU (% of one core)."""

    calls: Calls
    server_cpu: float
    loadgen_cpu: float
    redis_cpu: float


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=9.0, help="per variant (all turns)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the four variants")
    parser.add_argument("--concurrency", type=int, default=64, help="connections in all")
    parser.add_argument("--loaders", type=int, default=2, help="load generator processes")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default=default_loop())
    parser.add_argument(
        "--loops", action="store_true",
        help="instead: bare and gateway, one process each, on asyncio's loop and on uvloop",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.loaders <= 8 or args.concurrency < args.loaders or args.rounds < 1:
        parser.error("--loaders 1-8, --concurrency >= --loaders, --rounds >= 1")
    return args


class Scaling:
    """The servers, the /verify pool, and the turns."""

    def __init__(self, args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.turn = args.seconds / args.rounds
        self.warm = min(0.5, self.turn / 4)
        opts = Options(
            seconds=args.seconds, concurrency=args.concurrency, flow_accounts=0,
            memory_challenges=0, always=False, profile=None, worker="process", paced_rate=0,
            rounds=args.rounds, event_loop=args.event_loop,
        )  # fmt: skip
        self.bench = Bench(opts, work, stack)
        self.stack = stack
        self.work = work
        self.urls: dict[str, str] = {}
        self.pids: dict[str, list[int]] = {}
        self.pool: list[list[str]] = []
        self.used = 0

    def start(self, variants: dict[str, Variant]) -> None:
        """Redis and the sink (run.py's Bench), then bare in each variant's form."""
        self.bench.start_all()
        for name, (kind, processes, loop) in variants.items():
            if kind == "bare":
                port = free_port()
                argv = [sys.executable, f"{BENCH}/bare.py", "--redis-url",
                        self.bench.redis_server.url, "--port", str(port), "--loop", loop,
                        *(["--reuse-port"] if processes > 1 else [])]  # fmt: skip
                tag = name.replace(" ", "-")
                started = [self.service(f"{tag}-{i}", argv, port) for i in range(processes)]
                self.urls[name] = f"http://{HOST}:{port}"
                self.pids[name] = [s.pid for s in started]

    def service(self, name: str, argv: list[str], port: int, **env: str) -> Service:
        service = Service(name, argv, self.work, f"http://{HOST}:{port}/healthz", env=env)
        self.stack.callback(service.stop)
        service.start()
        return service

    def make_pool(self, count: int) -> None:
        """`count` live challenges with their codes, for /verify (each verified once)."""
        b = self.bench
        print(f"[setup] {count} accounts, then a challenge each over HTTP ...", flush=True)
        b.create_direct_accounts("m", count, MEMORY_PHONES)
        b.start_gateway("throughput.toml", worker=False)
        result = b.load(
            "challenge", base_url=b.url("gateway"), api_key=b.otp_key, account_prefix="m",
            account_count=count, seconds=600, max_ops=count,
        )  # fmt: skip
        created: dict[str, str] = result["created"]
        self.pool = b.known_codes(list(created.values()))
        b.stop_gateway()
        print(f"[setup] {len(self.pool)} challenges at {count / result['elapsed']:.0f}/s")

    def start_gateways(self, variants: dict[str, Variant]) -> None:
        throughput = (self.work / "throughput.toml").read_text()
        for name, (kind, processes, loop) in variants.items():
            if kind != "gateway":
                continue
            config = self.work / f"{name.replace(' ', '-')}.toml"
            chosen = f'event_loop = "{loop}"'
            config.write_text(throughput.replace(f'event_loop = "{self.args.event_loop}"', chosen))
            port = free_port()
            argv = [*gateway_command(), "serve", "--config", str(config), "--no-worker",
                    "--processes", str(processes)]  # fmt: skip
            gateway = self.service(name.replace(" ", "-"), argv, port, OTPGW_PORT=str(port))
            self.urls[name] = f"http://{HOST}:{port}"
            self.pids[name] = children(gateway.pid) if processes > 1 else [gateway.pid]
            if len(self.pids[name]) != processes:
                raise RuntimeError(f"serve --processes {processes} runs {self.pids[name]}")

    def measure(self, name: str) -> Turn:
        """One turn of `name`, driven by the loaders at once; their results merged."""
        mode = "bare" if name.startswith("bare") else "verify"
        spec: dict[str, Any] = {"mode": mode, "base_url": self.urls[name], "seconds": self.turn,
                                "warmup_seconds": self.warm}  # fmt: skip
        if mode == "verify":
            spec["api_key"] = self.bench.otp_key
            take = int(MAX_VERIFY_RATE * (self.turn + self.warm))
            pool = self.pool[self.used : self.used + take]
            self.used += len(pool)
        watch = {f"server{i}": pid for i, pid in enumerate(self.pids[name])}
        if self.bench.redis_server.process is not None:
            watch["redis"] = self.bench.redis_server.process.pid
        loaders = []
        n = self.args.loaders
        for i in range(n):
            part = {**spec, "concurrency": self.args.concurrency * (i + 1) // n
                    - self.args.concurrency * i // n, "watch": watch if i == 0 else {}}  # fmt: skip
            if mode == "verify":
                part["pool"] = pool[i::n]
            loaders.append(self.loader(name, i, part))
        results = [self.finish(proc, out) for proc, out in loaders]
        return merged_turn(results, mode)

    def loader(
        self, name: str, i: int, spec: dict[str, Any]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        tag = f"{name.replace(' ', '')}-{self.used}-{i}-{time.monotonic_ns()}"
        spec_path, out = self.work / f"spec-{tag}.json", self.work / f"out-{tag}.json"
        write_json(spec_path, spec)
        argv = [sys.executable, str(BENCH / "load.py"), str(spec_path), str(out)]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL), out

    def finish(self, proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
        if proc.wait(timeout=self.turn + self.warm + 120) != 0:
            raise RuntimeError("a load generator failed")
        result: dict[str, Any] = read_json(out)
        return result


def children(pid: int) -> list[int]:
    """The child processes of `pid` (a supervisor's children)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(found) >= 2:
            return [int(p) for p in found]
        time.sleep(0.05)
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def merged_turn(results: list[dict[str, Any]], call: str) -> Turn:
    """Loaders that ran side by side: their calls added, their rates added."""
    samples = sorted(s * 1000 for r in results for s in r["samples"].get(call, []))
    errors = sum(n for r in results for k, n in r["errors"].items() if k.startswith(f"{call}:"))
    rate = sum(len(r["samples"].get(call, [])) / r["elapsed"] for r in results)
    elapsed = len(samples) / rate if rate else 0.0
    calls = Calls(len(samples), elapsed, percentile(samples, 50), percentile(samples, 99), errors)
    cpu = results[0]["cpu"]
    server = sum(v for k, v in cpu.items() if k.startswith("server"))
    loadgen = sum(r["cpu"]["loadgen"] for r in results)
    return Turn(calls, server, loadgen, cpu.get("redis", 0.0))


@dataclass
class Totals:
    """A variant's turns added up."""

    turns: list[Turn]

    @property
    def count(self) -> int:
        return sum(t.calls.count for t in self.turns)

    @property
    def rate(self) -> float:
        seconds = sum(t.calls.seconds for t in self.turns)
        return self.count / seconds if seconds else 0.0

    def mean(self, attribute: str) -> float:
        return sum(getattr(t, attribute) for t in self.turns) / len(self.turns)

    def cpu_per_call(self) -> float:
        """The servers' CPU milliseconds per call: what a busy neighbour moves least."""
        cpu_seconds = sum(t.server_cpu / 100 * t.calls.seconds for t in self.turns)
        return 1000 * cpu_seconds / self.count if self.count else 0.0


def report(totals: dict[str, Totals], args: argparse.Namespace) -> None:
    title = "event loops" if args.loops else f"scaling ({args.event_loop} loop)"
    print(
        f"\n{title}: {args.concurrency} connections from {args.loaders} load generator "
        f"processes, {args.rounds} turns of {args.seconds / args.rounds:g} s per variant"
    )
    head = f"  {'variant':<16}{'count':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server%':>9}"
    print(head + f"{'ms CPU':>8}{'loadgen%':>9}{'redis%':>8}  turn by turn req/s")
    for name, total in totals.items():
        p50 = sorted(t.calls.p50_ms for t in total.turns)[len(total.turns) // 2]
        p99 = max(t.calls.p99_ms for t in total.turns)
        turns = " ".join(f"{t.calls.rate:.0f}" for t in total.turns)
        errors = sum(t.calls.errors for t in total.turns)
        print(
            f"  {name:<16}{total.count:>8}{total.rate:>9.0f}{p50:>9.2f}{p99:>9.2f}"
            f"{total.mean('server_cpu'):>9.0f}{total.cpu_per_call():>8.3f}"
            f"{total.mean('loadgen_cpu'):>9.0f}"
            f"{total.mean('redis_cpu'):>8.0f}  {turns}" + (f"  [{errors} errors]" if errors else "")
        )
    if args.loops:
        report_loops(totals)
    else:
        report_scaling(totals)
    print(f"  load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("  (p50: the median turn's; p99: the worst turn's; server%, loadgen%: of one core)")


def report_scaling(totals: dict[str, Totals]) -> None:
    bare = totals["bare x2"].rate / totals["bare x1"].rate
    gateway = totals["gateway x2"].rate / totals["gateway x1"].rate
    relative = gateway / bare
    verdict = "PASS" if relative >= TARGET else "FAIL"
    print(f"  bare 2/1: {bare:.2f}   gateway 2/1: {gateway:.2f}   "
          f"gateway's 2/1 / bare's 2/1: {relative:.2f}   >= {TARGET:.2f} {verdict}")  # fmt: skip
    cost = {n: t.cpu_per_call() for n, t in totals.items()}
    bare_cost = cost["bare x2"] / cost["bare x1"]
    gateway_cost = cost["gateway x2"] / cost["gateway x1"]
    print(f"  CPU per call 2/1: bare {bare_cost:.2f}, gateway {gateway_cost:.2f} (1.00: free)")


def report_loops(totals: dict[str, Totals]) -> None:
    for loop in ("asyncio", "uvloop"):
        ratio = totals[f"gateway {loop}"].rate / totals[f"bare {loop}"].rate
        print(f"  {loop}: /verify x bare {ratio:.2f}")
    for kind in ("bare", "gateway"):
        faster = totals[f"{kind} uvloop"].rate / totals[f"{kind} asyncio"].rate
        cost = totals[f"{kind} uvloop"].cpu_per_call() / totals[f"{kind} asyncio"].cpu_per_call()
        print(f"  {kind}: uvloop/asyncio req/s {faster:.2f}, CPU per call {cost:.2f}")


def main() -> None:
    args = parse()
    started = time.monotonic()
    print(
        f"otp-gateway scaling benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with terminate_as_exit(), contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otp-scaling-")))
        scaling = Scaling(args, work, stack)
        try:
            chosen = variants(args)
            scaling.start(chosen)
            per_turn = int(MAX_VERIFY_RATE * (scaling.turn + scaling.warm))
            scaling.make_pool(2 * args.rounds * per_turn)
            scaling.start_gateways(chosen)
            totals = {name: Totals([]) for name in chosen}
            for r in range(args.rounds):
                for name in chosen:
                    print(f"[round {r + 1} of {args.rounds}] {name} ...", flush=True)
                    totals[name].turns.append(scaling.measure(name))
        except Exception:
            scaling.bench.print_logs()
            raise
    report(totals, args)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
