"""The per-provider circuit breaker, on a fake clock."""

from __future__ import annotations

from gateway.otp.breaker import Breaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures() -> None:
    changes: list[State] = []
    clock = Clock()
    breaker = Breaker(3, 10.0, changes.append, clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.allow() and breaker.state is State.CLOSED
    breaker.failure()
    assert breaker.state is State.OPEN and not breaker.allow()
    assert breaker.retry_in() == 10.0
    assert changes == [State.OPEN]


def test_one_probe_after_the_open_time_then_closed_on_success() -> None:
    clock = Clock()
    breaker = Breaker(1, 10.0, clock=clock)
    breaker.failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.retry_in() == 0
    assert breaker.allow() and breaker.state is State.HALF_OPEN
    assert not breaker.allow()  # a single probe at a time
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.allow()


def test_failed_probes_double_the_open_time_up_to_a_cap() -> None:
    clock = Clock()
    breaker = Breaker(1, 1.0, clock=clock)
    breaker.failure()
    waits = []
    for _ in range(7):
        clock.now += breaker.retry_in()
        assert breaker.allow()
        breaker.failure()
        waits.append(breaker.retry_in())
    assert waits == [2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]
    clock.now += 16
    assert breaker.allow()
    breaker.success()
    breaker.failure()
    assert breaker.retry_in() == 1.0  # back to the base after recovering


def test_a_probe_without_verdict_lets_the_next_one_through() -> None:
    clock = Clock()
    breaker = Breaker(1, 5.0, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    breaker.release()
    assert breaker.state is State.OPEN and breaker.allow()
