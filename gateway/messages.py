"""The words of every send: SMS bodies and voice scripts, per language.

Two languages are built in, `fr-FR` (the default) and `en-GB`. A
`[templates.<language>]` table overrides some texts of a built-in language, or
adds a language when it gives them all. Placeholders: `{code}`, `{action}`
(what the code is for: "de connexion", "pour la création d'un compte"),
`{minutes}` (the validity) and `{service}` (`[voice] service_name`).

An SMS must fit one GSM-7 segment (160 septets) for every purpose, the
longest code and the Web OTP line: start-up checks it, so a template that
would split, or switch the whole message to UCS-2 (70 characters), stops the
gateway with the key named.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from gateway.errors import ConfigError

SMS_SEGMENT = 160  # GSM-7 septets in one SMS

# Which placeholders each text may use; the SMS must show the code.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "sms": frozenset({"code", "action", "minutes"}),
    "intro": frozenset({"service"}),
    "code": frozenset({"action"}),
    "again": frozenset(),
    "replay": frozenset(),
    "keypress": frozenset({"action", "service"}),
    "goodbye": frozenset(),
    "expired": frozenset(),
}

# GSM 03.38: the basic set costs one septet, the extension table two.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True, slots=True)
class Templates:
    """Every text of one language (`language` is also TwiML's `<Say language>`)."""

    language: str
    service: str  # the service's name when `[voice] service_name` is empty
    sms: str
    intro: str
    code: str
    again: str
    replay: str
    keypress: str
    goodbye: str
    expired: str
    actions: Mapping[str, str]  # purpose -> phrase; "default" for the others

    def action(self, purpose: str) -> str:
        return self.actions.get(purpose) or self.actions["default"]


FRENCH = Templates(
    language="fr-FR",
    service="votre service en ligne",
    sms="Code {code} {action}. Valable {minutes} min. Ne le communiquez jamais.",
    intro="Bonjour, ici {service}.",
    code="Votre code {action} est :",
    again="Je répète votre code :",
    replay="Pour réécouter le code, appuyez sur 1.",
    keypress="Pour entendre votre code {action}, appuyez sur une touche de votre téléphone.",
    goodbye="Au revoir.",
    expired="Ce code n'est plus valable. Au revoir.",
    actions={
        "login": "de connexion",
        "account.create": "pour la création d'un compte",
        "contact.update": "pour la modification de vos coordonnées",
        "rncps": "pour l'accès au service protégé",
        "account.manage": "pour la gestion d'un compte",
        "default": "de confirmation",
    },
)

ENGLISH = Templates(
    language="en-GB",
    service="your online service",
    sms="Code {code} {action}. Valid for {minutes} min. Never share it.",
    intro="Hello, this is {service}.",
    code="Your code {action} is:",
    again="Again, your code is:",
    replay="To hear the code again, press 1.",
    keypress="To hear your code {action}, press any key on your phone.",
    goodbye="Goodbye.",
    expired="This code is no longer valid. Goodbye.",
    actions={
        "login": "to sign in",
        "account.create": "to create an account",
        "contact.update": "to change your contact details",
        "rncps": "to open the protected service",
        "account.manage": "to manage an account",
        "default": "to confirm this action",
    },
)

BUILTIN: dict[str, Templates] = {"fr-FR": FRENCH, "en-GB": ENGLISH}
DEFAULT_LANGUAGE = "fr-FR"


# --- rendering ------------------------------------------------------------------


def minutes(ttl_seconds: int) -> int:
    return max(1, ttl_seconds // 60)


def sms_text(
    templates: Templates, code: str, purpose: str, ttl_seconds: int, webotp_host: str = ""
) -> str:
    """The SMS body; with `webotp_host`, a last line `@host #code` for Web OTP."""
    text = templates.sms.format(
        code=code, action=templates.action(purpose), minutes=minutes(ttl_seconds)
    )
    if webotp_host:
        text += f"\n\n@{webotp_host} #{code}"
    return text


def gsm7_septets(text: str) -> int | None:
    """Septets `text` takes in GSM-7, or None when it needs UCS-2."""
    total = 0
    for char in text:
        if char in _GSM_BASIC:
            total += 1
        elif char in _GSM_EXTENSION:
            total += 2
        else:
            return None
    return total


# --- configuration ------------------------------------------------------------------


def parse_templates(raw: Any, path: str = "templates") -> dict[str, Templates]:
    """The built-in languages overlaid with a `[templates]` table."""
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be a table of languages")
    result = dict(BUILTIN)
    for language, table in raw.items():
        where = f"{path}.{language}"
        if not isinstance(table, dict):
            raise ConfigError(where, "must be a table")
        result[language] = _language(language, table, BUILTIN.get(language), where)
    return result


def _language(
    language: str, table: dict[str, Any], base: Templates | None, where: str
) -> Templates:
    known = {f.name for f in fields(Templates)} - {"language"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}", "unknown key")
    if base is None:
        missing = sorted(known - set(table))
        if missing:
            raise ConfigError(f"{where}.{missing[0]}", "is required for a new language")
        base = replace(FRENCH, language=language, actions={})
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key == "actions":
            changes["actions"] = _actions(value, base.actions, f"{where}.actions")
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.{key}", "must be a non-empty string")
        if key in PLACEHOLDERS:
            _check_placeholders(value, key, f"{where}.{key}")
        changes[key] = value
    return replace(base, **changes)


def _actions(value: Any, base: Mapping[str, str], where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(v, str) and v.strip() for v in value.values()
    ):
        raise ConfigError(where, "must be a table of purpose = non-empty string")
    merged = {**base, **value}
    if "default" not in merged:
        raise ConfigError(f"{where}.default", "is required for a new language")
    return merged


def _check_placeholders(text: str, key: str, where: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ConfigError(where, f"bad placeholder syntax: {exc}") from None
    unknown = names - PLACEHOLDERS[key]
    if unknown:
        allowed = ", ".join(f"{{{n}}}" for n in sorted(PLACEHOLDERS[key])) or "none"
        raise ConfigError(
            where, f"unknown placeholder {{{sorted(unknown)[0]}}} (allowed: {allowed})"
        )
    if key == "sms" and "code" not in names:
        raise ConfigError(where, "must contain {code}")


def check_sms_fits(
    templates: Templates,
    purposes: tuple[str, ...],
    code_length: int,
    ttl_seconds: int,
    webotp_host: str,
    where: str,
) -> None:
    """Stop start-up when some purpose's SMS would not fit one GSM-7 segment."""
    for purpose in purposes:
        text = sms_text(templates, "0" * code_length, purpose, ttl_seconds, webotp_host)
        septets = gsm7_septets(text)
        if septets is None:
            bad = next(c for c in text if gsm7_septets(c) is None)
            raise ConfigError(
                where, f"{bad!r} is not in the GSM-7 alphabet (the SMS would be UCS-2)"
            )
        if septets > SMS_SEGMENT:
            raise ConfigError(
                where,
                f"the SMS for purpose {purpose!r} takes {septets} GSM-7 characters "
                f"(one segment is {SMS_SEGMENT})",
            )
