"""`serve --processes N` and `worker --processes N`: N children on one port, supervised.

The process the operator started becomes the supervisor. It binds the port
first (`gateway.listen.bind_group`: a port in use is one line, exit 2, before
any child exists), starts the embedded Redis when there is one (one Redis per
data folder, shared by every child), then forks N children. Each child runs
exactly what a single `serve` or `worker` runs, on its own SO_REUSEPORT
socket set, and dies with the supervisor: the kernel's parent-death signal,
and a watch thread that asks again (SIGTERM every `ORPHAN_NUDGE_SECONDS`)
once the supervisor is gone, because a SIGTERM that lands while a child is
still starting can be lost (seen under uvloop: the orphan served on).

- Fork, not exec: a child starts in milliseconds with the configuration the
  supervisor read and checked (the same secret, keys and Redis URL for all),
  and a restarted child is never one that read a since-edited file.
- The supervisor keeps every child's sockets open. A connection the kernel
  hashed to a child that just died waits in that socket's backlog and is
  served once the child is back; closing the socket would reset it instead.
- A child that exits is started again: at once when it had run for
  `STABLE_SECONDS`, else after a delay that doubles (to `MAX_DELAY`) so a
  crash loop costs nothing. One log line per restart, with the exit status,
  and `otp_process_restarts_total` counts them. A child that exits 2 (a
  configuration refusal, e.g. the data's secret differs) stops them all and
  the supervisor exits 2: restarting it would refuse again.
- SIGTERM or SIGINT: the supervisor closes its copies of the sockets, each
  child gets SIGTERM and drains as a single process does (stops accepting,
  finishes its requests in flight); the supervisor exits once they all have
  (0 when they all ended well).

The supervisor runs no event loop: it waits for signals with sigtimedwait
(SIGCHLD included), so no signal can slip between a check and a wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.embedded import parent_death_signal

log = logging.getLogger("otp_gateway.supervisor")
STABLE_SECONDS = 10.0  # a child that ran this long died of something new: restart at once
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
CONFIG_EXIT = 2  # the CLI's exit status for a configuration error
_WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
# prometheus-client's own variable (gateway.metrics.MULTIPROCESS_DIR): not imported
# from there, since importing gateway.metrics imports prometheus-client.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

Child = Callable[[list[socket.socket]], int]


@dataclass
class Slot:
    """One of the N places: its sockets, and the child that runs in it now."""

    index: int
    sockets: list[socket.socket]
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0  # in a row, each before STABLE_SECONDS
    due: float | None = None  # when it starts again (time.monotonic), while down


@dataclass
class Supervisor:
    """Runs `child(sockets)` in each slot's forked process until told to stop."""

    role: str  # "api" or "worker", for the log lines and the metric
    child: Child
    slots: list[Slot]
    on_exit: Callable[[int], None] = lambda pid: None  # a child's pid, once reaped
    on_restart: Callable[[], None] = lambda: None
    stopping: bool = False
    status: int = 0
    _die_with_parent: Callable[[], None] | None = field(default=None, repr=False)

    def run(self) -> int:
        """Start every child, keep them running, drain on SIGTERM; the exit status."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        self._die_with_parent = parent_death_signal()
        log.info(
            "supervisor started",
            extra={"role": self.role, "processes": len(self.slots), "pid": os.getpid()},
        )
        for slot in self.slots:
            self._start(slot)
        while self._running():
            received = self._wait()
            if received is not None and received.si_signo != signal.SIGCHLD:
                self._stop(signal.Signals(received.si_signo))
            self._reap()
            self._start_due()
        log.info("supervisor stopped", extra={"role": self.role, "status": self.status})
        return self.status

    def _running(self) -> bool:
        return not self.stopping or any(slot.pid for slot in self.slots)

    def _wait(self) -> signal.struct_siginfo | None:
        """The next watched signal; None when a restart is due first."""
        due = [slot.due for slot in self.slots if slot.due is not None]
        if not due:
            return signal.sigwaitinfo(_WATCHED)
        return signal.sigtimedwait(_WATCHED, max(0.0, min(due) - time.monotonic()))

    def _start(self, slot: Slot) -> None:
        slot.due = None
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it never returns from here
            self._become_child(slot)
        slot.pid, slot.started = pid, time.monotonic()

    def _become_child(self, slot: Slot) -> None:
        status = 1
        try:
            if self._die_with_parent is not None:
                self._die_with_parent()  # SIGTERM when the supervisor dies, even by SIGKILL
            _watch_parent(os.getppid())
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            for other in self.slots:
                if other is not slot:
                    for sock in other.sockets:
                        sock.close()
            status = self.child(slot.sockets)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # never unwind into the supervisor's stack (its Redis, its lock)

    def _reap(self) -> None:
        for slot in self.slots:
            if not slot.pid:
                continue
            pid, wait_status = os.waitpid(slot.pid, os.WNOHANG)
            if pid:
                slot.pid = 0
                self.on_exit(pid)
                self._ended(slot, pid, wait_status)

    def _ended(self, slot: Slot, pid: int, wait_status: int) -> None:
        code = os.waitstatus_to_exitcode(wait_status)
        if self.stopping:
            # Ended by the SIGTERM it was sent before it could handle it (still starting): fine.
            clean = code in (0, -signal.SIGTERM)
            self.status = self.status or (0 if clean else 1)
            return
        if code == CONFIG_EXIT:
            log.error(
                "process refused its configuration: stopping all",
                extra={"role": self.role, "slot": slot.index, "pid": pid, "exit": code},
            )
            self._stop(None)
            self.status = CONFIG_EXIT
            return
        delay = self._delay(slot)
        slot.due = time.monotonic() + delay
        self.on_restart()
        log.warning(
            "process exited: restarting",
            extra={
                "role": self.role, "slot": slot.index, "pid": pid, "exit": _describe(code),
                "delay_seconds": delay,
            },
        )  # fmt: skip

    def _delay(self, slot: Slot) -> float:
        if time.monotonic() - slot.started >= STABLE_SECONDS:
            slot.quick_deaths = 0
            return 0.0
        slot.quick_deaths += 1
        return float(min(MAX_DELAY, FIRST_DELAY * 2 ** (slot.quick_deaths - 1)))

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if not self.stopping and slot.due is not None and slot.due <= now:
                self._start(slot)

    def _stop(self, sig: signal.Signals | None) -> None:
        if not self.stopping and sig is not None:
            log.info(
                "supervisor stopping: draining every process",
                extra={"role": self.role, "signal": sig.name},
            )
        self.stopping = True
        for slot in self.slots:
            slot.due = None
            # The port refuses new connections once the children close theirs too
            # (as one `serve` does), instead of queueing them where none will answer.
            for sock in slot.sockets:
                sock.close()
            if slot.pid:
                os.kill(slot.pid, signal.SIGTERM)


def _describe(code: int) -> str:
    """An exit code, or the signal that ended the process ("SIGKILL")."""
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return str(code)


def supervise(
    role: str,
    child: Child,
    groups: list[list[socket.socket]],
    *,
    on_exit: Callable[[int], None] = lambda pid: None,
    on_restart: Callable[[], None] = lambda: None,
) -> int:
    """Run `child` in one process per socket group until SIGTERM; the exit status."""
    slots = [Slot(i, sockets) for i, sockets in enumerate(groups)]
    supervisor = Supervisor(role, child, slots, on_exit=on_exit, on_restart=on_restart)
    try:
        return supervisor.run()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)


@contextlib.contextmanager
def shared_metrics() -> Iterator[Path]:
    """prometheus-client's multiprocess mode for the children (`gateway/metrics.py`).

    The operator's PROMETHEUS_MULTIPROC_DIR, emptied of a previous run's files,
    or a private temporary folder removed at the end. Set before anything
    imports prometheus-client, which picks its value store at import."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # a previous run's pids are not ours
            stale.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="otp-gateway-metrics-"))
    os.environ[MULTIPROCESS_DIR] = str(folder)
    try:
        yield folder
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(folder, ignore_errors=True)


ORPHAN_POLL_SECONDS = 0.2
ORPHAN_NUDGE_SECONDS = 5.0


def _watch_parent(parent: int) -> None:
    """In a child: once the supervisor is gone, SIGTERM ourselves, again every
    `ORPHAN_NUDGE_SECONDS` until we have exited (the first one drains as a
    SIGTERM always does; the next ones only matter when an earlier one was lost)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_SECONDS)
        while True:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(ORPHAN_NUDGE_SECONDS)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
