"""SMS over SMPP 3.4 (`kind = "smpp"`): a transceiver bind to an operator's SMSC.

    send ─► submit_sm (registered_delivery 1) ─► submit_sm_resp: the SMSC's message id
            └► SET otp:smpp:<provider>:<message id> = "<challenge>:<send>"  EX the OTP TTL
    deliver_sm (receipt) ─► GET that key ─► Deliveries.record ─► deliver_sm_resp

How a submit's fate becomes the Protocol's errors (the dispatcher fails over
on ProviderUnavailable; ProviderRejected is final, the send `failed`):

| session says                                      | raised               |
|---------------------------------------------------|----------------------|
| message id                                        | accepted; the id is the ref |
| not bound (connecting, bind refused, link lost)   | ProviderUnavailable  |
| throttled after every retry, any other status     | ProviderUnavailable  |
| a status about the destination (`NUMBER_STATUSES`) | ProviderRejected   |
| no submit_sm_resp (timeout, link lost mid-window) | ProviderUnavailable: the outcome is unknown |

The last row is the gateway's way with an unknown outcome (a Twilio timeout is
the same): the session never submits it again itself, but the dispatcher
tries the next provider and the queue retries the job, so the person may get
the same code twice; never none. A receipt is matched through Redis, so it
may arrive on any worker's link, after a reconnect, late, twice, or out of
order: `Deliveries.record` only moves a send's state forward. An unknown id is
acknowledged and dropped; a Redis failure is answered ESME_RX_T_APPN, so the
SMSC delivers the receipt again later.
"""

from __future__ import annotations

import logging

from gateway.errors import ProviderRejected, ProviderUnavailable
from gateway.provider import (
    DeliveryEvent,
    OutboundMessage,
    ProviderConfig,
    ProviderContext,
    ProviderServices,
    SendReceipt,
)
from providers.smpp import text
from providers.smpp.pdu import ShortMessage, Status, Tag
from providers.smpp.receipts import read_receipt
from providers.smpp.session import Ambiguous, LinkDown, Refused, Session
from providers.smpp.settings import parse

log = logging.getLogger("otp_gateway.providers.smpp")

# Statuses about the destination itself: another provider would fail the same way.
NUMBER_STATUSES: dict[int, str] = {
    Status.RINVDSTADR: "invalid_number",
    Status.RINVDSTTON: "invalid_number",
    Status.RINVDSTNPI: "invalid_number",
    Status.RX_P_APPN: "refused",
    Status.RX_R_APPN: "refused",
}


def receipt_key(provider: str, message_id: str) -> str:
    """The Redis key from an SMSC's message id to "<challenge>:<send>".

    TODO: move into gateway/keys.py (owned elsewhere meanwhile). Used only with
    single-key commands, so its slot does not matter on a Redis Cluster."""
    return f"otp:smpp:{provider}:{message_id}"


class SmppProvider:
    """SMS through an SMPP 3.4 SMSC, with delivery receipts (`kind = "smpp"`)."""

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        settings = parse(config)
        self.name = config.name
        self.channels = config.channels
        self.sender = settings.sender
        self.session = Session(settings.session, self._on_deliver, self.name)
        self._services: ProviderServices | None = None

    def attach(self, services: ProviderServices) -> None:
        """Record receipts through `services` (the runtime calls this once Redis is open)."""
        self._services = services

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """submit_sm the SMS; map the session's answer (see the module doc)."""
        if message.channel != "sms":
            raise ProviderRejected(f"{self.name}: smpp sends SMS only")
        short_message = self._short_message(message)
        try:
            message_id = await self.session.submit(
                short_message, lambda message_id: self._remember(message, message_id)
            )
        except (LinkDown, Ambiguous) as exc:
            raise ProviderUnavailable(f"{self.name}: {exc}") from exc
        except Refused as exc:
            raise _refusal(self.name, exc.status) from exc
        return SendReceipt(provider_ref=message_id)

    def _short_message(self, message: OutboundMessage) -> ShortMessage:
        encoded = text.encode(message.text)
        if len(encoded.data) > text.MAX_PAYLOAD:
            raise ProviderRejected(f"{self.name}: message over {text.MAX_PAYLOAD} octets")
        single = encoded.single
        return ShortMessage(
            source_addr=self.sender.addr,
            source_addr_ton=self.sender.ton,
            source_addr_npi=self.sender.npi,
            destination_addr=message.to.removeprefix("+"),  # E.164: international, ISDN
            dest_addr_ton=1,
            dest_addr_npi=1,
            registered_delivery=1,  # a receipt for the final outcome, delivered or not
            data_coding=encoded.data_coding,
            short_message=encoded.data if single else b"",
            tlvs={} if single else {Tag.MESSAGE_PAYLOAD: encoded.data},
        )

    async def _remember(self, message: OutboundMessage, message_id: str) -> None:
        if self._services is None or not message_id:
            return
        value = f"{message.challenge_id}:{message.attempt}"
        key = receipt_key(self.name, message_id)
        await self._services.redis.set(key, value, ex=self._services.ttl_seconds)

    async def _on_deliver(self, short_message: ShortMessage) -> int:
        """A deliver_sm: record its receipt; the status to answer it with."""
        receipt = read_receipt(short_message)
        if receipt is None or self._services is None:
            return Status.ROK  # not a receipt (or none we can read): nothing to record
        try:
            found = await self._services.redis.get(receipt_key(self.name, receipt.message_id))
            if found is None:
                log.info("smpp receipt for an unknown message", extra={"provider": self.name})
                return Status.ROK
            value = found.decode() if isinstance(found, bytes) else str(found)
            challenge_id, _, send = value.rpartition(":")
            event = DeliveryEvent("message", receipt.state)
            await self._services.record(challenge_id, int(send), event)
        except Exception:
            log.exception("smpp receipt not recorded", extra={"provider": self.name})
            return Status.RX_T_APPN  # the SMSC will deliver it again
        return Status.ROK

    async def aclose(self) -> None:
        """Unbind and close the link."""
        await self.session.aclose()


def _refusal(name: str, status: int) -> ProviderRejected | ProviderUnavailable:
    reason = NUMBER_STATUSES.get(status)
    if reason is not None:
        return ProviderRejected(f"{name}: smpp status 0x{status:02x} ({reason})")
    return ProviderUnavailable(f"{name}: smpp status 0x{status:02x}")
