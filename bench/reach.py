"""otp-gateway delivery benchmark: sends through the queue, and codes that reach people.

    python bench/reach.py [--quick] [--sends N] [--people N] [--rate R]

Starts, on 127.0.0.1 and in a temporary directory: a redis-server, two Twilio
simulators (`otp-gateway simulate twilio`), the gateway's API (`serve
--no-worker`) and `otp-gateway worker` processes. Prints, each next to a
baseline measured in the same run:

1. **sends/s** through the queue to the simulator, with one and with two
   worker processes: N SMS challenges are queued with no worker running, then
   the workers start; sends/s = N / (last - first provider request the
   simulator received). Baseline: the same N `Messages.json` requests posted
   straight to the simulator by one client (no gateway, no Redis).
2. **challenge -> provider request**, p50/p99: challenges at a steady rate,
   two workers running; the time from sending `POST /challenge` to the
   simulator receiving the provider's request. Baseline: the round trip of a
   `Messages.json` request posted straight to the simulator.
3. **reach**: 1,000 people (40% on landlines, called; 60% on mobiles, texted)
   at 20 challenges/s. The simulator draws every attempt's outcome
   independently: per call, no answer 20%, busy 7%, voicemail or switchboard
   8%, a person who answers but never presses a key 2%; per SMS, undelivered
   3% (`--first-only`: only the first call and SMS to a number fail, the old
   model). One of the two SMS providers is down for the whole run (503). Each
   person types the code as soon as it reaches them (SMS delivered, or heard in
   a call). Times are scaled down ten times: TTL 30 s, ring 2 s, and the
   gateway's defaults divided by ten (`retry_delay_seconds` 2, `busy_retry_
   delay_seconds` 1, `answer_window_seconds` 6). Prints the share of people
   whose code reached them inside the TTL and verified, by line, and p50/p90/
   p99 of the time to the code, by the channel that reached them, for the
   defaults, the round-1 defaults (`max_calls = 3`, no SMS fallback, no key
   press) and the single-call baseline (`max_calls = 1`, no SMS fallback, no
   key press). `--reach-only` skips parts 1 and 2.

Everything it starts is stopped before it exits, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config.model import VoiceConfig
from gateway.embedded import RedisServer, free_port
from gateway.simulator.twilio import DEFAULT_SID, DEFAULT_TOKEN

HOST = "127.0.0.1"

GENEROUS = "1000000/1m"
AUTH = {"Authorization": aiohttp.encode_basic_auth(DEFAULT_SID, DEFAULT_TOKEN)}
MESSAGES = f"/2010-04-01/Accounts/{DEFAULT_SID}/Messages.json"
TTL = 30  # reach: the 300 s TTL scaled down ten times
RING = 2.0
REACH_RATE = 20.0  # challenges/s
REACH_MIX = {"no_answer": 0.20, "busy": 0.07, "machine": 0.08, "no_press": 0.02,
             "sms_undelivered": 0.03}  # fmt: skip
LANDLINE_SHARE = 0.4
TARGET_SHARE, TARGET_P99 = 0.995, 18.0  # >= 99.5% inside the TTL, p99 < 180 s (scaled)
# [voice] and [sms] of each reach run, times scaled down ten times; "defaults"
# follows the gateway's own defaults (gateway/config/model.py).
_VOICE = VoiceConfig()
REACH_RUNS = {
    "defaults": ("defaults (scaled)", f"retry_delay_seconds = {_VOICE.retry_delay_seconds / 10}\n"
                 f"busy_retry_delay_seconds = {_VOICE.busy_retry_delay_seconds / 10}\n"
                 f"answer_window_seconds = {_VOICE.answer_window_seconds / 10}", ""),
    "round1": ("round-1 defaults (max_calls 3)", "retry_delay_seconds = 3.0\n"
               "busy_retry_delay_seconds = 3.0\nanswer_window_seconds = 0\nmax_calls = 3\n"
               "require_keypress = false", "fallback_to_voice = false"),
    "once": ("single call (baseline)", "max_calls = 1\nrequire_keypress = false",
             "fallback_to_voice = false"),
}  # fmt: skip


@dataclass(frozen=True)
class Options:
    sends: int
    people: int
    rate: float
    latency_count: int
    reach_only: bool = False
    first_only: bool = False


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (smaller counts)")
    parser.add_argument("--sends", type=int, help="SMS per sends/s run (default 3000)")
    parser.add_argument("--people", type=int, help="challenges in the reach run (default 1000)")
    parser.add_argument("--rate", type=float, default=25.0, help="challenges/s (default 25)")
    parser.add_argument("--reach-only", action="store_true", help="only part 3, reach")
    parser.add_argument("--first-only", action="store_true",
                        help="reach: only first attempts fail (the old model)")  # fmt: skip
    args = parser.parse_args(argv)
    sends = args.sends or (600 if args.quick else 3000)
    people = args.people or (200 if args.quick else 1000)
    if not 10 <= sends <= 100_000 or not 10 <= people <= 100_000 or not 1 <= args.rate <= 500:
        parser.error("--sends and --people 10-100000, --rate 1-500")
    return Options(
        sends, people, args.rate, 200 if args.quick else 1000, args.reach_only, args.first_only
    )


# --- statistics ----------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def mobile_for(index: int) -> str:
    """A distinct mobile number per index: "+33 6 5X XX XX XX"."""
    digits = f"5{index:07d}"
    return "+33 6 " + " ".join(digits[i : i + 2] for i in range(0, 8, 2))


def account_body(account: str, index: int, phone: str) -> dict[str, Any]:
    """The POST /accounts body; establishments of 20, as in a real deployment."""
    return {"account_id": account, "establishment": f"Reach {account[:3]} {index // 20}",
            "last_name": "Bench", "first_name": "User", "role": "user",
            "email": f"{account}@bench.example.org", "phone": phone}  # fmt: skip


def landline_for(index: int) -> str:
    """A distinct Paris fixed line per index: "+33 1 4X XX XX XX"."""
    digits = f"4{index:07d}"
    return "+33 1 " + " ".join(digits[i : i + 2] for i in range(0, 8, 2))


def challenge_of(status_callback: str) -> str:
    query = urllib.parse.urlparse(status_callback).query
    return urllib.parse.parse_qs(query).get("c", [""])[0]


# --- child processes ---------------------------------------------------------------------


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "otp-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Child:
    """One process we started; stopped with SIGTERM (then SIGKILL) whatever happens."""

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, url: str | None, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            if url is None or http_ok(url):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready:\n{self.tail()}")

    def stop(self) -> None:
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if time.monotonic() - started > 2:
            progress(f"{self.name} took {time.monotonic() - started:.1f} s to stop")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


# --- the world ----------------------------------------------------------------------------


@dataclass
class World:
    """Redis, two simulators, and the gateway processes of the current phase."""

    work: Path
    stack: contextlib.ExitStack
    redis: RedisServer = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)
    gateway: list[Child] = field(default_factory=list)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(40))
    otp_key: str = field(default_factory=lambda: "otp-" + secrets.token_urlsafe(24))
    ops_key: str = field(default_factory=lambda: "ops-" + secrets.token_urlsafe(24))

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.ports[name]}"

    def start(self) -> None:
        self.ports = {name: free_port() for name in ("api", "sim", "down")}
        self.redis = RedisServer(self.work / "redis", appendfsync="everysec")
        self.stack.callback(self.redis.stop)
        self.redis.start()
        for name in ("sim", "down"):
            argv = [*gateway_command(), "simulate", "twilio", "--port", str(self.ports[name])]
            child = Child(name, argv, self.work)
            self.stack.callback(child.stop)
            child.wait_ready(f"{self.url(name)}/_sim/stats")

    def start_gateway(self, config: str, workers: int) -> None:
        self.stop_gateway()
        path = self.work / f"{config}.toml"
        api = Child("api", [*gateway_command(), "serve", "--no-worker", "--config", str(path)],
                    self.work)  # fmt: skip
        self.gateway.append(api)
        api.wait_ready(f"{self.url('api')}/healthz")
        self.start_workers(config, workers)

    def start_workers(self, config: str, workers: int) -> None:
        path = self.work / f"{config}.toml"
        for i in range(workers):
            child = Child(f"worker{i}", [*gateway_command(), "worker", "--config", str(path)],
                          self.work)  # fmt: skip
            self.gateway.append(child)
            child.wait_ready(None)

    def stop_gateway(self) -> None:
        for child in reversed(self.gateway):
            child.stop()
        self.gateway.clear()

    def write_config(self, name: str, providers: str, voice: str = "", sms: str = "") -> None:
        limits = "\n".join(
            f'{n} = "{GENEROUS}"' for n in ("account", "number", "country", "global", "failures")
        )
        (self.work / f"{name}.toml").write_text(f"""
[server]
host = "{HOST}"
port = {self.ports["api"]}
public_url = "{self.url("api")}"

[redis]
url = "{self.redis.url}"

[security]
secret = "{self.secret}"

[otp]
ttl_seconds = {TTL if name.startswith("reach") else 300}
resend_cooldown_seconds = 0

[rate_limits]
{limits}

[worker]
metrics_port = 0
claim_idle_seconds = 10

[logging]
level = "warning"

[voice]
{voice}

[sms]
{sms}

[[api_keys]]
name = "bench"
key = "{self.otp_key}"
scopes = ["otp"]

[[api_keys]]
name = "ops"
key = "{self.ops_key}"
scopes = ["operator"]
{providers}
""")

    def provider(self, name: str, sim: str, channels: str) -> str:
        return f"""
[[providers]]
name = "{name}"
kind = "twilio"
channels = {channels}
base_url = "{self.url(sim)}"
account_sid = "{DEFAULT_SID}"
auth_token = "{DEFAULT_TOKEN}"
from_number = "+33159000000"
ring_seconds = 5
"""


# --- the client ------------------------------------------------------------------------------


class Client:
    """The front end and the operators: accounts, challenges, verifications."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.session = self._session()

    @staticmethod
    def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def start_gateway(self, config: str, workers: int) -> None:
        """(Re)start the gateway; connections kept alive to the old one are dropped."""
        await self.session.close()
        self.world.start_gateway(config, workers)
        self.session = self._session()

    async def close(self) -> None:
        await self.session.close()

    async def post(self, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        url = self.world.url("api") + path
        async with self.session.post(
            url, json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            return r.status, await r.json()

    async def accounts(self, prefix: str, phones: list[str]) -> None:
        slots = asyncio.Semaphore(32)

        async def one(i: int, phone: str) -> None:
            async with slots:
                body = account_body(f"{prefix}{i:06d}", i, phone)
                status, reply = await self.post("/accounts", body, self.world.ops_key)
                if status != 201:
                    raise RuntimeError(f"POST /accounts: {status} {reply}")

        await asyncio.gather(*(one(i, p) for i, p in enumerate(phones)))

    async def challenge(self, account: str) -> tuple[str, float]:
        started = time.time()
        status, reply = await self.post("/challenge", {"account_id": account}, self.world.otp_key)
        if status != 202:
            raise RuntimeError(f"POST /challenge: {status} {reply}")
        return reply["challenge_id"], started

    async def sim(self, name: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.world.url(name) + path
        if body is None:
            async with self.session.get(url) as resp:
                return await resp.json()
        async with self.session.post(url, json=body) as resp:
            return await resp.json()

    async def reached(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        reply = await self.sim("sim", f"/_sim/reached?since={since}")
        return reply["reached"], reply["next"]


async def wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- 1. sends/s -----------------------------------------------------------------------------


async def bare_sends(client: Client, count: int) -> float:
    """Messages.json straight to the simulator, 32 at a time: requests/s."""
    await client.sim("sim", "/_sim/reset", {})
    url = client.world.url("sim") + MESSAGES
    callback = client.world.url("api") + "/healthz"  # answered at once (405)
    slots = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        form = {"To": f"+336{i:08d}", "From": "+33159000000", "Body": f"Code {i:06d} de test.",
                "StatusCallback": callback}  # fmt: skip
        async with slots, client.session.post(url, data=form, headers=AUTH) as resp:
            await resp.read()
            if resp.status != 201:
                raise RuntimeError(f"simulator answered {resp.status}")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def queued_sends(client: Client, count: int, workers: int, offset: int) -> float:
    """Queue `count` SMS with no worker, start `workers` of them: sends/s at the simulator."""
    world = client.world
    await client.start_gateway("sends", 0)
    prefix = f"s{workers}-"
    await client.accounts(prefix, [mobile_for(offset + i) for i in range(count)])
    await client.sim("sim", "/_sim/reset", {})
    slots = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with slots:
            await client.challenge(f"{prefix}{i:06d}")

    await asyncio.gather(*(one(i) for i in range(count)))
    world.start_workers("sends", workers)

    async def all_reached() -> bool:
        return bool((await client.sim("sim", "/_sim/stats"))["reached"] >= count)

    await wait_for(all_reached, 300, f"{count} SMS at the simulator")
    events, _ = await client.reached()
    received = sorted(e["received_at"] for e in events)
    return (count - 1) / (received[-1] - received[0])


# --- 2. challenge -> provider request ---------------------------------------------------------


async def paced(count: int, rate: float, job: Callable[[int], Awaitable[None]]) -> None:
    """`job(i)` for each i, started at a steady `rate` per second."""
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(job(i)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


async def arrivals(client: Client, count: int, started: dict[str, float]) -> list[float]:
    """Seconds from each start to the simulator receiving the request."""

    async def all_reached() -> bool:
        return bool((await client.sim("sim", "/_sim/stats"))["reached"] >= count)

    await wait_for(all_reached, 120, "every SMS")
    events, _ = await client.reached()
    return [e["received_at"] - started[challenge_of(e["status_callback"])] for e in events]


async def bare_latency(client: Client, count: int, rate: float) -> list[float]:
    """The same measure for Messages.json posted straight to the simulator at `rate`."""
    await client.sim("sim", "/_sim/reset", {})
    url = client.world.url("sim") + MESSAGES
    callback = client.world.url("api") + "/healthz"
    started: dict[str, float] = {}

    async def one(i: int) -> None:
        form = {"To": f"+336{i:08d}", "From": "+33159000000", "Body": f"Code {i:06d} de test.",
                "StatusCallback": f"{callback}?c={i}"}  # fmt: skip
        started[str(i)] = time.time()
        async with client.session.post(url, data=form, headers=AUTH) as resp:
            await resp.read()

    await paced(count, rate, one)
    return await arrivals(client, count, started)


async def latency(client: Client, count: int, rate: float, offset: int) -> list[float]:
    """Seconds from POST /challenge to the provider request, at `rate` challenges/s."""
    await client.start_gateway("sends", 2)
    prefix = "lat-"
    await client.accounts(prefix, [mobile_for(offset + i) for i in range(count)])
    await client.sim("sim", "/_sim/reset", {})
    started: dict[str, float] = {}

    async def one(i: int) -> None:
        challenge_id, at = await client.challenge(f"{prefix}{i:06d}")
        started[challenge_id] = at

    await paced(count, rate, one)
    return await arrivals(client, count, started)


# --- 3. reach ------------------------------------------------------------------------------------


@dataclass
class Person:
    account: str
    phone: str
    landline: bool
    challenge_id: str = ""
    started: float = 0.0
    reached_at: float | None = None
    kind: str = ""
    verified: int = 0


class Crowd:
    """The people of one reach run, and the event set once each was reached."""

    def __init__(self, people: list[Person]) -> None:
        self.people = people
        self.by_challenge: dict[str, Person] = {}
        self.early: list[dict[str, Any]] = []  # events seen before their challenge's 202
        self.everyone = asyncio.Event()
        self._left = len(people)

    def reached(self, person: Person, event: dict[str, Any]) -> None:
        person.reached_at, person.kind = event["reached_at"], event["kind"]
        self._left -= 1
        if self._left == 0:
            self.everyone.set()


async def reach(client: Client, opts: Options, offset: int, run: str, seed: int) -> list[Person]:
    """One reach run with the `[voice]` and `[sms]` of REACH_RUNS[run]."""
    people, rate, prefix = opts.people, REACH_RATE, f"{run[:2]}-"
    crowd = Crowd([_person(prefix, i, offset) for i in range(people)])
    await client.start_gateway(f"reach-{run}", 2)
    await client.accounts(prefix, [p.phone for p in crowd.people])
    await client.sim("sim", "/_sim/reset", {})
    await client.sim("sim", "/_sim/settings", {"ring_seconds": RING})
    mix = {**REACH_MIX, "seed": seed, "first_only": opts.first_only}
    await client.sim("sim", "/_sim/mix", mix)
    stop = asyncio.Event()
    typing = asyncio.create_task(_type_codes(client, crowd, stop))

    async def ask(i: int) -> None:
        person = crowd.people[i]
        person.challenge_id, person.started = await client.challenge(person.account)
        crowd.by_challenge[person.challenge_id] = person

    try:
        await paced(people, rate, ask)
        # Until everyone was reached, or the last challenge's TTL has passed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(crowd.everyone.wait(), TTL + 2)
    finally:
        stop.set()
        await typing
    return crowd.people


def _person(prefix: str, i: int, offset: int) -> Person:
    landline = (i % 10) < LANDLINE_SHARE * 10
    phone = landline_for(offset + i) if landline else mobile_for(offset + i)
    return Person(f"{prefix}{i:06d}", phone, landline)


async def _type_codes(client: Client, crowd: Crowd, stop: asyncio.Event) -> None:
    """Each person types the code as soon as it reaches them (polled every 50 ms)."""
    since = 0
    while not stop.is_set():
        events, since = await client.reached(since)
        events, crowd.early = crowd.early + events, []
        await asyncio.gather(*(_typed(client, crowd, e) for e in events))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def _typed(client: Client, crowd: Crowd, event: dict[str, Any]) -> None:
    person = crowd.by_challenge.get(challenge_of(event["status_callback"]))
    if person is None:
        crowd.early.append(event)
        return
    if person.reached_at is not None:
        return  # a second code for the same person (e.g. an SMS and a call)
    crowd.reached(person, event)
    body = {"challenge_id": person.challenge_id, "code": event["code"]}
    person.verified, _ = await client.post("/verify", body, client.world.otp_key)


def _inside(p: Person) -> bool:
    return p.reached_at is not None and p.reached_at - p.started < TTL and p.verified == 200


def _times(people: list[Person]) -> dict[str, float]:
    times = [p.reached_at - p.started for p in people if p.reached_at is not None]
    return {f"p{q}": percentile(times, q) for q in (50, 90, 99)} | {"n": len(times)}


def reach_summary(crowd: list[Person]) -> dict[str, Any]:
    """Who was reached and verified inside the TTL, by line; times to the code by channel."""
    inside = [p for p in crowd if _inside(p)]
    lines = {"landlines": [p for p in crowd if p.landline],
             "mobiles": [p for p in crowd if not p.landline]}  # fmt: skip
    paths = Counter(
        f"{'landline' if p.landline else 'mobile'} by {p.kind or 'nothing'}" for p in crowd
    )
    return {
        "share": len(inside) / len(crowd),
        "lines": {k: sum(map(_inside, v)) / max(1, len(v)) for k, v in lines.items()},
        "times": _times(inside),
        "by_channel": {ch: _times([p for p in inside if p.kind == ch]) for ch in ("sms", "voice")},
        "paths": dict(paths),
        "n": len(crowd),
    }


# --- the run --------------------------------------------------------------------------------------


def write_configs(world: World) -> None:
    sms_only = '["sms"]'
    both = '["sms", "voice"]'
    world.write_config("sends", world.provider("twilio", "sim", both))
    providers = world.provider("down", "down", sms_only) + world.provider("twilio", "sim", both)
    for run, (_, voice, sms) in REACH_RUNS.items():
        world.write_config(f"reach-{run}", providers, voice, sms)


async def run(opts: Options, world: World) -> dict[str, Any]:
    results: dict[str, Any] = {}
    client = Client(world)
    try:
        await client.sim("down", "/_sim/settings", {"outage": 503})
        if not opts.reach_only:
            await sends_and_latency(opts, client, results)
        offset = 2 * opts.sends + opts.latency_count
        for seed, run in enumerate(REACH_RUNS, start=7):
            progress(f"reach: {run}")
            people = await reach(client, opts, offset, run, seed)
            results[run] = reach_summary(people)
            offset += opts.people
        results["down"] = (await client.sim("down", "/_sim/stats"))["requests"]
    finally:
        await client.close()
    world.stop_gateway()
    return results


async def sends_and_latency(opts: Options, client: Client, results: dict[str, Any]) -> None:
    """Parts 1 and 2: sends/s through the queue, and challenge -> provider request."""
    await client.sim("sim", "/_sim/settings", {"ring_seconds": 0.05})
    await client.start_gateway("sends", 0)  # answers the baseline's callbacks
    progress("baseline sends")
    results["bare"] = await bare_sends(client, opts.sends)
    progress("1 worker")
    results["one"] = await queued_sends(client, opts.sends, 1, 0)
    progress("2 workers")
    results["two"] = await queued_sends(client, opts.sends, 2, opts.sends)
    progress("latency")
    results["bare_latency"] = await bare_latency(client, opts.latency_count, opts.rate)
    results["latency"] = await latency(client, opts.latency_count, opts.rate, 2 * opts.sends)


def report(opts: Options, r: dict[str, Any]) -> None:
    if not opts.reach_only:
        report_sends(opts, r)
    report_reach(opts, r)


def report_sends(opts: Options, r: dict[str, Any]) -> None:
    bare_rate = r["bare"]
    ms = [t * 1000 for t in r["latency"]]
    bare_ms = [t * 1000 for t in r["bare_latency"]]
    print(f"\n== sends through the queue to the simulator ({opts.sends} SMS each) ==")
    print(f"  baseline (Messages.json posted directly)  {bare_rate:8.0f} requests/s")
    for name, label in (("one", "1 worker process"), ("two", "2 worker processes")):
        print(f"  {label:40} {r[name]:8.0f} sends/s  ({r[name] / bare_rate:.0%} of baseline)")
    print(f"\n== POST /challenge -> provider request ({len(ms)} at {opts.rate:g}/s, 2 workers) ==")
    print(f"  baseline (Messages.json posted directly)  p50 {percentile(bare_ms, 50):6.1f} ms"
          f"  p99 {percentile(bare_ms, 99):6.1f} ms")  # fmt: skip
    print(f"  gateway                                   p50 {percentile(ms, 50):6.1f} ms"
          f"  p99 {percentile(ms, 99):6.1f} ms")  # fmt: skip


def _times_line(t: dict[str, float]) -> str:
    return f"p50 {t['p50']:5.2f} s  p90 {t['p90']:5.2f} s  p99 {t['p99']:5.2f} s  (n {t['n']})"


def report_reach(opts: Options, r: dict[str, Any]) -> None:
    model = "first attempts only" if opts.first_only else "every attempt drawn independently"
    print(f"\n== reach: {opts.people} people at {REACH_RATE:g}/s, TTL {TTL} s, ring {RING:g} s "
          "(times scaled down 10x) ==")  # fmt: skip
    print(f"  mix ({model}): per call no answer 20%, busy 7%, machine 8%, no key press 2%;")
    print("       per SMS undelivered 3%; one of the two SMS providers down (503) the whole run")
    for run, (label, _, _) in REACH_RUNS.items():
        s = r[run]
        lines = ", ".join(f"{k} {v:.1%}" for k, v in s["lines"].items())
        print(f"  {label:32} reached and verified {s['share']:7.2%} ({lines})")
        print(f"      time to the code      {_times_line(s['times'])}")
        for channel, times in s["by_channel"].items():
            print(f"        by {channel:5}             {_times_line(times)}")
        print(f"      {', '.join(f'{k}: {v}' for k, v in sorted(s['paths'].items()))}")
    d = r["defaults"]
    verdict = d["share"] >= TARGET_SHARE and d["times"]["p99"] < TARGET_P99
    print(f"  target on the defaults: >= {TARGET_SHARE:.1%} reached, p99 < {TARGET_P99:g} s: "
          f"{'PASS' if verdict else 'FAIL'}")  # fmt: skip
    print(f"  requests to the provider that was down: {r['down']} (the breakers skip it)")


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every child is stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    opts = parse_options()
    with (sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="otp-reach-") as tmp,
          contextlib.ExitStack() as stack):  # fmt: skip
        world = World(Path(tmp), stack)
        stack.callback(world.stop_gateway)
        try:
            world.start()
            write_configs(world)
            results = asyncio.run(run(opts, world))
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-1500:]}",
                      file=sys.stderr)  # fmt: skip
            raise
    report(opts, results)


if __name__ == "__main__":
    main()
