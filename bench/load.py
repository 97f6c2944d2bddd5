"""The load generator: one phase at a fixed concurrency, every latency recorded.

    python bench/load.py SPEC.json OUT.json

It runs in its own process (started by run.py), away from the servers it
measures. SPEC is a JSON object (see `Spec`); OUT receives the raw samples
(seconds per call), error counts, the phase's wall time and this process's
CPU use over the measured window, its own and that of the processes named
in `watch` (% of one core). Every loop is bounded by a deadline and by an operation budget.

Modes:
  bare       POST /bare on the baseline app
  ready      GET /readyz (opens the gateway's Redis connections before a measurement)
  accounts   POST /accounts (operator key), one per account id, then stop
  challenge  POST /challenge, round robin over the accounts (each used once
             unless the phase outlasts them); keeps the last challenge id per
             account (the live one)
  flows      POST /challenge, long-poll the sink for the code (not timed),
             POST /verify with it
  verify     POST /verify over a pool of (challenge id, code) pairs, each once
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    account_body,
    account_id,
    phone_for,
    proc_cpu_seconds,
    read_json,
    write_json,
)

SINK_WAIT_MS = 2000
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
CALL_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)
Op = Callable[["Recorder"], Awaitable[bool]]


@dataclass(frozen=True)
class Spec:
    mode: str
    base_url: str
    seconds: float
    concurrency: int
    api_key: str = ""
    account_prefix: str = ""
    account_start: int = 0
    account_count: int = 0
    phone_offset: int = 0
    sink_url: str = ""
    pool: list[list[str]] = field(default_factory=list)
    max_ops: int = 10_000_000
    warmup_seconds: float = 0.0
    rate: float = 0.0  # calls per second, paced over the connections; 0: closed loop
    watch: dict[str, int] = field(default_factory=dict)  # name -> pid, for CPU use

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Spec:
        return cls(**raw)

    @property
    def accounts(self) -> list[str]:
        indexes = range(self.account_start, self.account_start + self.account_count)
        return [account_id(self.account_prefix, i) for i in indexes]


@dataclass
class Recorder:
    """What one run of a phase saw; `measuring` is off during the warm-up.

    `calls` counts every call, warm-up included (to divide Redis's command
    counts by); samples and errors are kept for the measured window only.
    """

    measuring: bool = False
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    flows: int = 0
    late: int = 0  # paced calls that started over 5 ms behind their slot

    def record(self, call: str, seconds: float, outcome: str | None) -> None:
        """`outcome` None is a success; otherwise it names the failure."""
        self.calls[call] += 1
        if not self.measuring:
            return
        if outcome is None:
            self.samples.setdefault(call, []).append(seconds)
        else:
            self.errors[f"{call}:{outcome}"] += 1


class Http11:
    """Keep-alive HTTP/1.1 connections to the measured server, on raw asyncio
    streams: the request written in one piece, the answer read by its
    Content-Length. aiohttp's client cost about 0.2 ms of CPU per call, as
    much as the bare endpoint it measured: on 2 cores the baseline was bound
    by the load generator, and the servers shared their cores with it."""

    def __init__(self, base_url: str, api_key: str) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self.headers = f"Host: {url.netloc}\r\n{auth}".encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Status and body of one call, on an idle connection or a new one."""
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self.headers
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT.total):
                writer.write(head + b"\r\n" + (body or b""))
                answer = await reader.readuntil(b"\r\n\r\n")
                status, length, close = _head(answer)
                raw = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status, raw

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def _head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server closes, from a response head."""
    lines = head.lower().split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip() == b"close"
    if length is None:
        raise ValueError("a response without Content-Length")
    return status, length, close


class Client:
    """The measured target (raw keep-alive connections) and the sink (aiohttp)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.target = Http11(spec.base_url, spec.api_key)
        self.sink = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=spec.concurrency),
            timeout=REQUEST_TIMEOUT,
        )

    async def close(self) -> None:
        self.target.close()
        await self.sink.close()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any, float]:
        """Status, parsed JSON body (or None) and the seconds the call took."""
        started = time.perf_counter()
        status, raw = await self.target.request("POST", path, json.dumps(body).encode())
        elapsed = time.perf_counter() - started
        return status, _parse(raw), elapsed

    async def code(self, challenge_id: str) -> str | None:
        """The code the sink received for a challenge, waiting for it a little."""
        url = f"{self.spec.sink_url}/code/{challenge_id}?wait_ms={SINK_WAIT_MS}"
        async with self.sink.get(url) as resp:
            if resp.status != 200:
                return None
            found: str = (await resp.json())["code"]
            return found

    async def open_connections(self) -> None:
        """Open `concurrency` keep-alive connections before anything is timed."""

        target, n = self.target, self.spec.concurrency
        opened = await asyncio.gather(
            *(asyncio.open_connection(target.host, target.port) for _ in range(n))
        )
        target.idle = list(opened)
        # Each request takes an idle connection before its first await: all n are used.
        await asyncio.gather(*(target.request("GET", "/healthz") for _ in range(n)))


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _failure(status: int, expected: int) -> str | None:
    return None if status == expected else f"http_{status}"


# --- operations: each returns False when it has nothing left to do ---------------


def bare_op(client: Client) -> Op:
    counter = itertools.count()

    async def op(rec: Recorder) -> bool:
        status, _, took = await client.post("/bare", {"n": next(counter)})
        rec.record("bare", took, _failure(status, 200))
        return True

    return op


def ready_op(client: Client) -> Op:
    async def op(rec: Recorder) -> bool:
        started = time.perf_counter()
        status, _ = await client.target.request("GET", "/readyz")
        rec.record("ready", time.perf_counter() - started, _failure(status, 200))
        return True

    return op


def accounts_op(client: Client) -> Op:
    spec = client.spec
    counter = itertools.count()

    async def op(rec: Recorder) -> bool:
        i = next(counter)
        if i >= spec.account_count:
            return False
        index = spec.account_start + i
        body = account_body(spec.account_prefix, index, phone_for(spec.phone_offset + index))
        status, _, took = await client.post("/accounts", body)
        rec.record("accounts", took, _failure(status, 201))
        return True

    return op


def challenge_op(client: Client, created: dict[str, str]) -> Op:
    accounts = client.spec.accounts
    counter = itertools.count()

    async def op(rec: Recorder) -> bool:
        account = accounts[next(counter) % len(accounts)]
        challenge_id = await _challenge(client, rec, account)
        if challenge_id is not None:
            created[account] = challenge_id
        return True

    return op


def flow_op(client: Client) -> Op:
    accounts = client.spec.accounts
    counter = itertools.count()

    async def op(rec: Recorder) -> bool:
        account = accounts[next(counter) % len(accounts)]
        challenge_id = await _challenge(client, rec, account)
        if challenge_id is None:
            return True
        code = await client.code(challenge_id)  # not timed: the SMS leg
        if code is None:
            rec.record("sink", 0.0, "no_code_in_time")
            return True
        if await _verify(client, rec, challenge_id, code) and rec.measuring:
            rec.flows += 1
        return True

    return op


def verify_op(client: Client) -> Op:
    pool = client.spec.pool
    counter = itertools.count()

    async def op(rec: Recorder) -> bool:
        i = next(counter)
        if i >= len(pool):
            return False
        challenge_id, code = pool[i]
        await _verify(client, rec, challenge_id, code)
        return True

    return op


async def _challenge(client: Client, rec: Recorder, account: str) -> str | None:
    """POST /challenge, recorded; the new challenge's id, or None when refused."""
    status, body, took = await client.post("/challenge", {"account_id": account})
    rec.record("challenge", took, _failure(status, 202))
    return str(body["challenge_id"]) if status == 202 else None


async def _verify(client: Client, rec: Recorder, challenge_id: str, code: str) -> bool:
    status, body, took = await client.post("/verify", {"challenge_id": challenge_id, "code": code})
    ok = status == 200 and isinstance(body, dict) and body.get("verified") is True
    rec.record("verify", took, None if ok else f"http_{status}")
    return ok


# --- the driver -------------------------------------------------------------------


async def drive(
    op: Op, rec: Recorder, concurrency: int, seconds: float, max_ops: int, rate: float = 0.0
) -> float:
    """Run `op` from `concurrency` workers until the deadline or the budget; wall seconds.

    Closed loop (each worker calls again as soon as it has its answer), or with
    `rate`, paced: call k starts at k / rate seconds, on whichever connection is
    free; a call that starts late because all were busy counts in `rec.late`.
    """
    begin = time.monotonic()
    deadline = begin + seconds
    issued = itertools.count()

    async def worker() -> None:
        while time.monotonic() < deadline:
            k = next(issued)
            if k >= max_ops:
                return
            if rate > 0:
                slot = begin + k / rate
                if slot >= deadline:
                    return
                delay = slot - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.005 and rec.measuring:
                    rec.late += 1
            try:
                if not await op(rec):
                    return
            except CALL_ERRORS as exc:
                rec.record("client", 0.0, type(exc).__name__)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def build_op(client: Client, created: dict[str, str]) -> Op:
    mode = client.spec.mode
    if mode == "bare":
        return bare_op(client)
    if mode == "ready":
        return ready_op(client)
    if mode == "accounts":
        return accounts_op(client)
    if mode == "challenge":
        return challenge_op(client, created)
    if mode == "flows":
        return flow_op(client)
    if mode == "verify":
        return verify_op(client)
    raise SystemExit(f"unknown mode {mode!r}")


async def run(spec: Spec) -> dict[str, Any]:
    client = Client(spec)
    created: dict[str, str] = {}
    rec = Recorder()
    try:
        op = build_op(client, created)
        await client.open_connections()
        if spec.warmup_seconds > 0:
            await drive(op, rec, spec.concurrency, spec.warmup_seconds, spec.max_ops, spec.rate)
        rec.measuring = True
        watched = {"loadgen": time.process_time()} | _cpu(spec.watch)
        elapsed = await drive(op, rec, spec.concurrency, spec.seconds, spec.max_ops, spec.rate)
        used = {"loadgen": time.process_time()} | _cpu(spec.watch)
    finally:
        await client.close()
    return {
        "mode": spec.mode,
        "elapsed": elapsed,
        "cpu": {k: 100 * (used[k] - watched[k]) / max(elapsed, 1e-9) for k in used},
        "samples": rec.samples,
        "errors": dict(rec.errors),
        "calls": dict(rec.calls),
        "flows": rec.flows,
        "late": rec.late,
        "created": created,
    }


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: proc_cpu_seconds(pid) for name, pid in pids.items()}


async def bounded(spec: Spec) -> dict[str, Any]:
    async with asyncio.timeout(spec.warmup_seconds + spec.seconds + 60):
        return await run(spec)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python bench/load.py SPEC.json OUT.json")
    spec = Spec.from_json(read_json(Path(sys.argv[1])))
    write_json(Path(sys.argv[2]), asyncio.run(bounded(spec)))


if __name__ == "__main__":
    main()
