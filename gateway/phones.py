"""Phone numbers: parse user input into a validated E.164 number we may send codes to.

We are deliberately stricter than `phonenumbers`:

* Its parser folds Unicode digits (Arabic-Indic, full-width...) and ignores stray
  characters such as zero-width spaces, RTL marks and line breaks. Two visually
  different inputs would then map to one number, which hides tampering in logs and
  lets look-alike input through rate-limit keys and audit trails. We only accept
  ASCII digits and the usual separators, and a '+' only in first position.
* A number that merely *parses* is not enough: it must be valid, belong to an
  allowed region and be of a type that can receive a code at a predictable cost
  (no premium-rate, shared-cost, toll-free or short numbers, which cost us money
  or cannot receive SMS).
* The French overseas departments share the French national numbering plan: from
  France, "0692 12 34 56" is a Réunion mobile (+262 692...). `phonenumbers` parses
  national input against one region only, so it reads that as an invalid +33 692
  number, and even reads some overseas ranges (0596 Martinique, 0269 Mayotte) as
  valid metropolitan fixed lines. National input is therefore also tried against
  the overseas regions of the same plan, and a geographic overseas reading wins.

Errors carry a stable machine `reason` and an English message that never repeats
the number: messages end up in logs and API responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import phonenumbers
from phonenumbers import (
    CountryCodeSource,
    NumberParseException,
    PhoneNumber,
    PhoneNumberFormat,
    PhoneNumberType,
    shortnumberinfo,
)

FRANCE_AND_OVERSEAS: frozenset[str] = frozenset(
    {"FR", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "WF", "PF", "NC"}
)

MAX_INPUT_LENGTH = 64

# Regions reachable in national form (trunk prefix 0) from the key region. Order
# only matters for ambiguous input; shared country codes (262, 590) are resolved
# by phonenumbers from the number itself whichever region we parse with.
_SHARED_NATIONAL_PLAN: dict[str, tuple[str, ...]] = {
    "FR": ("RE", "YT", "GP", "BL", "MF", "GF", "MQ", "PM"),
}

# ASCII only: `\d` and str.isdigit() would let Unicode digits through.
_ACCEPTED_INPUT = re.compile(r"\+?[0-9 ().\-]+")
_ASCII_DIGITS = frozenset("0123456789")
_KEPT_DIGITS = 2

Reason = Literal[
    "not_a_number",
    "invalid",
    "country_not_allowed",
    "premium_rate",
    "shared_cost",
    "toll_free",
    "short_number",
    "voip_not_allowed",
    "unsupported_type",
]

_MESSAGES: dict[Reason, str] = {
    "not_a_number": "this is not a phone number",
    "invalid": "this phone number is not valid",
    "country_not_allowed": "phone numbers from this country are not accepted",
    "premium_rate": "premium-rate numbers are not accepted",
    "shared_cost": "shared-cost numbers are not accepted",
    "toll_free": "toll-free numbers are not accepted",
    "short_number": "short numbers are not accepted, give a full phone number",
    "voip_not_allowed": "VoIP numbers are not accepted",
    "unsupported_type": "this type of phone number cannot receive codes",
}


class InvalidPhone(ValueError):
    """Input rejected as a phone number; `reason` is stable, str(exc) is for humans."""

    reason: Reason

    def __init__(self, reason: Reason) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason = reason


class LineType(StrEnum):
    MOBILE = "mobile"
    FIXED = "fixed"
    FIXED_OR_MOBILE = "fixed_or_mobile"
    VOIP = "voip"


SMS = "sms"
VOICE = "voice"

# FIXED_OR_MOBILE means phonenumbers cannot tell the two apart (PM, WF ranges): the
# line may be mobile, so SMS is offered first and voice stays available as fallback.
_CHANNELS: dict[LineType, tuple[str, ...]] = {
    LineType.MOBILE: (SMS, VOICE),
    LineType.FIXED_OR_MOBILE: (SMS, VOICE),
    LineType.FIXED: (VOICE,),
    LineType.VOIP: (VOICE,),
}


def channels_for(line_type: LineType) -> tuple[str, ...]:
    """Channels a number of this type can receive, preferred first."""
    return _CHANNELS[line_type]


_ACCEPTED_TYPES: dict[int, LineType] = {
    PhoneNumberType.MOBILE: LineType.MOBILE,
    PhoneNumberType.FIXED_LINE: LineType.FIXED,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: LineType.FIXED_OR_MOBILE,
    PhoneNumberType.VOIP: LineType.VOIP,
}

_REJECTED_TYPES: dict[int, Reason] = {
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.TOLL_FREE: "toll_free",
}

# Types that denote a place (or a mobile network of one): only these let an
# overseas reading override a valid metropolitan one.
_GEOGRAPHIC_TYPES = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


@dataclass(frozen=True, slots=True)
class PhonePolicy:
    default_region: str = "FR"
    allowed_regions: frozenset[str] = FRANCE_AND_OVERSEAS
    allow_voip: bool = True


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str
    region: str
    line_type: LineType

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels this number can receive, preferred first."""
        return channels_for(self.line_type)

    @property
    def default_channel(self) -> str:
        return self.channels[0]

    def masked(self, hide_all: bool = False) -> str:
        """International format with the national digits hidden: "+33 * ** ** ** 78"."""
        prefix, rest = _international_parts(self.e164)
        return prefix + _mask_digits(rest, 0 if hide_all else _KEPT_DIGITS)


def parse_phone(raw: str, policy: PhonePolicy) -> Phone:
    """Parse user input into a `Phone` allowed by `policy`, or raise `InvalidPhone`."""
    text = _screen(raw)
    number = _parse(text, policy.default_region)
    if number.country_code_source == CountryCodeSource.FROM_DEFAULT_COUNTRY:
        number = _prefer_shared_plan_region(text, number, policy.default_region)
    _require_valid(number)
    region = phonenumbers.region_code_for_number(number) or ""
    if region not in policy.allowed_regions:
        raise InvalidPhone("country_not_allowed")
    return Phone(
        e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
        region=region,
        line_type=_line_type(phonenumbers.number_type(number), policy),
    )


def number_fingerprint_input(phone: Phone) -> bytes:
    """Bytes fed to the number's HMAC fingerprint: the E.164 form, one per number."""
    return phone.e164.encode("ascii")


def _screen(raw: str) -> str:
    if not isinstance(raw, str):
        raise InvalidPhone("not_a_number")
    text = raw.strip(" ")
    if len(text) > MAX_INPUT_LENGTH or _ACCEPTED_INPUT.fullmatch(text) is None:
        raise InvalidPhone("not_a_number")
    return text


def _parse(text: str, region: str) -> PhoneNumber:
    try:
        # keep_raw_input records whether the number was given in national form.
        return phonenumbers.parse(text, region, keep_raw_input=True)
    except NumberParseException:
        # `from None`: the chained exception would put the raw input in tracebacks.
        raise InvalidPhone("not_a_number") from None


def _try_parse(text: str, region: str) -> PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region, keep_raw_input=True)
    except NumberParseException:
        return None


def _prefer_shared_plan_region(text: str, home: PhoneNumber, home_region: str) -> PhoneNumber:
    """Reread national input as an overseas number when that is the right reading.

    An overseas reading is taken when the home reading is invalid, or when both are
    geographic: phonenumbers' metropolitan ranges overlap overseas allocations
    (0596..., 0269...), while its overseas fixed ranges also include numbers that
    are non-geographic at home (0806-0809), which must stay home numbers.
    """
    home_valid = phonenumbers.is_valid_number(home)
    if home_valid and phonenumbers.number_type(home) not in _GEOGRAPHIC_TYPES:
        return home
    for region in _SHARED_NATIONAL_PLAN.get(home_region, ()):
        alt = _try_parse(text, region)
        if alt is None or not phonenumbers.is_valid_number(alt):
            continue
        if not home_valid or phonenumbers.number_type(alt) in _GEOGRAPHIC_TYPES:
            return alt
    return home


def _require_valid(number: PhoneNumber) -> None:
    if phonenumbers.is_valid_number(number):
        return
    if shortnumberinfo.is_valid_short_number(number):
        raise InvalidPhone("short_number")
    raise InvalidPhone("invalid")


def _line_type(number_type: int, policy: PhonePolicy) -> LineType:
    rejected = _REJECTED_TYPES.get(number_type)
    if rejected is not None:
        raise InvalidPhone(rejected)
    line_type = _ACCEPTED_TYPES.get(number_type)
    if line_type is None:
        raise InvalidPhone("unsupported_type")
    if line_type is LineType.VOIP and not policy.allow_voip:
        raise InvalidPhone("voip_not_allowed")
    return line_type


def _international_parts(e164: str) -> tuple[str, str]:
    """Split the INTERNATIONAL format into "+<country code>" and the grouped rest."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        # Never fail while masking (it runs in logging paths): hide nearly everything.
        return "+", e164.removeprefix("+")
    formatted = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    prefix = f"+{number.country_code}"
    if not formatted.startswith(prefix):
        return "+", e164.removeprefix("+")
    return prefix, formatted[len(prefix) :]


def _mask_digits(text: str, keep: int) -> str:
    to_hide = sum(ch in _ASCII_DIGITS for ch in text) - keep
    out: list[str] = []
    for ch in text:
        if ch in _ASCII_DIGITS and to_hide > 0:
            out.append("*")
            to_hide -= 1
        else:
            out.append(ch)
    return "".join(out)
