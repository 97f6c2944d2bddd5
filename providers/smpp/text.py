"""A message's text as SMPP octets: GSM 03.38 when it can, else UCS-2.

GSM 03.38's default alphabet (plus its extension table, each such character
costing two septets: ESC then the code) is data_coding 0, sent unpacked, one
septet per octet, which is what SMSCs take on SMPP. Any character outside it
("œ", a curly apostrophe, an emoji) makes the whole text UCS-2 (data_coding 8, UTF-16BE: a
character outside the BMP is a surrogate pair, as handsets expect).

One SMS holds 160 septets or 70 UCS-2 characters (140 octets). A longer text
goes in the message_payload TLV, and the SMSC splits it; a text over
`MAX_PAYLOAD` octets is refused (the gateway's own messages are far shorter).
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.smpp.pdu import DATA_CODING_DEFAULT, DATA_CODING_UCS2

# GSM 03.38 default alphabet, by code (0x1B, ESC, introduces the extension table).
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C,
                 "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}  # fmt: skip
ESC = 0x1B
SEGMENT_SEPTETS = 160
SEGMENT_UCS2_OCTETS = 140
MAX_PAYLOAD = 1600  # octets: ten GSM segments' worth

_BASIC = {char: code for code, char in enumerate(GSM_BASIC) if code != ESC}


@dataclass(frozen=True, slots=True)
class Encoded:
    """A text's octets and their data_coding; `single` when it fits one SMS."""

    data: bytes
    data_coding: int

    @property
    def single(self) -> bool:
        limit = SEGMENT_SEPTETS if self.data_coding == DATA_CODING_DEFAULT else SEGMENT_UCS2_OCTETS
        return len(self.data) <= limit

    def __repr__(self) -> str:  # the text holds the code
        return f"Encoded(octets={len(self.data)}, data_coding={self.data_coding})"


def gsm7(text: str) -> bytes | None:
    """`text` in GSM 03.38 septets, one per octet; None when a character is not in it."""
    out = bytearray()
    for char in text:
        if char in _BASIC:
            out.append(_BASIC[char])
        elif char in GSM_EXTENSION:
            out += bytes([ESC, GSM_EXTENSION[char]])
        else:
            return None
    return bytes(out)


def encode(text: str) -> Encoded:
    """GSM 03.38 (data_coding 0) when every character is in it, else UCS-2 (8)."""
    septets = gsm7(text)
    if septets is not None:
        return Encoded(septets, DATA_CODING_DEFAULT)
    return Encoded(text.encode("utf-16-be"), DATA_CODING_UCS2)


def decode(data: bytes, data_coding: int) -> str:
    """The text of octets in `data_coding` (0: GSM 03.38 unpacked, 8: UCS-2, else Latin-1)."""
    if data_coding == DATA_CODING_UCS2:
        return data.decode("utf-16-be", errors="replace")
    if data_coding != DATA_CODING_DEFAULT:
        return data.decode("latin-1")
    reverse = {code: char for char, code in GSM_EXTENSION.items()}
    out, escaped = [], False
    for octet in data:
        if escaped:
            out.append(reverse.get(octet, " "))
            escaped = False
        elif octet == ESC:
            escaped = True
        else:
            out.append(GSM_BASIC[octet & 0x7F])
    return "".join(out)
