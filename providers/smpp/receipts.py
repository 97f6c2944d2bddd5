"""Delivery receipts: a receipt deliver_sm, read as (message id, gateway state).

The SMSC says which message a receipt is about and what became of it in the
receipted_message_id and message_state TLVs (SMPP 3.4, 5.3.2.12 and 5.3.2.35)
when it sends them, else in the text of Appendix B:

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E

The TLVs win over the text. The gateway's message states are `sent`,
`delivered` and `failed`: an expired, deleted, undeliverable or rejected
message never reached the person, so it is `failed` (an SMS may then become a
call); an SMSC's "unknown" says nothing new.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from providers.smpp.pdu import ShortMessage, Tag

# stat: of the receipt text (Appendix B), and message_state values (5.2.28).
TEXT_STATES = {
    "DELIVRD": "delivered", "EXPIRED": "failed", "DELETED": "failed", "UNDELIV": "failed",
    "REJECTD": "failed", "ACCEPTD": "sent", "ENROUTE": "sent",
}  # fmt: skip
MESSAGE_STATES = {1: "sent", 2: "delivered", 3: "failed", 4: "failed", 5: "failed",
                  6: "sent", 8: "failed"}  # fmt: skip
_ID = re.compile(r"(?:^|\s)id:(\S{1,64})")
_STAT = re.compile(r"\sstat:([A-Z]{7})")


@dataclass(frozen=True, slots=True)
class Receipt:
    """Which message (the SMSC's id) a receipt is about, and its new gateway state."""

    message_id: str
    state: str  # sent | delivered | failed


def read_receipt(message: ShortMessage) -> Receipt | None:
    """The receipt a deliver_sm carries; None when it is none or says nothing usable."""
    if not message.is_receipt:
        return None
    text = message.payload.decode("latin-1")
    message_id = _tlv_id(message) or _match(_ID, text)
    state = _tlv_state(message) or TEXT_STATES.get(_match(_STAT, text) or "")
    if not message_id or state is None:
        return None
    return Receipt(message_id, state)


def _tlv_id(message: ShortMessage) -> str | None:
    raw = message.tlvs.get(Tag.RECEIPTED_MESSAGE_ID)
    if raw is None:
        return None
    return raw.rstrip(b"\x00").decode("latin-1") or None


def _tlv_state(message: ShortMessage) -> str | None:
    raw = message.tlvs.get(Tag.MESSAGE_STATE)
    return MESSAGE_STATES.get(raw[0]) if raw is not None and len(raw) == 1 else None


def _match(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.search(text)
    return found[1] if found else None


def receipt_text(message_id: str, stat: str, done: str = "0000000000") -> str:
    """Appendix B's text, as SMSCs (and ours) write it."""
    dlvrd = "001" if stat == "DELIVRD" else "000"
    return (f"id:{message_id} sub:001 dlvrd:{dlvrd} submit date:{done} done date:{done} "
            f"stat:{stat} err:000 text:")  # fmt: skip
