"""Tests for gateway.phones.

Example numbers come from `phonenumbers.example_number_for_type`; the first group
of tests pins how phonenumbers classifies them, so a metadata change shows up as
a failure there rather than as a puzzling failure of our own rules.
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from gateway.phones import (
    FRANCE_AND_OVERSEAS,
    MAX_INPUT_LENGTH,
    InvalidPhone,
    LineType,
    Phone,
    PhonePolicy,
    Reason,
    number_fingerprint_input,
    parse_phone,
)

DEFAULT = PhonePolicy()
NO_VOIP = PhonePolicy(allow_voip=False)
FR_ONLY = PhonePolicy(allowed_regions=frozenset({"FR"}))

# Built from code points: as literals they pass for ASCII digits when read (RUF001).
FULLWIDTH = "".join(chr(0xFF10 + int(d)) for d in "0612345678")
ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in "0612345678")

# --- what phonenumbers says about our example numbers ------------------------


@pytest.mark.parametrize(
    ("e164", "region", "number_type"),
    [
        ("+33612345678", "FR", PhoneNumberType.MOBILE),
        ("+33123456789", "FR", PhoneNumberType.FIXED_LINE),
        ("+33912345678", "FR", PhoneNumberType.VOIP),
        ("+33891123456", "FR", PhoneNumberType.PREMIUM_RATE),
        ("+33884012345", "FR", PhoneNumberType.SHARED_COST),
        ("+33820000000", "FR", PhoneNumberType.SHARED_COST),
        ("+33801234567", "FR", PhoneNumberType.TOLL_FREE),
        ("+33806123456", "FR", PhoneNumberType.UAN),
        ("+262692123456", "RE", PhoneNumberType.MOBILE),
        ("+262262161234", "RE", PhoneNumberType.FIXED_LINE),
        ("+262639012345", "YT", PhoneNumberType.MOBILE),
        ("+262269601234", "YT", PhoneNumberType.FIXED_LINE),
        ("+590690001234", "GP", PhoneNumberType.MOBILE),
        ("+590590201234", "GP", PhoneNumberType.FIXED_LINE),
        ("+590590271234", "BL", PhoneNumberType.FIXED_LINE),
        ("+590976012345", "GP", PhoneNumberType.VOIP),
        ("+594694201234", "GF", PhoneNumberType.MOBILE),
        ("+594594101234", "GF", PhoneNumberType.FIXED_LINE),
        ("+596696201234", "MQ", PhoneNumberType.MOBILE),
        ("+596596301234", "MQ", PhoneNumberType.FIXED_LINE),
        ("+508551234", "PM", PhoneNumberType.MOBILE),
        ("+508430123", "PM", PhoneNumberType.FIXED_LINE_OR_MOBILE),
        ("+681721234", "WF", PhoneNumberType.FIXED_LINE_OR_MOBILE),
        ("+681401234", "WF", PhoneNumberType.VOICEMAIL),
        ("+68987123456", "PF", PhoneNumberType.MOBILE),
        ("+68940412345", "PF", PhoneNumberType.FIXED_LINE),
        ("+689440123", "PF", PhoneNumberType.UAN),
        ("+687751234", "NC", PhoneNumberType.MOBILE),
        ("+687201234", "NC", PhoneNumberType.FIXED_LINE),
        ("+447400123456", "GB", PhoneNumberType.MOBILE),
        ("+12025550101", "US", PhoneNumberType.FIXED_LINE_OR_MOBILE),
    ],
)
def test_phonenumbers_classification_of_examples(e164: str, region: str, number_type: int) -> None:
    number = phonenumbers.parse(e164, None)
    assert phonenumbers.is_valid_number(number)
    assert phonenumbers.region_code_for_number(number) == region
    assert phonenumbers.number_type(number) == number_type


def test_phonenumbers_alone_misreads_overseas_national_forms() -> None:
    # Why parse_phone retries national input with the overseas regions.
    reunion = phonenumbers.parse("0692 12 34 56", "FR")
    assert phonenumbers.format_number(reunion, phonenumbers.PhoneNumberFormat.E164) == (
        "+33692123456"
    )
    assert not phonenumbers.is_valid_number(reunion)
    # Why a geographic overseas reading overrides a *valid* metropolitan one.
    martinique = phonenumbers.parse("0596 30 12 34", "FR")
    assert phonenumbers.is_valid_number(martinique)
    assert phonenumbers.region_code_for_number(martinique) == "FR"
    assert phonenumbers.number_type(martinique) == PhoneNumberType.FIXED_LINE


def test_phonenumbers_alone_accepts_unicode_digits() -> None:
    # Why we screen the input ourselves.
    for raw in (FULLWIDTH, ARABIC_INDIC, "06 12 34 56 78\u200b"):
        assert phonenumbers.is_valid_number(phonenumbers.parse(raw, "FR"))


# --- accepted numbers -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "06 12 34 56 78",
        "+33 6 12 34 56 78",
        "0033612345678",
        "+33612345678",
        "0612345678",
        "06.12.34.56.78",
        "06-12-34-56-78",
        "(06) 12 34 56 78",
        "+33 (0)6 12 34 56 78",
        "  06 12 34 56 78  ",
    ],
)
def test_french_mobile_forms(raw: str) -> None:
    assert parse_phone(raw, DEFAULT) == Phone("+33612345678", "FR", LineType.MOBILE)


@pytest.mark.parametrize(
    ("raw", "e164", "region", "line_type"),
    [
        ("+262 692 12 34 56", "+262692123456", "RE", LineType.MOBILE),
        ("0692 12 34 56", "+262692123456", "RE", LineType.MOBILE),
        ("00262692123456", "+262692123456", "RE", LineType.MOBILE),
        ("+262 262 16 12 34", "+262262161234", "RE", LineType.FIXED),
        ("0262 16 12 34", "+262262161234", "RE", LineType.FIXED),
        ("+262 639 01 23 45", "+262639012345", "YT", LineType.MOBILE),
        ("0639 01 23 45", "+262639012345", "YT", LineType.MOBILE),
        ("+262 269 60 12 34", "+262269601234", "YT", LineType.FIXED),
        ("0269 60 12 34", "+262269601234", "YT", LineType.FIXED),
        ("+590 690 00 12 34", "+590690001234", "GP", LineType.MOBILE),
        ("0690 00 12 34", "+590690001234", "GP", LineType.MOBILE),
        ("+590 590 20 12 34", "+590590201234", "GP", LineType.FIXED),
        ("0590 20 12 34", "+590590201234", "GP", LineType.FIXED),
        ("+590 590 27 12 34", "+590590271234", "BL", LineType.FIXED),
        ("0590 27 12 34", "+590590271234", "BL", LineType.FIXED),
        ("+594 694 20 12 34", "+594694201234", "GF", LineType.MOBILE),
        ("0694 20 12 34", "+594694201234", "GF", LineType.MOBILE),
        ("+594 594 10 12 34", "+594594101234", "GF", LineType.FIXED),
        ("0594 10 12 34", "+594594101234", "GF", LineType.FIXED),
        ("+596 696 20 12 34", "+596696201234", "MQ", LineType.MOBILE),
        ("0696 20 12 34", "+596696201234", "MQ", LineType.MOBILE),
        ("+596 596 30 12 34", "+596596301234", "MQ", LineType.FIXED),
        ("0596 30 12 34", "+596596301234", "MQ", LineType.FIXED),
        ("+508 55 12 34", "+508551234", "PM", LineType.MOBILE),
        ("055 12 34", "+508551234", "PM", LineType.MOBILE),
        ("+508 43 01 23", "+508430123", "PM", LineType.FIXED_OR_MOBILE),
        ("+681 72 12 34", "+681721234", "WF", LineType.FIXED_OR_MOBILE),
        ("+689 87 12 34 56", "+68987123456", "PF", LineType.MOBILE),
        ("+689 40 41 23 45", "+68940412345", "PF", LineType.FIXED),
        ("+687 75 12 34", "+687751234", "NC", LineType.MOBILE),
        ("+687 20 12 34", "+687201234", "NC", LineType.FIXED),
        ("+590 976 01 23 45", "+590976012345", "GP", LineType.VOIP),
    ],
)
def test_overseas_numbers(raw: str, e164: str, region: str, line_type: LineType) -> None:
    assert parse_phone(raw, DEFAULT) == Phone(e164, region, line_type)


def test_french_fixed_line() -> None:
    assert parse_phone("01 23 45 67 89", DEFAULT) == Phone("+33123456789", "FR", LineType.FIXED)


@pytest.mark.parametrize("raw", ["09 12 34 56 78", "+33 9 12 34 56 78"])
def test_french_09_numbers_are_voip(raw: str) -> None:
    assert parse_phone(raw, DEFAULT) == Phone("+33912345678", "FR", LineType.VOIP)


def test_national_09_range_shared_with_overseas_stays_french() -> None:
    # 0976... is VoIP in FR and in GP/MQ/GF alike: no geographic reason to move it.
    assert parse_phone("0976 01 23 45", DEFAULT).e164 == "+33976012345"


def test_overseas_national_form_is_not_silently_french_when_overseas_disallowed() -> None:
    # Must not fall back to phonenumbers' bogus metropolitan +33 596... reading.
    with pytest.raises(InvalidPhone) as exc:
        parse_phone("0596 30 12 34", FR_ONLY)
    assert exc.value.reason == "country_not_allowed"


def test_international_overseas_number_under_plus_33_is_invalid() -> None:
    with pytest.raises(InvalidPhone) as exc:
        parse_phone("+33 692 12 34 56", DEFAULT)
    assert exc.value.reason == "invalid"


def test_input_of_max_length_is_accepted() -> None:
    raw = "06" + " " * (MAX_INPUT_LENGTH - 10) + "12345678"
    assert len(raw) == MAX_INPUT_LENGTH
    assert parse_phone(raw, DEFAULT).e164 == "+33612345678"


def test_default_policy() -> None:
    assert DEFAULT.default_region == "FR"
    assert DEFAULT.allow_voip is True
    assert (
        DEFAULT.allowed_regions
        == FRANCE_AND_OVERSEAS
        == frozenset({"FR", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "WF", "PF", "NC"})
    )


def test_phone_is_frozen() -> None:
    phone = parse_phone("06 12 34 56 78", DEFAULT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        phone.e164 = "+33700000000"  # type: ignore[misc]


# --- channels and masking ---------------------------------------------------


@pytest.mark.parametrize(
    ("line_type", "channels", "default_channel"),
    [
        (LineType.MOBILE, ("sms", "voice"), "sms"),
        (LineType.FIXED_OR_MOBILE, ("sms", "voice"), "sms"),
        (LineType.FIXED, ("voice",), "voice"),
        (LineType.VOIP, ("voice",), "voice"),
    ],
)
def test_channels(line_type: LineType, channels: tuple[str, ...], default_channel: str) -> None:
    phone = Phone("+33612345678", "FR", line_type)
    assert phone.channels == channels
    assert phone.default_channel == default_channel


@pytest.mark.parametrize(
    ("raw", "masked", "hidden"),
    [
        ("06 12 34 56 78", "+33 * ** ** ** 78", "+33 * ** ** ** **"),
        ("0692 12 34 56", "+262 *** ** ** 56", "+262 *** ** ** **"),
        ("+596 596 30 12 34", "+596 *** ** ** 34", "+596 *** ** ** **"),
        ("+508 55 12 34", "+508 ** ** 34", "+508 ** ** **"),
        ("+687 75 12 34", "+687 **.**.34", "+687 **.**.**"),
    ],
)
def test_masked(raw: str, masked: str, hidden: str) -> None:
    phone = parse_phone(raw, DEFAULT)
    assert phone.masked() == masked
    assert phone.masked(hide_all=True) == hidden


def test_masked_never_raises_on_unparsable_e164() -> None:
    assert Phone("+999123", "FR", LineType.MOBILE).masked() == "+****23"


def test_fingerprint_input_is_ascii_e164() -> None:
    phone = parse_phone("0033 6 12 34 56 78", DEFAULT)
    assert number_fingerprint_input(phone) == b"+33612345678"


# --- rejections -------------------------------------------------------------

REJECTIONS: list[tuple[str, PhonePolicy, Reason]] = [
    # Input screening: phonenumbers would accept several of these.
    (FULLWIDTH, DEFAULT, "not_a_number"),
    (ARABIC_INDIC, DEFAULT, "not_a_number"),
    ("06 12 AB 56 78", DEFAULT, "not_a_number"),
    ("+33 6\n12345678", DEFAULT, "not_a_number"),
    ("06 12 34 56 78\r\n", DEFAULT, "not_a_number"),
    ("06\t12 34 56 78", DEFAULT, "not_a_number"),
    ("06 12 34\u200b56 78", DEFAULT, "not_a_number"),
    ("06 12 34 56 78\u200b", DEFAULT, "not_a_number"),
    ("\u200f06 12 34 56 78", DEFAULT, "not_a_number"),
    ("++33612345678", DEFAULT, "not_a_number"),
    ("33+612345678", DEFAULT, "not_a_number"),
    ("06 12 34 56 78 ext 9", DEFAULT, "not_a_number"),
    ("06" + " " * (MAX_INPUT_LENGTH - 9) + "12345678", DEFAULT, "not_a_number"),
    ("", DEFAULT, "not_a_number"),
    ("   ", DEFAULT, "not_a_number"),
    ("()", DEFAULT, "not_a_number"),
    ("+", DEFAULT, "not_a_number"),
    # Valid-looking but not a number.
    ("0612", DEFAULT, "invalid"),
    ("06 12 34 56 78 9", DEFAULT, "invalid"),
    ("07 00 00 00 00", DEFAULT, "invalid"),
    ("+33 692 12 34 56", DEFAULT, "invalid"),
    # Short codes.
    ("3949", DEFAULT, "short_number"),
    ("112", DEFAULT, "short_number"),
    ("36 30", DEFAULT, "short_number"),
    # Regions.
    ("+44 7400 123456", DEFAULT, "country_not_allowed"),
    ("+1 202 555 0101", DEFAULT, "country_not_allowed"),
    ("0692 12 34 56", FR_ONLY, "country_not_allowed"),
    ("+262 692 12 34 56", FR_ONLY, "country_not_allowed"),
    # Types.
    ("0 891 12 34 56", DEFAULT, "premium_rate"),
    ("+33 891 12 34 56", DEFAULT, "premium_rate"),
    ("0 884 01 23 45", DEFAULT, "shared_cost"),
    ("0 820 00 00 00", DEFAULT, "shared_cost"),
    ("0 800 12 34 56", DEFAULT, "toll_free"),
    ("0 801 23 45 67", DEFAULT, "toll_free"),
    ("+590 800 01 23 45", DEFAULT, "toll_free"),
    ("09 12 34 56 78", NO_VOIP, "voip_not_allowed"),
    ("+590 976 01 23 45", NO_VOIP, "voip_not_allowed"),
    ("0 806 12 34 56", DEFAULT, "unsupported_type"),  # UAN; also GP fixed: stays FR
    ("+689 44 01 23", DEFAULT, "unsupported_type"),  # UAN
    ("+681 40 12 34", DEFAULT, "unsupported_type"),  # voicemail
]


@pytest.mark.parametrize(("raw", "policy", "reason"), REJECTIONS)
def test_rejections(raw: str, policy: PhonePolicy, reason: Reason) -> None:
    with pytest.raises(InvalidPhone) as exc:
        parse_phone(raw, policy)
    assert exc.value.reason == reason
    assert isinstance(exc.value, ValueError)


def test_every_reason_is_provoked() -> None:
    assert {reason for _, _, reason in REJECTIONS} == set(get_args(Reason))


@pytest.mark.parametrize(("raw", "policy", "reason"), REJECTIONS)
def test_messages_never_contain_the_number(raw: str, policy: PhonePolicy, reason: Reason) -> None:
    with pytest.raises(InvalidPhone) as exc:
        parse_phone(raw, policy)
    message = str(exc.value)
    assert message
    assert not any(ch.isdigit() for ch in message)
    # A chained phonenumbers exception would carry the input into tracebacks.
    assert exc.value.__context__ is None or exc.value.__suppress_context__


def test_non_string_input_is_not_a_number() -> None:
    with pytest.raises(InvalidPhone) as exc:
        parse_phone(612345678, DEFAULT)  # type: ignore[arg-type]
    assert exc.value.reason == "not_a_number"
