"""A TCP proxy on loopback, between the gateway and the real redis-server, that
can lose or hold the reply to one chosen command.

The gateway speaks to `proxy.url`; every byte goes through unchanged until a
test arms the proxy with a marker (a script's SHA1 as it travels in EVALSHA):

- `lose_reply_to(marker)`: the command is forwarded, so Redis runs it; its
  reply is swallowed and the client's side of that connection is reset. What
  a network blip or a dying proxy does after the command ran.
- `hold_reply_to(marker)`: the command is forwarded and its reply held back
  (never delivered, the connection left open): a stall, as the client sees it.
- `refuse(n)`: the next n connections are reset as soon as they are accepted.

Each connection is request/response (the gateway does not pipeline its
scripts), so the first reply bytes after the marked command are its reply.
`sent(marker)` counts how many times the marker crossed towards Redis: how
many times the command was sent, retries included.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Pair:
    """One proxied connection: what the next reply from Redis is to become."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    fate: str = "deliver"  # deliver | lose | hold
    tail: bytes = b""  # the last bytes seen towards Redis, for a marker split across reads


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target`; see the module docstring."""

    target_host: str
    target_port: int
    # Only for `url`: the proxy passes AUTH through like any other byte.
    password: str = field(default="", repr=False)
    port: int = 0
    counts: Counter[bytes] = field(default_factory=Counter)
    # Set once a reply was lost or held.
    done: asyncio.Event = field(repr=False, default_factory=asyncio.Event)
    _armed: tuple[bytes, str] | None = field(default=None, repr=False)
    _server: asyncio.Server | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task[None]] = field(repr=False, default_factory=set)
    _pairs: list[_Pair] = field(repr=False, default_factory=list)
    _watched: set[bytes] = field(repr=False, default_factory=set)
    _refusals: int = field(default=0, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        # `port` 0: any free one; a given port: a cluster node announces it.
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in self._pairs:
            pair.client.close()
            pair.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def watch(self, marker: bytes) -> None:
        """Count `marker` towards Redis from now on (`sent`)."""
        self._watched.add(marker)

    def sent(self, marker: bytes) -> int:
        return self.counts[marker]

    def refuse(self, connections: int) -> None:
        """Reset the next `connections` connections as soon as they are accepted."""
        self._refusals = connections

    @property
    def refusals_left(self) -> int:
        return self._refusals

    def lose_reply_to(self, marker: bytes) -> None:
        self.watch(marker)
        self._armed = (marker, "lose")

    def hold_reply_to(self, marker: bytes) -> None:
        self.watch(marker)
        self._armed = (marker, "hold")

    # --- the pumps ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusals > 0:
            self._refusals -= 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.append(pair)
        self._spawn(self._upstream(pair, reader))
        self._spawn(self._downstream(pair, up_reader))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upstream(self, pair: _Pair, reader: asyncio.StreamReader) -> None:
        """Client to Redis: always forwarded; marks the pair when the armed command passes."""
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                self._look(pair, chunk)
                pair.server.write(chunk)
                await pair.server.drain()
        pair.server.close()

    def _look(self, pair: _Pair, chunk: bytes) -> None:
        window = pair.tail + chunk
        for marker in self._watched:
            self.counts[marker] += window.count(marker)
        armed = self._armed
        if armed is not None and armed[0] in window:
            self._armed = None  # exactly one reply
            pair.fate = armed[1]  # set before Redis can answer: the chunk is not sent yet
        longest = max((len(m) for m in self._watched), default=1)
        pair.tail = window[-(longest - 1) :] if longest > 1 else b""

    async def _downstream(self, pair: _Pair, reader: asyncio.StreamReader) -> None:
        """Redis to client: delivered, lost (then the client is reset) or held."""
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if pair.fate == "lose":
                    self.done.set()
                    _reset(pair.client)
                    pair.server.close()
                    return
                if pair.fate == "hold":
                    self.done.set()
                    continue  # swallowed, and so is anything after it
                pair.client.write(chunk)
                await pair.client.drain()
        pair.client.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN, as a dropped link looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
