"""A circuit breaker per provider, kept in each process.

    closed ──(threshold consecutive failures)──► open ──(open_seconds)──► half-open
       ▲                                           ▲                          │
       └────────────── probe succeeds ─────────────┴──── probe fails ◄────────┘
                                                   (open time doubles, capped)

While open, the dispatcher skips the provider and goes on to the next one of
the channel; once the open time has passed, one send is let through as a
probe. Only failures of the provider (timeouts, refused connections, 5xx,
bugs) count; a provider that refuses one number is up.

The state lives in the process, not in Redis, on purpose: reachability is a
property of the path from this host to the provider (a worker on another host
may reach it fine); it costs no Redis round trip per send; and a dead provider
costs each process only `threshold` quick failures before it is skipped.
`otp_provider_up{provider}` shows this process's view (1 closed, 0 otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

MAX_OPEN_FACTOR = 16  # the open time doubles per failed probe, up to 16 times the base


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """Consecutive-failure breaker with a single half-open probe."""

    def __init__(
        self,
        threshold: int,
        open_seconds: float,
        on_change: Callable[[State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_open = open_seconds
        self._on_change = on_change
        self._clock = clock
        self.state = State.CLOSED
        self.failures = 0
        self._open_for = open_seconds
        self._reopen_at = 0.0

    def allow(self) -> bool:
        """May a send go to this provider now? In half-open, only the one probe may."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and self._clock() >= self._reopen_at:
            self._move(State.HALF_OPEN)
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self._reopen_at - self._clock())

    def success(self) -> None:
        self.failures = 0
        self._open_for = self.base_open
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)

    def failure(self) -> None:
        self.failures += 1
        if self.state is State.HALF_OPEN:
            self._open_for = min(self._open_for * 2, self.base_open * MAX_OPEN_FACTOR)
            self._open()
        elif self.state is State.CLOSED and self.failures >= self.threshold:
            self._open()

    def release(self) -> None:
        """A probe ended without a verdict (e.g. cancelled): let the next one through."""
        if self.state is State.HALF_OPEN:
            self._reopen_at = self._clock()
            self._move(State.OPEN)

    def _open(self) -> None:
        self._reopen_at = self._clock() + self._open_for
        self._move(State.OPEN)

    def _move(self, state: State) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)
