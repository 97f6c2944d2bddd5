"""Waiting for a condition, within a deadline: never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def poll(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 5.0,
    every: float = 0.02,
    what: str = "condition",
) -> None:
    """Wait until `check()` is true, failing the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)


def wait_until(
    check: Callable[[], bool], within: float = 15, every: float = 0.02, what: str = "condition"
) -> None:
    """`poll` for synchronous tests: wait until `check()` is true, within `within` s."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)
