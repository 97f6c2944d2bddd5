"""The event loop a process runs: uvloop when it is installed, else asyncio's own.

`[server] event_loop`: `auto` (the default: uvloop if importable), `uvloop`
(required: a configuration error without it) or `asyncio`. uvloop is the
optional extra `otp-gateway[uvloop]`, in the pinned sets and the image; see
bench/README.md for what it changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import ConfigError

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@dataclass(frozen=True, slots=True)
class EventLoop:
    """How to make the loop, and its name for the start-up log line."""

    name: str  # "uvloop" or "asyncio"
    new: LoopFactory


def choose(setting: str) -> EventLoop:
    """The loop `[server] event_loop` asks for."""
    if setting != "asyncio":
        try:
            import uvloop
        except ImportError:
            if setting == "uvloop":
                raise ConfigError(
                    "server.event_loop",
                    'uvloop is not installed (pip install "otp-gateway[uvloop]")',
                ) from None
        else:
            return EventLoop("uvloop", uvloop.new_event_loop)
    return EventLoop("asyncio", asyncio.new_event_loop)
