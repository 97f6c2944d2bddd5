"""The SMPP 3.4 codec, the text encodings and receipts (providers/smpp/pdu, text, receipts).

Spec byte vectors where the spec gives the layout; Hypothesis round trips for
the rest; and any bytes at all decode to a PDU or a ProtocolError, never
another exception, and never a read past the length cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.smpp import pdu, text
from providers.smpp.pdu import Bind, Command, Pdu, ProtocolError, ShortMessage, Tag
from providers.smpp.receipts import Receipt, read_receipt, receipt_text
from providers.smpp.session import read_pdu

ascii_text = st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=8)


def test_enquire_link_is_the_spec_s_sixteen_octets() -> None:
    raw = Pdu(Command.ENQUIRE_LINK, 1).encode()
    assert raw == bytes.fromhex("00000010 00000015 00000000 00000001")
    assert pdu.decode(raw) == Pdu(Command.ENQUIRE_LINK, 1, 0, b"")


def test_bind_transceiver_body_follows_the_spec_layout() -> None:
    body = pdu.encode_bind(Bind("otpgw", "secret12", "OTP"))
    # system_id, password, system_type (C-octet), interface_version 0x34, ton, npi, range
    assert body == b"otpgw\x00secret12\x00OTP\x00\x34\x00\x00\x00"
    assert "secret12" not in repr(pdu.decode_bind(body))


def test_submit_sm_body_follows_the_spec_layout() -> None:
    message = ShortMessage("OTPGW", "33612345678", b"Hi", 5, 0, 1, 1, registered_delivery=1)
    body = pdu.encode_short_message(message)
    assert body == (
        b"\x00"
        + b"\x05\x00OTPGW\x00"
        + b"\x01\x0133612345678\x00"
        # esm_class, protocol_id, priority, schedule, validity, registered_delivery,
        # replace_if_present, data_coding, sm_default_msg_id, sm_length, short_message
        + bytes([0, 0, 0, 0, 0, 1, 0, 0, 0, 2])
        + b"Hi"
    )
    assert pdu.decode_short_message(body) == message
    assert "33612345678" not in repr(message)


short_messages = st.builds(
    ShortMessage,
    source_addr=ascii_text,
    destination_addr=ascii_text,
    short_message=st.binary(max_size=254),
    source_addr_ton=st.integers(0, 255),
    source_addr_npi=st.integers(0, 255),
    dest_addr_ton=st.integers(0, 255),
    dest_addr_npi=st.integers(0, 255),
    esm_class=st.integers(0, 255),
    registered_delivery=st.integers(0, 255),
    data_coding=st.integers(0, 255),
    service_type=st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=5),
    tlvs=st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=300), max_size=3),
)


@given(short_messages)
def test_short_messages_round_trip(message: ShortMessage) -> None:
    assert pdu.decode_short_message(pdu.encode_short_message(message)) == message


@given(ascii_text, st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=8))
def test_binds_round_trip(system_id: str, password: str) -> None:
    bind = Bind(system_id, password, "x", 1, 1, "")
    assert pdu.decode_bind(pdu.encode_bind(bind)) == bind


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
       st.binary(max_size=pdu.MAX_PDU - 16))  # fmt: skip
def test_pdus_round_trip(command: int, status: int, sequence: int, body: bytes) -> None:
    message = Pdu(command, sequence, status, body)
    assert pdu.decode(message.encode()) == message


@given(st.binary(max_size=600))
def test_any_bytes_decode_or_raise_a_protocol_error(data: bytes) -> None:
    for decoder in (pdu.decode, pdu.decode_bind, pdu.decode_short_message,
                    pdu.decode_message_id):  # fmt: skip
        with contextlib.suppress(ProtocolError):
            decoder(data)


def test_c_octet_strings_are_bounded() -> None:
    with pytest.raises(ProtocolError):
        pdu.decode_message_id(b"x" * 65)  # no NUL within 65 octets
    assert pdu.decode_message_id(b"x" * 64 + b"\x00") == "x" * 64
    with pytest.raises(ValueError):
        pdu.cstring("x" * 16, 16)
    with pytest.raises(ValueError):
        pdu.encode_short_message(ShortMessage("a", "b", b"x" * 255))


@pytest.mark.parametrize("length", [0, 15, pdu.MAX_PDU + 1, 0xFFFFFFFF])
def test_a_command_length_out_of_bounds_is_refused(length: int) -> None:
    with pytest.raises(ProtocolError):
        pdu.header_length(struct.pack(">I", length))


async def test_an_oversized_pdu_is_refused_before_its_body_is_read() -> None:
    """A peer announcing 4 GiB gets a ProtocolError at once, not a 4 GiB read."""
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack(">IIII", 0xFFFFFFF0, Command.SUBMIT_SM, 0, 1))
    async with asyncio.timeout(1):
        with pytest.raises(ProtocolError):
            await read_pdu(reader)


# --- text ---------------------------------------------------------------------------


def test_french_with_accents_of_the_gsm_alphabet_stays_gsm() -> None:
    encoded = text.encode("Votre code : 123456. Valable 5 min, é è à ù Ç É.")
    assert encoded.data_coding == pdu.DATA_CODING_DEFAULT
    assert encoded.single
    assert text.decode(encoded.data, 0) == "Votre code : 123456. Valable 5 min, é è à ù Ç É."


@pytest.mark.parametrize("word", ["cœur", "reçu", "fenêtre", "l’accès"])
def test_one_character_outside_gsm_makes_it_ucs2(word: str) -> None:
    """GSM 03.38 has É and Ç but neither œ, ç, ê nor a typographic apostrophe."""
    assert text.encode(f"Code 123456 {word}").data_coding == pdu.DATA_CODING_UCS2


def test_ucs2_is_utf16_big_endian() -> None:
    encoded = text.encode("Code 123456 pour votre cœur")
    assert encoded.data_coding == pdu.DATA_CODING_UCS2
    assert encoded.data == "Code 123456 pour votre cœur".encode("utf-16-be")


def test_extension_characters_cost_two_septets() -> None:
    assert text.gsm7("€[]") == bytes([0x1B, 0x65, 0x1B, 0x3C, 0x1B, 0x3E])
    assert not text.encode("€" * 81).single  # 162 septets
    assert text.encode("€" * 80).single


def test_segment_limits() -> None:
    assert text.encode("a" * 160).single and not text.encode("a" * 161).single
    assert text.encode("œ" * 70).single and not text.encode("œ" * 71).single


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_any_text_round_trips_in_the_coding_chosen(value: str) -> None:
    encoded = text.encode(value)
    assert text.decode(encoded.data, encoded.data_coding) == value


# --- receipts -------------------------------------------------------------------------


def receipt(body: str, **tlvs: bytes) -> ShortMessage:
    tags = {getattr(Tag, name.upper()): value for name, value in tlvs.items()}
    return ShortMessage("33612345678", "", body.encode(), esm_class=pdu.ESM_RECEIPT, tlvs=tags)


@pytest.mark.parametrize(
    ("stat", "state"),
    [("DELIVRD", "delivered"), ("UNDELIV", "failed"), ("EXPIRED", "failed"),
     ("REJECTD", "failed"), ("DELETED", "failed"), ("ACCEPTD", "sent"), ("ENROUTE", "sent")],
)  # fmt: skip
def test_receipt_text_states(stat: str, state: str) -> None:
    assert read_receipt(receipt(receipt_text("0a1b", stat))) == Receipt("0a1b", state)


def test_receipt_tlvs_win_over_the_text() -> None:
    message = receipt(receipt_text("text-id", "UNDELIV"), receipted_message_id=b"tlv-id\x00",
                      message_state=bytes([2]))  # fmt: skip
    assert read_receipt(message) == Receipt("tlv-id", "delivered")


def test_what_is_not_a_usable_receipt_is_none() -> None:
    assert read_receipt(receipt(receipt_text("0a1b", "UNKNOWN"))) is None
    assert read_receipt(receipt("no id here stat:DELIVRD")) is None
    mobile_originated = ShortMessage("33612345678", "", b"id:1 stat:DELIVRD", esm_class=0)
    assert read_receipt(mobile_originated) is None
