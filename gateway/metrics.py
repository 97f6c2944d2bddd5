"""Prometheus metrics: one registry per process, labels from bounded sets only.

Never an account id, a phone number, a code or a raw path as a label: purposes
come from config, channels and outcomes from fixed lists, routes are templates.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from gateway import keys

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every metric of one process, in its own registry."""

    def __init__(self) -> None:
        # `_created` series double every counter for no use of ours.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.challenges = Counter(
            "otp_challenges", "Challenge requests by outcome.",
            ["purpose", "channel", "outcome"], registry=r,
        )  # fmt: skip
        self.verifications = Counter(
            "otp_verifications", "Verification attempts by outcome.",
            ["purpose", "outcome"], registry=r,
        )  # fmt: skip
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
        self.rate_limited = Counter(
            "otp_rate_limited", "Requests refused by a rate limit.", ["scope"], registry=r
        )
        self.sends_dropped = Counter(
            "otp_sends_dropped", "Queued sends dropped unsent.", ["reason"], registry=r
        )
        self.http_seconds = Histogram(
            "otp_http_request_duration_seconds", "HTTP request duration.",
            ["route", "method", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "otp_queue_depth", "Sends waiting in the queue or being sent.", registry=r
        )
        self.queue_oldest = Gauge(
            "otp_queue_oldest_seconds", "Age of the oldest send in the queue.", registry=r
        )
        self.provider_up = Gauge(
            "otp_provider_up", "1 while the provider takes sends.", ["provider"], registry=r
        )

    async def refresh_queue(self, redis: aioredis.Redis) -> None:
        """Read the queue's state from Redis, so any replica reports the truth."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.STREAM)
            pipe.xrange(keys.STREAM, count=1)
            depth, first = await pipe.execute()
        self.queue_depth.set(depth)
        oldest = 0.0
        if first:
            entry_ms = int(first[0][0].split(b"-")[0])
            oldest = max(0.0, time.time() - entry_ms / 1000)
        self.queue_oldest.set(oldest)

    def render(self) -> bytes:
        return generate_latest(self.registry)
