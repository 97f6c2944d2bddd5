"""Prometheus metrics: one registry per process, labels from bounded sets only.

Never an account id, a phone number, a code or a raw path as a label: purposes
come from config, channels and outcomes from fixed lists, countries from the
`[phones] allowed_regions` allow-list, routes are templates, methods a fixed
list. Each process (every gateway, every standalone worker) serves its own
registry; the queue and Redis gauges are read from Redis at scrape time
(`refresh`), so any process reports the shared truth.

Under `--processes N` (`gateway/supervisor.py`) the processes of one port
share their values through prometheus-client's multiprocess mode: each writes
its own files under PROMETHEUS_MULTIPROC_DIR (set by the supervisor before
prometheus-client is imported), and a scrape, whichever process answers it,
adds up every process's counters and histograms (those of exited processes
included, so a total never goes back). Each gauge says how its values combine
(`multiprocess_mode`, below); per-process `process_*` metrics are left out
there, as no single process speaks for the group.
"""

from __future__ import annotations

import asyncio
import os
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Literal, TypeVar

import redis.asyncio as aioredis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from gateway import keys
from gateway.cluster import reachable
from gateway.config import Config

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CHANNELS = ("sms", "voice")
# Outcomes of a provider call (gateway/otp/dispatch.py); circuit_open: skipped, breaker open.
DELIVERY_OUTCOMES = ("accepted", "rejected", "unavailable", "error", "circuit_open")
# Why a send was dead-lettered (gateway/otp/queue.py Failure; a test keeps them equal).
DEAD_LETTER_REASONS = ("malformed", "unreadable", "all_providers_failed", "error")
VOICE_OUTCOMES = ("answered", "no_answer", "busy", "machine", "failed")
# The scopes of `RateLimited` (gateway/otp/challenges.py RATE_MESSAGES; a test keeps them equal).
RATE_SCOPES = (
    "cooldown", "account", "number", "ip", "country", "establishment", "global",
    "failures", "sends",
)  # fmt: skip
# Every code POST /verify can fail with: the contract's, plus the generic ones.
VERIFY_FAILURES = (
    "invalid_code",
    "too_many_attempts",
    "expired",
    "already_used",
    "challenge_not_found",
    "rate_limited",
    "invalid_request",
    "account_suspended",
    "account_expired",
)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable

M = TypeVar("M", Counter, Gauge, Histogram)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


def _package_version() -> str:
    try:
        return version("otp-gateway")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def shared() -> bool:
    """True when this process's values go to the files of a process group."""
    return bool(os.environ.get(MULTIPROCESS_DIR))


def method_label(method: str) -> str:
    """The HTTP method, or "other": a client must not mint label values."""
    return method if method in HTTP_METHODS else OTHER


class Metrics:
    """Every metric of one process, in its own registry."""

    def __init__(self) -> None:
        # `_created` series double every counter for no use of ours.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self._regions: frozenset[str] = frozenset()
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        self._define_otp(self.registry)
        self._define_delivery(self.registry)
        self._define_state(self.registry)
        self._scraped = self.registry
        if shared():
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped)  # type: ignore[no-untyped-call]
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def _define_otp(self, r: CollectorRegistry) -> None:
        self.challenges = Counter(
            "otp_challenges", "POST /challenge outcomes: queued, trusted_device or the error code.",
            ["purpose", "channel", "outcome"], registry=r,
        )  # fmt: skip
        self.verifications = Counter(
            "otp_verifications", "POST /verify outcomes: verified or the error code.",
            ["purpose", "outcome"], registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            "otp_rate_limited", "Requests refused by a rate limit, by limit.", ["scope"],
            registry=r,
        )  # fmt: skip
        self.sends_by_country = Counter(
            "otp_sends_by_country", "Sends queued (first sends and resends) by destination region.",
            ["country"], registry=r,
        )  # fmt: skip
        self.http_seconds = Histogram(
            "otp_http_request_duration_seconds", "HTTP request duration, by route template.",
            ["route", "method", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def _define_delivery(self, r: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "otp_deliveries", "Provider send attempts by outcome.",
            ["provider", "channel", "outcome"], registry=r,
        )  # fmt: skip
        self.delivery_seconds = Histogram(
            "otp_delivery_seconds", "Time from challenge created to provider accepted.",
            ["provider", "channel"], buckets=_DELIVERY_BUCKETS, registry=r,
        )  # fmt: skip
        self.voice_calls = Counter(
            "otp_voice_calls", "Voice call outcomes (answered, no_answer, busy, machine, failed).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.unreachable = Counter(
            "otp_unreachable", "Challenges given up on, by the last send's channel.",
            ["channel"], registry=r,
        )  # fmt: skip
        self.sends_dropped = Counter(
            "otp_sends_dropped", "Queued sends dropped unsent, by reason.", ["reason"], registry=r
        )
        self.dead_lettered = Counter(
            "otp_sends_dead_lettered", "Sends moved to the dead-letter stream, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.webhook_events = Counter(
            "otp_webhook_events", "Challenge events queued for webhooks (one per webhook), or "
            "lost (Redis out of reach), by event.", ["event", "outcome"], registry=r,
        )  # fmt: skip
        self.webhook_posts = Counter(
            "otp_webhook_posts", "Webhook POSTs by webhook (its configured name) and outcome: "
            "delivered, failed (retried later), dead_lettered.", ["webhook", "outcome"], registry=r,
        )  # fmt: skip
        # Each process has its own breakers: 0 as soon as one process's is open.
        self.provider_up = Gauge(
            "otp_provider_up", "1 while the provider takes sends (its breaker is closed).",
            ["provider"], registry=r, multiprocess_mode="livemin",
        )  # fmt: skip

    def _define_state(self, r: CollectorRegistry) -> None:
        # Read from Redis by the process that answers the scrape: its reading is
        # the group's (the most recent of the live processes' values).
        now: Literal["livemostrecent"] = "livemostrecent"
        self.queue_depth = Gauge(
            "otp_queue_depth", "Sends waiting in the queue or being sent (read from Redis).",
            registry=r, multiprocess_mode=now,
        )  # fmt: skip
        self.queue_oldest = Gauge(
            "otp_queue_oldest_seconds", "Age of the oldest send in the queue (read from Redis).",
            registry=r, multiprocess_mode=now,
        )  # fmt: skip
        self.dead_letters = Gauge(
            "otp_dead_letters", "Entries in the dead-letter stream (read from Redis).",
            registry=r, multiprocess_mode=now,
        )  # fmt: skip
        self.redis_up = Gauge(
            "otp_redis_up", "1 when Redis answered PING at the last scrape.", registry=r,
            multiprocess_mode=now,
        )  # fmt: skip
        self.build_info = Gauge(
            "otp_build_info", "Always 1; the running version as a label.", ["version"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.build_info.labels(_package_version()).set(1)

    def prime(self, config: Config) -> None:
        """Create the expected series at 0, so rates and ratios exist from the start.

        A counter that appears at its first increment loses that increment in
        `rate()`, and a ratio with no denominator series is no ratio at all.
        """
        self._regions = frozenset(config.phones.allowed_regions)
        for region in self._regions:
            self.sends_by_country.labels(region)
        for purpose in config.otp.purposes:
            self.verifications.labels(purpose, "verified")
            for channel in CHANNELS:
                self.challenges.labels(purpose, channel, "queued")
        for failure in VERIFY_FAILURES:
            self.verifications.labels("unknown", failure)
        self._prime_fixed()
        for provider in config.providers:
            for channel in provider.channels:
                for outcome in DELIVERY_OUTCOMES:
                    self.deliveries.labels(provider.name, channel, outcome)
        for hook in config.webhooks:
            for outcome in ("delivered", "failed", "dead_lettered"):
                self.webhook_posts.labels(hook.name, outcome)

    def _prime_fixed(self) -> None:
        """The series whose label values are fixed lists, config or not."""
        for scope in RATE_SCOPES:
            self.rate_limited.labels(scope)
        for outcome in VOICE_OUTCOMES:
            self.voice_calls.labels(outcome)
        for channel in CHANNELS:
            self.unreachable.labels(channel)
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(reason)

    def child(self, metric: M, *values: str) -> M:
        """`metric.labels(*values)`, remembered: prometheus_client takes a lock and
        checks the values on every call, which the request path pays each time.
        Label values come from bounded sets, so the cache is bounded too."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]

    def country_label(self, region: str) -> str:
        """The region if it is on the allow-list, else "other" (bounded cardinality)."""
        return region if region in self._regions else OTHER

    def count_send(self, region: str) -> None:
        """One send queued to a destination in `region`."""
        self.child(self.sends_by_country, self.country_label(region)).inc()

    async def refresh(self, redis: aioredis.Redis, within: float) -> None:
        """PING Redis and read the queue's state, in one round trip; never raises.
        A cluster is up when every primary says its state is ok (`reachable`).

        Without Redis, `otp_redis_up` goes to 0 and the queue gauges keep
        their last values.
        """
        cluster = isinstance(redis, RedisCluster)
        try:
            async with asyncio.timeout(within):
                if cluster and not await reachable(redis):
                    raise RedisError("cluster not ready")
                async with redis.pipeline(transaction=False) as pipe:
                    if not cluster:  # a cluster's pipelines refuse PING: `reachable` did it
                        pipe.ping()
                    for stream, dead in zip(keys.STREAMS, keys.DEAD_LETTERS, strict=True):
                        pipe.xlen(stream)
                        pipe.xrange(stream, count=1)
                        pipe.xlen(dead)
                    replies = await pipe.execute()
                    if not cluster:
                        replies = replies[1:]
        except (RedisError, RedisClusterException, OSError, TimeoutError):
            self.redis_up.set(0)
            return
        self.redis_up.set(1)
        # The queue is one stream per slot group: the gauges sum them (the oldest
        # entry is the oldest of their heads).
        self.queue_depth.set(sum(replies[0::3]))
        self.queue_oldest.set(max(_age_of(first) for first in replies[1::3]))
        self.dead_letters.set(sum(replies[2::3]))

    def render(self) -> bytes:
        """The scrape: this process's registry, or the whole group's files."""
        return generate_latest(self._scraped)


def restart_counter(role: str) -> Counter:
    """The supervisor's `otp_process_restarts_total{role}`, at 0 from the start."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    restarts = Counter(
        "otp_process_restarts", "Processes of `--processes N` restarted after they exited.",
        ["role"], registry=CollectorRegistry(),
    )  # fmt: skip
    return restarts.labels(role)


def process_gone(pid: int) -> None:
    """Forget an exited process's live gauges (its counters stay in the sums)."""
    mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _age_of(first: list[tuple[bytes, object]]) -> float:
    """Seconds since the oldest stream entry was added (its id is its time)."""
    if not first:
        return 0.0
    entry_ms = int(first[0][0].split(b"-")[0])
    return max(0.0, time.time() - entry_ms / 1000)
