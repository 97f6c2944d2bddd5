"""Who holds a TCP connection, read from /proc: which process of `serve --processes N`
accepted it, and whether the server has read everything the client sent.

Linux only, IPv4 loopback (the tests bind 127.0.0.1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerSide:
    """The server's end of one connection: its socket inode and unread bytes."""

    inode: int
    unread: int  # bytes the client sent that the server has not read yet


def server_side(server_port: int, client_port: int) -> ServerSide | None:
    """The server's end of the connection 127.0.0.1:client_port -> :server_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues, inode = fields[1], fields[2], fields[4], fields[9]
        if _port(local) == server_port and _port(remote) == client_port and inode != "0":
            return ServerSide(int(inode), int(queues.split(":")[1], 16))
    return None


def _port(address: str) -> int:
    return int(address.split(":")[1], 16)


def holder(inode: int, pids: list[int]) -> int | None:
    """The one of `pids` that has the socket `inode` open."""
    wanted = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == wanted:
                    return pid
            except OSError:
                continue
    return None


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (zombies left out)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split() if running(int(p))]


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
