"""Listening sockets bound before anything starts, so a port in use is one line.

`otp-gateway serve`, a worker's metrics port and the simulator bind here first
and hand the sockets to aiohttp: a port that another process holds stops
start-up with a `ConfigError` naming the setting (exit 2), before an embedded
Redis or a send worker has started, instead of a traceback from deep inside
the event loop.
"""

from __future__ import annotations

import errno
import socket

from gateway.errors import ConfigError

BACKLOG = 128  # aiohttp's default


def bind(host: str, port: int, key: str) -> list[socket.socket]:
    """Listening sockets on every address of `host` (as asyncio's create_server
    would make them), or a ConfigError naming `key`."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        # dict.fromkeys: an address listed twice is bound once.
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(key, _problem(host, port, exc)) from None
    return sockets


def _problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{host}:{port} is already in use (another otp-gateway, or another program)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
