"""An SMSC of our own on a real TCP socket: `otp-gateway simulate smpp --port N`.

Speaks the SMPP 3.4 PDUs the `smpp` provider uses (the provider's codec,
`providers.smpp.pdu`: the wire format is the spec's, tested byte by byte):

    bind_transceiver   checked against system_id and password (ESME_RINVPASWD otherwise)
    submit_sm          answered with a message id, then a delivery receipt (deliver_sm,
                       esm_class 0x04, Appendix B text and the receipted_message_id and
                       message_state TLVs) after `receipt_delay`
    enquire_link, unbind, generic_nack; deliver_sm_resp (a status other than 0: sent again)

Receipts wait in one outbox and go to any bound session, so a receipt whose
session was lost reaches the next bind. `Script` steers it from a test (or
from the demo's defaults): refuse binds, throttle the next N submits, leave
submits unanswered and drop the link, stop answering enquire_link, answer
slowly, hold receipts to release them later (reordered, duplicated).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.listen import bind
from providers.smpp import pdu, text
from providers.smpp.pdu import Command, Pdu, ProtocolError, ShortMessage, Status, Tag
from providers.smpp.receipts import receipt_text
from providers.smpp.session import read_pdu

_STATES = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7,
           "REJECTD": 8}  # fmt: skip


@dataclass
class Script:
    """What the SMSC does next; a test changes it at any time."""

    bind_status: int = Status.ROK  # answer to every bind_transceiver that has the password
    throttle_next: int = 0  # the next N submits are answered `throttle_status`
    throttle_status: int = Status.RTHROTTLED
    refuse_next: list[int] = field(default_factory=list)  # statuses for the next submits
    silent_next: int = 0  # the next N submits are never answered...
    drop_when_silent: bool = False  # ...and then the connection is dropped
    answer_enquire_link: bool = True
    response_delay: float = 0.0  # before each submit_sm_resp
    receipt_delay: float = 0.0
    receipt_stat: str = "DELIVRD"
    redeliver_delay: float = 0.5  # before a receipt answered with an error is sent again
    hold_receipts: bool = False  # keep them in `held` until `release`


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit_sm the SMSC accepted (or left unanswered), decoded."""

    message_id: str
    message: ShortMessage
    text: str
    answered: bool = True


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: str
    destination: str
    stat: str


class Smsc:
    """The SMSC: `await start()`, then point an `smpp` provider at `port`."""

    def __init__(
        self,
        system_id: str = "otpgw",
        password: str = "secret12",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_submit: Callable[[Submitted], None] | None = None,
    ) -> None:
        self.system_id, self.password = system_id, password
        self.host, self.port = host, port
        self.script = Script()
        self.submitted: list[Submitted] = []
        self.binds = 0  # successful binds
        self.bind_attempts = 0
        self.refused: list[int] = []  # the statuses of the submits answered with an error
        self.receipt_answers: list[int] = []  # deliver_sm_resp statuses, in order
        self.held: list[Receipt] = []
        self.outbox: asyncio.Queue[Receipt] = asyncio.Queue()
        self.on_submit = on_submit
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self, sock: socket.socket | None = None, tls: ssl.SSLContext | None = None
    ) -> Smsc:
        """Listen on `sock` when given (already bound), else on host and port (0: any);
        over TLS with `tls`."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock, ssl=tls)
        else:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def drop_connections(self) -> None:
        """Close every client connection at once (a network cut, seen from the ESME)."""
        for writer in list(self._connections):
            writer.close()

    def release(self, *, reverse: bool = False, twice: bool = False) -> None:
        """Send the held receipts now, in reverse order and/or each twice if asked."""
        receipts = self.held[::-1] if reverse else list(self.held)
        self.held.clear()
        for receipt in receipts:
            for _ in range(2 if twice else 1):
                self.outbox.put_nowait(receipt)

    def receipt(self, message_id: str, stat: str = "DELIVRD", destination: str = "") -> None:
        """Queue a receipt of our own making (an unknown id, a late one)."""
        self.outbox.put_nowait(Receipt(message_id, destination, stat))

    def texts_to(self, destination: str) -> list[str]:
        """What reached `destination` (E.164, with or without +), oldest first."""
        number = destination.removeprefix("+")
        return [s.text for s in self.submitted if s.message.destination_addr == number]

    # --- one connection ---------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        session = _Connection(self, reader, writer)
        try:
            await session.run()
        except (OSError, asyncio.IncompleteReadError, ProtocolError):
            pass  # the client went away or spoke nonsense: this connection ends
        finally:
            await session.stop()
            self._connections.discard(writer)
            writer.close()


class _Connection:
    """One client connection: bind first, then requests, and the receipt pump."""

    def __init__(self, smsc: Smsc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.smsc, self.reader, self.writer = smsc, reader, writer
        self.bound = False
        self.sequence = itertools.count(1)
        self.in_flight: dict[int, Receipt] = {}  # deliver_sm sent, its resp awaited
        self.pump: asyncio.Task[None] | None = None
        self.silent = 0

    def send(self, message: Pdu) -> None:
        self.writer.write(message.encode())

    async def run(self) -> None:
        while True:
            request = await read_pdu(self.reader)
            await self.handle(request)
            await self.writer.drain()

    async def handle(self, request: Pdu) -> None:
        command = request.command_id
        if command == Command.BIND_TRANSCEIVER:
            self.bind(request)
        elif not self.bound:
            self.send(Pdu(Command.GENERIC_NACK, request.sequence, Status.RINVBNDSTS))
        elif command == Command.SUBMIT_SM:
            await self.submit(request)
        elif command == Command.ENQUIRE_LINK:
            if self.smsc.script.answer_enquire_link:
                self.send(Pdu(Command.ENQUIRE_LINK_RESP, request.sequence))
        elif command == Command.DELIVER_SM_RESP:
            self.receipt_answered(request)
        elif command == Command.UNBIND:
            self.send(Pdu(Command.UNBIND_RESP, request.sequence))
            await self.writer.drain()
            self.writer.close()
        elif not request.is_response:
            self.send(Pdu(Command.GENERIC_NACK, request.sequence, Status.RINVCMDID))

    def bind(self, request: Pdu) -> None:
        smsc = self.smsc
        smsc.bind_attempts += 1
        try:
            bind = pdu.decode_bind(request.body)
        except ProtocolError as exc:
            self.send(Pdu(Command.BIND_TRANSCEIVER_RESP, request.sequence, exc.status))
            return
        status = smsc.script.bind_status
        if bind.system_id != smsc.system_id or bind.password != smsc.password:
            status = Status.RINVPASWD
        if self.bound:
            status = Status.RALYBND
        body = pdu.cstring("otp-smsc", 16) if status == Status.ROK else b""
        self.send(Pdu(Command.BIND_TRANSCEIVER_RESP, request.sequence, status, body))
        if status == Status.ROK:
            self.bound = True
            smsc.binds += 1
            self.pump = asyncio.create_task(self.deliver_receipts())

    async def submit(self, request: Pdu) -> None:
        smsc, script = self.smsc, self.smsc.script
        try:
            message = pdu.decode_short_message(request.body)
        except ProtocolError as exc:
            self.send(Pdu(Command.SUBMIT_SM_RESP, request.sequence, exc.status))
            return
        status = self._scripted_status()
        if status is None:  # left unanswered, as if lost on the way back
            self.silent += 1
            smsc.submitted.append(self._record(message, answered=False))
            if script.drop_when_silent and script.silent_next == 0:
                self.writer.close()
            return
        if status != Status.ROK:
            smsc.refused.append(status)
            self.send(Pdu(Command.SUBMIT_SM_RESP, request.sequence, status))
            return
        accepted = self._record(message)
        smsc.submitted.append(accepted)
        if script.response_delay:
            await asyncio.sleep(script.response_delay)  # a slow SMSC, on purpose
        self.send(Pdu(Command.SUBMIT_SM_RESP, request.sequence, 0,
                      pdu.encode_message_id(accepted.message_id)))  # fmt: skip
        if smsc.on_submit is not None:
            smsc.on_submit(accepted)
        if message.registered_delivery & 0x03:
            receipt = Receipt(accepted.message_id, message.destination_addr, script.receipt_stat)
            smsc._spawn(self.smsc_receipt_later(receipt))

    def _scripted_status(self) -> int | None:
        script = self.smsc.script
        if script.silent_next:
            script.silent_next -= 1
            return None
        if script.throttle_next:
            script.throttle_next -= 1
            return script.throttle_status
        if script.refuse_next:
            return script.refuse_next.pop(0)
        return Status.ROK

    def _record(self, message: ShortMessage, answered: bool = True) -> Submitted:
        message_id = f"{next(self.smsc._ids):08x}"
        return Submitted(message_id, message, text.decode(message.payload, message.data_coding),
                         answered)  # fmt: skip

    async def smsc_receipt_later(self, receipt: Receipt) -> None:
        smsc = self.smsc
        if smsc.script.receipt_delay:
            await asyncio.sleep(smsc.script.receipt_delay)  # the network's delay, simulated
        if smsc.script.hold_receipts:
            smsc.held.append(receipt)
        else:
            smsc.outbox.put_nowait(receipt)

    async def deliver_receipts(self) -> None:
        """Send receipts from the shared outbox while this connection is bound."""
        while True:
            receipt = await self.smsc.outbox.get()
            if self.writer.is_closing():
                self.smsc.outbox.put_nowait(receipt)
                return
            sequence = next(self.sequence)
            self.in_flight[sequence] = receipt
            self.send(Pdu(Command.DELIVER_SM, sequence, 0, receipt_pdu(receipt)))

    def receipt_answered(self, response: Pdu) -> None:
        receipt = self.in_flight.pop(response.sequence, None)
        if receipt is None:
            return
        self.smsc.receipt_answers.append(response.status)
        if response.status != Status.ROK:  # the ESME asks for it again, later
            delay = self.smsc.script.redeliver_delay
            asyncio.get_running_loop().call_later(delay, self.smsc.outbox.put_nowait, receipt)

    async def stop(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
        for receipt in self.in_flight.values():  # unacknowledged: for the next bind
            self.smsc.outbox.put_nowait(receipt)
        self.in_flight.clear()


def receipt_pdu(receipt: Receipt) -> bytes:
    """A delivery receipt's deliver_sm body: Appendix B text and both TLVs."""
    message = ShortMessage(
        source_addr=receipt.destination,
        destination_addr="",
        short_message=receipt_text(receipt.message_id, receipt.stat).encode("ascii"),
        esm_class=pdu.ESM_RECEIPT,
        tlvs={
            Tag.RECEIPTED_MESSAGE_ID: receipt.message_id.encode("ascii") + b"\x00",
            Tag.MESSAGE_STATE: bytes([_STATES.get(receipt.stat, 7)]),
        },
    )
    return pdu.encode_short_message(message)


async def run(host: str, port: int, system_id: str, password: str, delay: float) -> None:
    """Serve until cancelled, printing each message so a person can read the code.

    Raises ConfigError naming `--port` when the port is taken."""
    sockets = bind(host, port, "--port")

    def show(submitted: Submitted) -> None:
        to = submitted.message.destination_addr
        coding = "UCS-2" if submitted.message.data_coding == pdu.DATA_CODING_UCS2 else "GSM 03.38"
        print(f"[smsc sms to +{to}, {coding}, id {submitted.message_id}] {submitted.text}",
              flush=True)  # fmt: skip

    smsc = Smsc(system_id, password, host=host, port=port, on_submit=show)
    smsc.script.receipt_delay = delay
    await smsc.start(sockets[0])
    print(
        f"smpp simulator (SMSC) listening on {host}:{smsc.port}\n"
        f"  system_id = {system_id}\n  password  = {password}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await smsc.close()
