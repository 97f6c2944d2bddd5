"""SMPP 3.4 PDUs: a pure codec for what an ESME and our SMSC exchange.

    header   command_length  command_id  command_status  sequence_number  (4 octets each, BE)
    body     mandatory parameters, in the order of the spec, then TLVs (tag, length, value)

Only the operations the provider uses are decoded field by field: bind_transceiver(_resp),
unbind(_resp), submit_sm(_resp), deliver_sm(_resp), enquire_link(_resp), generic_nack.
Anything that breaks the spec (a length below 16 or above `MAX_PDU`, a C-octet string
without its NUL or over its maximum, a truncated field or TLV) raises `ProtocolError`,
never another exception: the peer is not trusted. The length cap bounds every read.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

HEADER = struct.Struct(">IIII")
HEADER_SIZE = HEADER.size
MAX_PDU = 8192  # the largest PDU either side accepts: a long message_payload fits
RESPONSE = 0x80000000
INTERFACE_VERSION = 0x34


class ProtocolError(Exception):
    """The peer sent something that is not a valid SMPP 3.4 PDU (`status`: what to answer)."""

    def __init__(self, message: str, status: int = 0x00000002) -> None:  # ESME_RINVCMDLEN
        super().__init__(message)
        self.status = status


class Command(IntEnum):
    """command_id values (SMPP 3.4, 5.1.2.1)."""

    GENERIC_NACK = 0x80000000
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015


class Status(IntEnum):
    """command_status values the gateway names (SMPP 3.4, 5.1.3); others pass as ints."""

    ROK = 0x00
    RINVMSGLEN = 0x01
    RINVCMDLEN = 0x02
    RINVCMDID = 0x03
    RINVBNDSTS = 0x04
    RALYBND = 0x05
    RSYSERR = 0x08
    RINVSRCADR = 0x0A
    RINVDSTADR = 0x0B
    RBINDFAIL = 0x0D
    RINVPASWD = 0x0E
    RINVSYSID = 0x0F
    RMSGQFUL = 0x14
    RSUBMITFAIL = 0x45
    RINVDSTTON = 0x50
    RINVDSTNPI = 0x51
    RTHROTTLED = 0x58
    RX_T_APPN = 0x64
    RX_P_APPN = 0x65
    RX_R_APPN = 0x66


class Tag(IntEnum):
    """TLV tags the gateway reads or writes (SMPP 3.4, 5.3.2)."""

    RECEIPTED_MESSAGE_ID = 0x001E
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427


# esm_class bits 2-5 (5.2.12): 0001 is "SMSC delivery receipt" on a deliver_sm.
ESM_RECEIPT_MASK, ESM_RECEIPT = 0x3C, 0x04
DATA_CODING_DEFAULT, DATA_CODING_UCS2 = 0x00, 0x08
MAX_SHORT_MESSAGE = 254  # sm_length is one octet, 255 reserved


@dataclass(frozen=True, slots=True)
class Pdu:
    """One PDU: the header and its body (mandatory fields, then TLVs), undecoded."""

    command_id: int
    sequence: int
    status: int = 0
    body: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(HEADER_SIZE + len(self.body), self.command_id, self.status,
                           self.sequence) + self.body  # fmt: skip

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE)


@dataclass(frozen=True, slots=True)
class Bind:
    """bind_transceiver's body (4.1.5)."""

    system_id: str
    password: str
    system_type: str = ""
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def __repr__(self) -> str:  # the password never shows
        return f"Bind(system_id={self.system_id!r}, system_type={self.system_type!r})"


@dataclass(frozen=True, slots=True)
class ShortMessage:
    """submit_sm's and deliver_sm's body (4.4.1, 4.6.1): they share one layout."""

    source_addr: str
    destination_addr: str
    short_message: bytes = b""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    service_type: str = ""
    tlvs: Mapping[int, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:  # neither the number nor the text (the code) shows
        return f"ShortMessage(esm_class={self.esm_class}, data_coding={self.data_coding})"

    @property
    def is_receipt(self) -> bool:
        return self.esm_class & ESM_RECEIPT_MASK == ESM_RECEIPT

    @property
    def payload(self) -> bytes:
        """The text's octets: message_payload when present, else short_message."""
        return self.tlvs.get(Tag.MESSAGE_PAYLOAD, self.short_message)


# --- header ---------------------------------------------------------------------------


def header_length(header: bytes) -> int:
    """command_length of a 16-octet header; ProtocolError outside [16, MAX_PDU]."""
    (length,) = struct.unpack_from(">I", header)
    if not HEADER_SIZE <= length <= MAX_PDU:
        raise ProtocolError(f"command_length {length} outside [{HEADER_SIZE}, {MAX_PDU}]")
    return int(length)


def decode(data: bytes) -> Pdu:
    """One whole PDU (header and body) from `data`, which must be exactly it."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError("truncated header")
    length = header_length(data[:4])
    if length != len(data):
        raise ProtocolError("command_length does not match the PDU")
    _, command_id, status, sequence = HEADER.unpack_from(data)
    return Pdu(command_id, sequence, status, bytes(data[HEADER_SIZE:]))


# --- fields -----------------------------------------------------------------------------


class Reader:
    """Reads a body's fields in order; every overrun is a ProtocolError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def octet(self) -> int:
        if self.at >= len(self.data):
            raise ProtocolError("truncated body", Status.RINVMSGLEN)
        self.at += 1
        return self.data[self.at - 1]

    def cstring(self, maximum: int) -> str:
        """A C-octet string of at most `maximum` octets, its NUL included (ASCII)."""
        end = self.data.find(b"\x00", self.at, self.at + maximum)
        if end < 0:
            raise ProtocolError(f"C-octet string without NUL within {maximum}", Status.RINVMSGLEN)
        raw = self.data[self.at : end]
        self.at = end + 1
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError("C-octet string not ASCII", Status.RINVMSGLEN) from exc

    def octets(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise ProtocolError("truncated body", Status.RINVMSGLEN)
        self.at += count
        return self.data[self.at - count : self.at]

    def tlvs(self) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        while self.at < len(self.data):
            if self.at + 4 > len(self.data):
                raise ProtocolError("truncated TLV", 0xC0)  # ESME_RINVOPTPARSTREAM
            tag, size = struct.unpack_from(">HH", self.data, self.at)
            self.at += 4
            found[tag] = self.octets(size)
        return found


def cstring(value: str, maximum: int) -> bytes:
    """`value` as a C-octet string; ValueError when it is not ASCII or too long."""
    raw = value.encode("ascii") + b"\x00"
    if len(raw) > maximum or b"\x00" in raw[:-1]:
        raise ValueError(f"C-octet string over {maximum} octets, NUL included")
    return raw


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


# --- bodies -----------------------------------------------------------------------------


def encode_bind(bind: Bind) -> bytes:
    return (cstring(bind.system_id, 16) + cstring(bind.password, 9)
            + cstring(bind.system_type, 13) + bytes([INTERFACE_VERSION, bind.addr_ton,
            bind.addr_npi]) + cstring(bind.address_range, 41))  # fmt: skip


def decode_bind(body: bytes) -> Bind:
    r = Reader(body)
    system_id, password, system_type = r.cstring(16), r.cstring(9), r.cstring(13)
    r.octet()  # interface_version: 3.3 peers too are served the 3.4 subset
    bind = Bind(system_id, password, system_type, r.octet(), r.octet(), r.cstring(41))
    r.tlvs()
    return bind


def encode_short_message(sm: ShortMessage) -> bytes:
    if len(sm.short_message) > MAX_SHORT_MESSAGE:
        raise ValueError(f"short_message over {MAX_SHORT_MESSAGE} octets: use message_payload")
    head = (cstring(sm.service_type, 6) + bytes([sm.source_addr_ton, sm.source_addr_npi])
            + cstring(sm.source_addr, 21) + bytes([sm.dest_addr_ton, sm.dest_addr_npi])
            + cstring(sm.destination_addr, 21))  # fmt: skip
    # esm_class, protocol_id, priority_flag, schedule_delivery_time and
    # validity_period empty (NUL), registered_delivery, replace_if_present_flag,
    # data_coding, sm_default_msg_id, sm_length, short_message
    middle = bytes([sm.esm_class, 0, 0, 0, 0, sm.registered_delivery, 0, sm.data_coding, 0,
                    len(sm.short_message)])  # fmt: skip
    tail = b"".join(tlv(tag, value) for tag, value in sorted(sm.tlvs.items()))
    return head + middle + sm.short_message + tail


def decode_short_message(body: bytes) -> ShortMessage:
    r = Reader(body)
    service_type = r.cstring(6)
    source_ton, source_npi, source = r.octet(), r.octet(), r.cstring(21)
    dest_ton, dest_npi, dest = r.octet(), r.octet(), r.cstring(21)
    esm_class = r.octet()
    r.octets(2)  # protocol_id, priority_flag
    r.cstring(17)  # schedule_delivery_time
    r.cstring(17)  # validity_period
    registered, _, data_coding, _ = r.octet(), r.octet(), r.octet(), r.octet()
    text = r.octets(r.octet())
    return ShortMessage(
        source, dest, text, source_ton, source_npi, dest_ton, dest_npi, esm_class,
        registered, data_coding, service_type, r.tlvs(),
    )  # fmt: skip


def encode_message_id(message_id: str) -> bytes:
    """submit_sm_resp's (and deliver_sm_resp's, empty) body: message_id, at most 65."""
    return cstring(message_id, 65)


def decode_message_id(body: bytes) -> str:
    """submit_sm_resp's message_id; an error response may have no body at all."""
    return Reader(body).cstring(65) if body else ""


def decode_system_id(body: bytes) -> str:
    """bind_transceiver_resp's system_id (its TLVs are ignored)."""
    return Reader(body).cstring(16) if body else ""
