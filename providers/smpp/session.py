"""One persistent SMPP 3.4 transceiver session, kept up in the background.

    first submit ─► run(): connect (TLS optional) ─► bind_transceiver ─► read loop + enquire_link
                          ▲                                                   │ link lost, dead
                          └──── backoff, doubled each failure, jittered ◄─────┘ or unbound

A submit waits for a free slot of the window (`window` PDUs outstanding at
most) and for the pacer (`throughput` per second, evenly spaced: a token
bucket one token deep), then for its submit_sm_resp within
`response_timeout`. What can happen to it (a throttled submit is submitted
again after a backoff, `throttle_retries` times, before Refused):

| what happened                               | raised          | did it run?     |
|---------------------------------------------|-----------------|-----------------|
| submit_sm_resp, status 0                    | (the message id) | yes            |
| ESME_RTHROTTLED / ESME_RMSGQFUL             | submitted again | no              |
| any other status, or generic_nack           | Refused(status) | no              |
| not bound (connecting, refused, reconnecting) | LinkDown      | no: never sent  |
| no submit_sm_resp in time, or link lost     | Ambiguous       | maybe; never sent again here |

Receipts and other deliver_sm are handed to `on_deliver`, in order, on the
read loop; its answer is the deliver_sm_resp's status. A submit_sm_resp's
`on_accepted` hook runs on the read loop too, before the next PDU is read: so
the message id is recorded before its receipt (on this link) can be handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from providers.smpp import pdu
from providers.smpp.pdu import Bind, Command, Pdu, ProtocolError, ShortMessage, Status

log = logging.getLogger("otp_gateway.providers.smpp")

OnDeliver = Callable[[ShortMessage], Awaitable[int]]  # deliver_sm -> the status to answer
OnAccepted = Callable[[str], Awaitable[None]]  # the message id, before the submit returns
_BUSY = frozenset({Status.RTHROTTLED, Status.RMSGQFUL})


class SessionError(Exception):
    """A submit did not go through; the subclass says whether it may have run."""


class LinkDown(SessionError):
    """Not bound now: the submit was never sent."""


class Refused(SessionError):
    """The SMSC answered the submit with an error `status`: it did not run."""

    def __init__(self, status: int) -> None:
        super().__init__(f"submit_sm refused, status 0x{status:02x}")
        self.status = status


class Ambiguous(SessionError):
    """The submit was sent but its answer never came: it may have run."""


class LinkLost(Exception):
    """The link closed while a request waited for its answer (session-internal)."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Where and how to bind, and the session's limits (see the module docstring)."""

    host: str
    port: int
    bind: Bind
    tls: ssl.SSLContext | None = None
    window: int = 10
    throughput: float = 10.0
    enquire_link_seconds: float = 30.0
    response_timeout: float = 5.0
    connect_timeout: float = 5.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    throttle_retries: int = 3


class Pacer:
    """At most `rate` submits per second, evenly spaced (a token bucket one deep)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0

    async def take(self) -> None:
        now = asyncio.get_running_loop().time()
        at = max(now, self.next)
        self.next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)  # the rate limit itself, not a wait for an event


def jittered(delay: float) -> float:
    """`delay` less up to half of it at random, so that workers do not reconnect in step."""
    return delay * (0.5 + random.random() / 2)  # jitter, not a secret


class Link:
    """One bound TCP connection: its outstanding requests and its window."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: SessionSettings
    ) -> None:
        self.reader, self.writer, self.settings = reader, writer, settings
        self.window = asyncio.Semaphore(settings.window)
        self.pending: dict[int, tuple[asyncio.Future[Pdu], OnAccepted | None]] = {}
        self.closed = asyncio.Event()
        self.reason = ""
        self._sequence = 0

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    async def request(self, command: int, body: bytes = b"", hook: OnAccepted | None = None) -> Pdu:
        """Send a request and wait for its answer (TimeoutError, LinkLost, LinkDown)."""
        if self.closed.is_set():
            raise LinkDown(self.reason or "link closed")
        sequence = self._next_sequence()
        answer: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.pending[sequence] = (answer, hook)
        try:
            await self.send(Pdu(command, sequence, 0, body))
            async with asyncio.timeout(self.settings.response_timeout):
                return await answer
        finally:
            self.pending.pop(sequence, None)

    async def send(self, message: Pdu) -> None:
        try:
            self.writer.write(message.encode())
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.close(f"write failed: {type(exc).__name__}")
            raise LinkLost(self.reason) from exc

    def close(self, reason: str) -> None:
        """Close once; every request still waiting fails with LinkLost."""
        if self.closed.is_set():
            return
        self.reason = reason
        self.closed.set()
        self.writer.close()
        for answer, _ in self.pending.values():
            if not answer.done():
                answer.set_exception(LinkLost(reason))


class Session:
    """Submits short messages over one transceiver bind, reconnecting as needed."""

    def __init__(self, settings: SessionSettings, on_deliver: OnDeliver, name: str) -> None:
        self.settings = settings
        self.on_deliver = on_deliver
        self.name = name  # the provider's, for log lines
        self.binds = 0  # successful binds so far (tests and logs)
        self._link: Link | None = None
        self._failure: str | None = None  # why the last bind failed or the link went down
        self._settled = asyncio.Event()  # the first connection attempt is over
        self._runner: asyncio.Task[None] | None = None
        self._pacer = Pacer(settings.throughput)
        self._stopping = False

    @property
    def bound(self) -> bool:
        return self._link is not None and not self._link.closed.is_set()

    # --- submitting -------------------------------------------------------------------

    async def submit(self, message: ShortMessage, on_accepted: OnAccepted | None = None) -> str:
        """Submit once (again only after a throttle: it did not run); the SMSC's message id."""
        body = pdu.encode_short_message(message)
        delay = self.settings.reconnect_min
        for attempt in range(self.settings.throttle_retries + 1):
            answer = await self._submit_once(body, on_accepted)
            if answer.command_id == Command.SUBMIT_SM_RESP and answer.status == Status.ROK:
                return pdu.decode_message_id(answer.body)
            if answer.status not in _BUSY or attempt == self.settings.throttle_retries:
                raise Refused(answer.status)
            await asyncio.sleep(jittered(delay))  # the SMSC asked us to slow down
            delay = min(delay * 2, self.settings.reconnect_max)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _submit_once(self, body: bytes, on_accepted: OnAccepted | None) -> Pdu:
        link = await self._ready_link()
        async with link.window:
            await self._pacer.take()
            try:
                return await link.request(Command.SUBMIT_SM, body, on_accepted)
            except TimeoutError as exc:
                raise Ambiguous("no submit_sm_resp in time; not submitted again") from exc
            except LinkLost as exc:
                raise Ambiguous(f"{exc} before submit_sm_resp; not submitted again") from exc

    async def _ready_link(self) -> Link:
        if self._runner is None or self._runner.done():  # first send, or a crashed runner
            self._runner = asyncio.create_task(self._run(), name=f"smpp-{self.name}")
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.connect_timeout):
                    await self._settled.wait()
        link = self._link
        if link is None or link.closed.is_set():
            raise LinkDown(self._failure or "not bound yet")
        return link

    # --- the connection -----------------------------------------------------------------

    async def _run(self) -> None:
        """Bind, serve the link until it dies, wait a backoff, again; until aclose."""
        delay = self.settings.reconnect_min
        while not self._stopping:
            try:
                link = await self._open()
            except (OSError, TimeoutError, ProtocolError, LinkDown, LinkLost) as exc:
                self._failure = _describe(exc)
                log.warning("smpp bind failed", extra={"provider": self.name,
                                                       "error": self._failure})  # fmt: skip
            except Exception:  # a bug of ours: logged, and the loop goes on
                self._failure = "internal error"
                log.exception("smpp bind failed", extra={"provider": self.name})
            else:
                delay = self.settings.reconnect_min
                await self._serve(link)
            self._settled.set()
            if not self._stopping:
                await asyncio.sleep(jittered(delay))  # backoff before the next attempt
                delay = min(delay * 2, self.settings.reconnect_max)

    async def _open(self) -> Link:
        s = self.settings
        async with asyncio.timeout(s.connect_timeout):
            reader, writer = await asyncio.open_connection(
                s.host, s.port, ssl=s.tls, limit=pdu.MAX_PDU
            )
            link = Link(reader, writer, s)
            try:
                answer = await self._bind(link)
            except BaseException:
                link.close("bind failed")
                raise
        if answer.status != Status.ROK:
            link.close("bind refused")
            raise LinkDown(f"bind refused, status 0x{answer.status:02x}")
        return link

    async def _bind(self, link: Link) -> Pdu:
        """bind_transceiver, read its answer here: the read loop is not running yet."""
        await link.send(Pdu(Command.BIND_TRANSCEIVER, 1, 0, pdu.encode_bind(self.settings.bind)))
        answer = await read_pdu(link.reader)
        if answer.command_id not in (Command.BIND_TRANSCEIVER_RESP, Command.GENERIC_NACK):
            raise ProtocolError(f"expected bind_transceiver_resp, got 0x{answer.command_id:08x}")
        return answer

    async def _serve(self, link: Link) -> None:
        self._link, self._failure = link, None
        self.binds += 1
        self._settled.set()
        log.info("smpp bound", extra={"provider": self.name})
        tasks = [asyncio.create_task(self._read(link)), asyncio.create_task(self._keepalive(link))]
        try:
            await link.closed.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            link.close("stopped")
        self._failure = f"link lost ({link.reason}); reconnecting"
        if not self._stopping:
            log.warning("smpp link lost", extra={"provider": self.name, "error": link.reason})

    async def _read(self, link: Link) -> None:
        try:
            while not link.closed.is_set():
                await self._handle(link, await read_pdu(link.reader))
        except (OSError, asyncio.IncompleteReadError, LinkLost) as exc:
            link.close(_describe(exc))
        except ProtocolError as exc:
            # The stream cannot be trusted to be in step any more: drop it.
            with contextlib.suppress(LinkLost):
                await link.send(Pdu(Command.GENERIC_NACK, 0, exc.status))
            link.close(f"protocol error: {exc}")
        except Exception:
            log.exception("smpp read loop failed", extra={"provider": self.name})
            link.close("internal error")

    async def _keepalive(self, link: Link) -> None:
        """enquire_link every `enquire_link_seconds`; no answer in time: the link is dead."""
        while not link.closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.enquire_link_seconds):
                    await link.closed.wait()
                    return
            try:
                await link.request(Command.ENQUIRE_LINK)
            except TimeoutError:
                link.close("enquire_link unanswered")
            except (LinkLost, LinkDown):
                return

    async def _handle(self, link: Link, message: Pdu) -> None:
        if message.is_response:
            await self._answered(link, message)
        elif message.command_id == Command.ENQUIRE_LINK:
            await link.send(Pdu(Command.ENQUIRE_LINK_RESP, message.sequence))
        elif message.command_id == Command.DELIVER_SM:
            status = await self._delivered(message)
            await link.send(Pdu(Command.DELIVER_SM_RESP, message.sequence, status, b"\x00"))
        elif message.command_id == Command.UNBIND:
            await link.send(Pdu(Command.UNBIND_RESP, message.sequence))
            link.close("unbound by the SMSC")
        else:
            await link.send(Pdu(Command.GENERIC_NACK, message.sequence, Status.RINVCMDID))

    async def _answered(self, link: Link, message: Pdu) -> None:
        waiting = link.pending.get(message.sequence)
        if waiting is None:
            return  # answered after its timeout, or never asked: nothing waits for it
        answer, hook = waiting
        if hook is not None and message.status == Status.ROK:
            with contextlib.suppress(ProtocolError):
                message_id = pdu.decode_message_id(message.body)
                await _run_hook(hook, message_id, self.name)
        if not answer.done():
            answer.set_result(message)

    async def _delivered(self, message: Pdu) -> int:
        try:
            short_message = pdu.decode_short_message(message.body)
        except ProtocolError as exc:
            return exc.status
        return await self.on_deliver(short_message)

    async def aclose(self) -> None:
        """Unbind (briefly), close the link and stop reconnecting."""
        self._stopping = True
        link = self._link
        if link is not None and not link.closed.is_set():
            with contextlib.suppress(TimeoutError, LinkLost, LinkDown):
                async with asyncio.timeout(1.0):
                    await link.request(Command.UNBIND)
            link.close("closed")
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)


async def read_pdu(reader: asyncio.StreamReader) -> Pdu:
    """One PDU off the stream; a length outside the cap is refused before any body is read."""
    header = await reader.readexactly(pdu.HEADER_SIZE)
    length = pdu.header_length(header)
    return pdu.decode(header + await reader.readexactly(length - pdu.HEADER_SIZE))


async def _run_hook(hook: OnAccepted, message_id: str, name: str) -> None:
    try:
        await hook(message_id)
    except Exception:
        # The message went; only its receipt will not be matched.
        log.exception("smpp: recording a message id failed", extra={"provider": name})


def _describe(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, LinkDown | LinkLost | ProtocolError) else ""
    return text or type(exc).__name__
