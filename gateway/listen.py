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


def bind(host: str, port: int, key: str, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets on every address of `host` (as asyncio's create_server
    would make them), or a ConfigError naming `key`.

    `reuse_port`: with SO_REUSEPORT, for one of the groups `bind_group` makes."""
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
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(key, _problem(host, port, exc)) from None
    return sockets


def bind_group(host: str, port: int, key: str, count: int) -> list[list[socket.socket]]:
    """`count` sets of listening sockets on one port, SO_REUSEPORT: one per process
    of `serve --processes N` (or `worker`), so the kernel spreads new connections
    evenly over the processes, by a hash of each connection's addresses.

    A plain bind comes first, then closes: it fails on *anything* already on the
    port, SO_REUSEPORT or not, so a second otp-gateway is refused in one line
    (EADDRINUSE) instead of quietly joining this one's group. Port 0 becomes the
    port that first bind was given, for every set."""
    probe = bind(host, port, key)
    port = port or probe[0].getsockname()[1]
    for sock in probe:
        sock.close()
    groups: list[list[socket.socket]] = []
    try:
        for _ in range(count):
            groups.append(bind(host, port, key, reuse_port=True))
    except ConfigError:
        for sock in (s for group in groups for s in group):
            sock.close()
        raise
    return groups


def _problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{host}:{port} is already in use (another otp-gateway, or another program)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
