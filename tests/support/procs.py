"""`python -m gateway ...` child processes in a folder of their own, for the tests of
start-up refusals (tests/test_datadir.py, tests/test_listen.py, tests/test_keycheck.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tests.support.poll import wait_until

CLI = [sys.executable, "-m", "gateway"]


class Proc:
    """One child; its stdout and stderr together in `<name>.log`."""

    def __init__(self, args: list[str], cwd: Path, name: str, env: dict[str, str]) -> None:
        self.log = cwd / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("OTPGW_")}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*CLI, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env={**base, **env},
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, within: float = 30) -> re.Match[str]:
        """The first match of `pattern` in the output; fails if the child ends first."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            if match := re.search(pattern, self.output()):
                found.append(match)
                return True
            assert self.proc.poll() is None, f"ended early:\n{self.output()}"
            return False

        wait_until(seen, within, every=0.05, what=f"{pattern!r} in {self.log}")
        return found[0]

    def exit_code(self, within: float = 30) -> int:
        return self.proc.wait(within)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def procs(cwd: Path) -> Iterator[Start]:
    """Yields `start(*args, port=..., name=...) -> Proc`; stops them all at the end."""
    started: list[Proc] = []

    def start(*args: str, port: int | None = None, env: dict[str, str] | None = None) -> Proc:
        extra = {**(env or {}), **({"OTPGW_PORT": str(port)} if port else {})}
        proc = Proc(list(args), cwd, f"proc{len(started)}", extra)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.stop()


class Start(Protocol):
    """The type of `procs`'s start function."""

    def __call__(
        self, *args: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> Proc: ...


def redis_pids(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory` (redis-server chdirs to
    its --dir and renames its process title, so the command line won't tell)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == directory.resolve():
                    found.append(int(proc.name))
            except OSError:  # gone, or a zombie: not running
                continue
    return found
