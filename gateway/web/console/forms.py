"""The account forms (create, modify rights, switch the number): read, checked, French errors.

Each field is checked by the account store's own checks (`gateway.accounts.records`,
`AccountStore.parse_phone`), the ones `POST /accounts`, `PATCH` and `PUT .../phone`
run: the console only collects every field's error at once, in French, to
announce each next to its field. What it returns is the API's body, ready for
`AccountAdmin`. A number waiting for its step-up code is kept sealed (AES-GCM,
the phone key), never in clear in the session.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any, Final

from gateway.accounts.records import (
    NewAccount,
    check_account_id,
    check_email,
    check_extension,
    check_role,
    check_services,
    check_text,
)
from gateway.errors import GatewayError
from gateway.runtime import Services
from gateway.web.console import texts
from gateway.web.console.pages import paris_zone

Errors = dict[str, str]

MESSAGES: Final = {
    "account_id": "L'identifiant : de 1 à 128 caractères, lettres, chiffres et . _ @ - uniquement.",
    "establishment": "L'établissement est obligatoire (200 caractères au plus).",
    "last_name": "Le nom est obligatoire (100 caractères au plus).",
    "first_name": "Le prénom est obligatoire (100 caractères au plus).",
    "email": "Saisissez une adresse courriel valide, par exemple prenom.nom@mairie-luisant.fr.",
    "role": "Choisissez un profil : administrateur ou utilisateur.",
    "phone": texts.ERRORS["invalid_phone"],
    "phone_extension": "Le poste se compose de 1 à 10 chiffres.",
    "services": (
        "Les services : au plus 50, séparés par des virgules, chacun de 1 à 64 caractères "
        "parmi lettres sans accent, chiffres, espaces et . _ - "
        "(par exemple GESTION DES CARRIERES, PAIE)."
    ),
    "expires_at": "Saisissez la date d'expiration au format JJ/MM/AAAA, par exemple 31/12/2027.",
}
_DATE_FR = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4})")
_DATE_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def _check(errors: Errors, name: str, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except GatewayError:
        errors[name] = MESSAGES[name]
        return None


def services_of(text: str) -> list[str]:
    """ "CARRIERES, PAIE" -> ["CARRIERES", "PAIE"] (commas or new lines between them)."""
    return [s.strip() for s in re.split(r"[,\n]", text) if s.strip()]


def expiry_of(text: str) -> str | None:
    """A day typed (JJ/MM/AAAA, or the ISO form a date field sends) -> the end of that
    day in Paris, as ISO 8601; None when left empty; ValueError when not a date."""
    text = text.strip()
    if not text:
        return None
    found = _DATE_FR.fullmatch(text)
    if found:
        day = date(int(found[3]), int(found[2]), int(found[1]))
    elif iso := _DATE_ISO.fullmatch(text):
        day = date(int(iso[1]), int(iso[2]), int(iso[3]))
    else:
        raise ValueError(text)
    moment = datetime.combine(day, time(23, 59, 59))
    return moment.replace(tzinfo=paris_zone(moment)).isoformat()


def names_and_rights(fields: dict[str, str], errors: Errors) -> dict[str, Any]:
    """The fields the create and the "modifier" forms share, checked."""
    body: dict[str, Any] = {}
    for name in ("last_name", "first_name"):
        value = fields.get(name, "").strip()
        body[name] = _check(errors, name, functools.partial(check_text, name, value))
    email = fields.get("email", "").strip()
    body["email"] = _check(errors, "email", lambda: check_email(email))
    role = fields.get("role", "")
    body["role"] = _check(errors, "role", lambda: check_role(role).value)
    services = services_of(fields.get("services", ""))
    body["services"] = _check(errors, "services", lambda: list(check_services(services)))
    body["net_entreprises"] = fields.get("net_entreprises") == "1"
    return body


def new_account(
    services: Services, fields: dict[str, str], establishment: str
) -> tuple[dict[str, Any], Errors]:
    """`POST /accounts`' body from the create form, and each field's error."""
    errors: Errors = {}
    account_id = fields.get("account_id", "").strip()
    body: dict[str, Any] = {
        "account_id": _check(errors, "account_id", lambda: check_account_id(account_id)),
        "establishment": _check(
            errors, "establishment", lambda: check_text("establishment", establishment, 200)
        ),
    }
    body |= names_and_rights(fields, errors)
    body |= phone_fields(services, fields, errors, required=False)
    try:
        body["expires_at"] = expiry_of(fields.get("expires_at", ""))
    except ValueError:
        errors["expires_at"] = MESSAGES["expires_at"]
    return body, errors


def phone_fields(
    services: Services, fields: dict[str, str], errors: Errors, *, required: bool
) -> dict[str, Any]:
    """The number (checked, not kept: `seal` keeps it), "masqué", and the extension."""
    raw = fields.get("phone", "").strip()
    if raw or required:
        _check(errors, "phone", lambda: services.accounts.parse_phone(raw))
    extension = fields.get("phone_extension", "").strip() or None
    return {
        "phone": raw or None,
        "phone_hidden": fields.get("phone_hidden") == "1",
        "phone_extension": _check(errors, "phone_extension", lambda: check_extension(extension)),
    }


def to_new_account(body: dict[str, Any]) -> NewAccount:
    expires = body.get("expires_at")
    return NewAccount(
        **{k: v for k, v in body.items() if k != "expires_at" and v is not None},
        expires_at=None if expires is None else datetime.fromisoformat(expires),
    )


# --- a number waiting for its step-up code: sealed in the session ----------------------


def seal(services: Services, aad: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its `phone` sealed, bound to `aad` (the action's path)."""
    raw = body.get("phone")
    if raw is None:
        return body
    sealed = services.keyring.phones.seal(raw.encode(), _aad(aad))
    return {**body, "phone": None, "phone_sealed": base64.b64encode(sealed).decode()}


def unseal(services: Services, aad: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body `seal` made, its number back in clear (only in memory)."""
    sealed = body.get("phone_sealed")
    rest = {k: v for k, v in body.items() if k != "phone_sealed"}
    if sealed is None:
        return rest
    raw = services.keyring.phones.open(base64.b64decode(sealed), _aad(aad))
    return {**rest, "phone": raw.decode()}


def _aad(aad: str) -> bytes:
    return b"otp-gateway/console-pending/" + aad.encode()
