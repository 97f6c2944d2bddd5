"""Account records: the values, their JSON and audit views, and field validation.

Pure code, no Redis: `gateway.accounts.store` stores these records. Times are
timezone-aware UTC datetimes, kept to the millisecond (what survives Redis).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any, Final

from gateway.clock import EPOCH, iso, normalize_time
from gateway.errors import AccountExpired, AccountSuspended, InvalidRequest
from gateway.phones import Phone

MAX_PER_PAGE: Final = 1000
MAX_SERVICES: Final = 50

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SERVICE = re.compile(r"[A-Za-z0-9 ._-]{1,64}")
_EXTENSION = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class Status(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    SUSPENDED = "suspended"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class Keep(Enum):
    """Sentinel type: "leave this field as it is"."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


# --- records -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class NewAccount:
    """The fields of POST /accounts, type-checked by the HTTP layer.

    `phone` is the raw input; the store parses it.
    """

    account_id: str
    establishment: str
    last_name: str
    first_name: str
    email: str
    role: str
    phone: str | None = None
    phone_hidden: bool = False
    phone_extension: str | None = None
    services: Sequence[str] = ()
    net_entreprises: bool = False
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        # The raw number never goes to logs or tracebacks.
        shown = "None" if self.phone is None else "'<redacted>'"
        return f"NewAccount(account_id={self.account_id!r}, phone={shown})"


@dataclass(frozen=True, slots=True, repr=False)
class Account:
    account_id: str
    establishment: str
    last_name: str
    first_name: str
    email: str
    role: Role
    phone: Phone | None
    phone_hidden: bool
    phone_extension: str | None
    services: tuple[str, ...]
    net_entreprises: bool
    expires_at: datetime
    suspended: bool
    created_at: datetime
    last_login_at: datetime | None

    def status(self, now: datetime) -> Status:
        if self.suspended:
            return Status.SUSPENDED
        if self.expires_at <= now:
            return Status.EXPIRED
        return Status.ACTIVE

    def require_active(self, now: datetime) -> None:
        """403 `account_suspended` / `account_expired` unless the account can act."""
        match self.status(now):
            case Status.SUSPENDED:
                raise AccountSuspended()
            case Status.EXPIRED:
                raise AccountExpired()

    def is_active_admin(self, now: datetime) -> bool:
        """An admin that can act: the establishment must always keep one."""
        return self.role is Role.ADMIN and self.status(now) is Status.ACTIVE

    def masked_phone(self) -> str | None:
        """The number as audit entries and logs may show it."""
        return None if self.phone is None else self.phone.masked(hide_all=self.phone_hidden)

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The contract's view: a hidden number is null for every caller."""
        shown = None if self.phone is None or self.phone_hidden else self.phone.e164
        return {
            "account_id": self.account_id,
            "establishment": self.establishment,
            "last_name": self.last_name,
            "first_name": self.first_name,
            "email": self.email,
            "role": self.role.value,
            "phone": shown,
            "phone_hidden": self.phone_hidden,
            "phone_extension": self.phone_extension,
            "phone_set": self.phone is not None,
            "services": list(self.services),
            "net_entreprises": self.net_entreprises,
            "expires_at": iso(self.expires_at),
            "status": self.status(now).value,
            "created_at": iso(self.created_at),
            "last_login_at": None if self.last_login_at is None else iso(self.last_login_at),
        }

    def audit_view(self) -> dict[str, Any]:
        """The changeable fields as history entries record them (phone masked)."""
        return {
            "establishment": self.establishment,
            "last_name": self.last_name,
            "first_name": self.first_name,
            "email": self.email,
            "role": self.role.value,
            "phone": self.masked_phone(),
            "phone_hidden": self.phone_hidden,
            "phone_extension": self.phone_extension,
            "services": list(self.services),
            "net_entreprises": self.net_entreprises,
            "expires_at": iso(self.expires_at),
            "suspended": self.suspended,
        }

    def __repr__(self) -> str:
        return (
            f"Account(account_id={self.account_id!r}, role={self.role.value!r}, "
            f"phone={self.masked_phone()!r}, suspended={self.suspended!r})"
        )


# --- validation --------------------------------------------------------------


def valid_account_id(value: object) -> bool:
    return isinstance(value, str) and _ACCOUNT_ID.fullmatch(value) is not None


def check_account_id(value: object) -> str:
    if not valid_account_id(value):
        raise InvalidRequest("account_id must be 1-128 characters of A-Z a-z 0-9 . _ @ -")
    assert isinstance(value, str)
    return value


def check_text(field: str, value: object, max_length: int = 100) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= max_length
        or not value.strip()
        or _CONTROL.search(value)
    ):
        raise InvalidRequest(
            f"{field} must be 1-{max_length} characters without control characters"
        )
    return value


def check_email(value: object) -> str:
    if (
        not isinstance(value, str)
        or len(value) > 254
        or _EMAIL.fullmatch(value) is None
        or _CONTROL.search(value)
    ):
        raise InvalidRequest("email must be an e-mail address of at most 254 characters")
    return value


def check_role(value: object) -> Role:
    if not isinstance(value, str) or value not in Role.__members__.values():
        raise InvalidRequest("role must be admin or user")
    return Role(value)


def check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{field} must be a boolean")
    return value


def check_extension(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or _EXTENSION.fullmatch(value) is None:
        raise InvalidRequest("phone_extension must be 1-10 digits")
    return value


def check_services(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequest("services must be a list of strings")
    if len(value) > MAX_SERVICES:
        raise InvalidRequest(f"services must hold at most {MAX_SERVICES} entries")
    for item in value:
        if not isinstance(item, str) or _SERVICE.fullmatch(item) is None:
            raise InvalidRequest("services entries must be 1-64 characters of A-Z a-z 0-9 . _ - ")
    return tuple(dict.fromkeys(value))


def check_expires_at(value: object) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest("expires_at must be an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise InvalidRequest("expires_at must be an ISO 8601 time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not EPOCH <= value < _LATEST:
        raise InvalidRequest("expires_at is out of range")
    return normalize_time(value)


def check_status(value: object) -> bool:
    """PATCH status: returns the new `suspended` flag."""
    if value == Status.SUSPENDED.value:
        return True
    if value == Status.ACTIVE.value:
        return False
    raise InvalidRequest("status can only be set to active or suspended")


# PATCH field -> (Account attribute, checker)
UPDATABLE: dict[str, tuple[str, Callable[[object], Any]]] = {
    "last_name": ("last_name", lambda v: check_text("last_name", v)),
    "first_name": ("first_name", lambda v: check_text("first_name", v)),
    "email": ("email", check_email),
    "role": ("role", check_role),
    "services": ("services", check_services),
    "net_entreprises": ("net_entreprises", lambda v: check_bool("net_entreprises", v)),
    "expires_at": ("expires_at", check_expires_at),
    "status": ("suspended", check_status),
    "phone_extension": ("phone_extension", check_extension),
}


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """PATCH fields, checked: Account attribute -> new value (400 on any bad one)."""
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidRequest(f"{unknown[0]} cannot be changed here")
    attrs: dict[str, Any] = {}
    for name, value in changes.items():
        attr, check = UPDATABLE[name]
        attrs[attr] = check(value)
    return attrs


def check_page(page: int, per_page: int) -> None:
    if page < 1:
        raise InvalidRequest("page counts from 1")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequest(f"per_page must be between 1 and {MAX_PER_PAGE}")


def changed(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    names = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in names}, {k: after[k] for k in names}


def compact_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
