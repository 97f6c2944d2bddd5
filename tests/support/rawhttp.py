"""Raw HTTP/1.1 over a socket, and the gateway served the way `otp-gateway serve` serves it.

An HTTP client library refuses to send what these tests need to send: header
bytes that are not UTF-8, a NUL inside a header, half a body, a hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@contextlib.asynccontextmanager
async def served(app: web.Application, **options: Any) -> AsyncIterator[int]:
    """`app` on a loopback port (yielded), run as `otp-gateway serve` runs it:
    no aiohttp access log and no handler cancellation (aiohttp's TestServer
    cancels the handler of a client that left; production does not).
    `options` go to `web.AppRunner`, e.g. `access_log=` to turn aiohttp's on."""
    runner = web.AppRunner(app, **{"access_log": None, **options})
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def request(
    method: str,
    path: str,
    headers: Mapping[str, str | bytes] | None = None,
    body: bytes | None = None,
    *,
    length: int | None = None,
) -> bytes:
    """A request's bytes, `Connection: close`; `length` overrides Content-Length."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    if body is not None or length is not None:
        lines.append(f"Content-Length: {len(body or b'') if length is None else length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def exchange(port: int, data: bytes, within: float = 10.0) -> RawReply:
    """Send `data`, read until the server closes the connection, parse the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            raw = await reader.read()
    finally:
        writer.close()
    return parse(raw)


async def read_reply(reader: asyncio.StreamReader) -> RawReply:
    """One reply, read by its Content-Length: the connection may stay open after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    reply = parse(head)
    reply.body = await reader.readexactly(int(reply.headers.get("content-length", "0")))
    return reply


def parse(raw: bytes) -> RawReply:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawReply(int(status_line.split()[1]), headers, body)
