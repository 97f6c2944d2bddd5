"""The account list an admin works from: filter, flag, sort, group, paginate.

Pure functions over an establishment's accounts (loaded whole: an
establishment has tens to a few thousand accounts).

Flags, for the admin's periodic review (the circular asks admins to delete
inactive and shared accounts):

- `inactive`: no login for `inactive_days` (default `[accounts] inactive_days`,
  90); an account never used counts from its creation.
- `generic`: looks shared rather than personal: its e-mail address is also
  another account's of the establishment, its first and last names are the
  same, or its names or the local part of its address hold a word such as
  "accueil", "secretariat", "mairie", "rh", "contact", "service", "test".
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from gateway.accounts.records import Account, Role, Status
from gateway.errors import InvalidRequest

SORTS: Final = (
    "account_id", "last_name", "first_name", "email", "role", "status", "service",
    "expires_at", "last_login_at", "created_at",
)  # fmt: skip
GROUPS: Final = ("service", "role", "status")
FLAGS: Final = ("inactive", "generic")
MAX_PER_PAGE: Final = 200

_GENERIC_TEXT: Final = (
    "accueil admin administratif agence agent bureau commun commune compta comptabilite "
    "contact direction drh equipe etablissement generique gestion guichet info mairie "
    "office paie personnel rh secretariat service services shared standard support team "
    "test tests user utilisateur"
)
_GENERIC_WORDS: Final = frozenset(_GENERIC_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+")
_TRUE_FALSE: Final = {"true": True, "false": False}


def fold(text: str) -> str:
    """Lowercase without accents, for matching: "Secrétariat" -> "secretariat"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@dataclass(frozen=True, slots=True)
class Query:
    """What the list asks for; `parse` builds it from query parameters."""

    status: Status | None = None
    role: Role | None = None
    service: str | None = None
    net_entreprises: bool | None = None
    text: str | None = None
    flag: str | None = None
    sort: str = "account_id"
    descending: bool = False
    group_by: str | None = None
    inactive_days: int = 90
    page: int = 1
    per_page: int = 50


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rows, the total after filtering, and the groups."""

    rows: list[dict[str, Any]]
    total: int
    groups: list[dict[str, Any]] | None


def _choice(params: Mapping[str, str], name: str, allowed: Sequence[str]) -> str | None:
    value = params.get(name)
    if value is not None and value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}")
    return value


def _int(params: Mapping[str, str], name: str, default: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= high:
        raise InvalidRequest(f"{name} must be an integer from 1 to {high}")
    return int(value)


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not 1 <= len(value) <= 100:
        raise InvalidRequest(f"{name} must be 1-100 characters")
    return value


def parse(params: Mapping[str, str], inactive_days: int) -> Query:
    """A Query from GET /accounts parameters (400 on any bad one)."""
    status = _choice(params, "status", [s.value for s in Status])
    role = _choice(params, "role", [r.value for r in Role])
    net = _choice(params, "net_entreprises", list(_TRUE_FALSE))
    sort = params.get("sort", "account_id")
    if sort.removeprefix("-") not in SORTS:
        raise InvalidRequest(f"sort must be one of {', '.join(SORTS)}, '-' for descending")
    return Query(
        status=None if status is None else Status(status),
        role=None if role is None else Role(role),
        service=_text(params, "service"),
        net_entreprises=None if net is None else _TRUE_FALSE[net],
        text=_text(params, "q"),
        flag=_choice(params, "flag", FLAGS),
        sort=sort.removeprefix("-"),
        descending=sort.startswith("-"),
        group_by=_choice(params, "group_by", GROUPS),
        inactive_days=_int(params, "inactive_days", inactive_days, 3650),
        page=_int(params, "page", 1, 999_999),
        per_page=_int(params, "per_page", 50, MAX_PER_PAGE),
    )


def flags(account: Account, now: datetime, inactive_days: int, shared: Counter[str]) -> list[str]:
    """The review flags of one account (`shared` counts e-mails in the establishment)."""
    found = []
    if (account.last_login_at or account.created_at) <= now - timedelta(days=inactive_days):
        found.append("inactive")
    if _looks_generic(account, shared):
        found.append("generic")
    return found


def _looks_generic(account: Account, shared: Counter[str]) -> bool:
    first, last = fold(account.first_name).strip(), fold(account.last_name).strip()
    if shared[fold(account.email)] > 1 or first == last:
        return True
    local = fold(account.email).partition("@")[0]
    words = set(_WORD.findall(f"{first} {last} {local}"))
    return bool(words & _GENERIC_WORDS)


def _matches(account: Account, q: Query, now: datetime, found: list[str]) -> bool:
    checks = (
        q.status is None or account.status(now) is q.status,
        q.role is None or account.role is q.role,
        q.service is None or fold(q.service) in {fold(s) for s in account.services},
        q.net_entreprises is None or account.net_entreprises is q.net_entreprises,
        q.flag is None or q.flag in found,
        q.text is None or _has_text(account, q.text),
    )
    return all(checks)


def _has_text(account: Account, text: str) -> bool:
    fields = [account.account_id, account.last_name, account.first_name, account.email]
    haystack = fold(" ".join([*fields, *account.services]))
    return all(word in haystack for word in fold(text).split())


def _group_key(account: Account, group_by: str, now: datetime) -> str:
    if group_by == "service":
        return account.services[0] if account.services else ""
    if group_by == "role":
        return account.role.value
    return account.status(now).value


def _sort_value(account: Account, sort: str, now: datetime) -> Any:
    getters: dict[str, Callable[[Account], Any]] = {
        "role": lambda a: a.role.value,
        "status": lambda a: a.status(now).value,
        "service": lambda a: fold(a.services[0]) if a.services else None,
        "last_login_at": lambda a: a.last_login_at,
        "expires_at": lambda a: a.expires_at,
        "created_at": lambda a: a.created_at,
    }
    getter = getters.get(sort)
    return getter(account) if getter else fold(str(getattr(account, sort)))


def _ordered(accounts: list[Account], q: Query, now: datetime) -> list[Account]:
    """Sorted by q.sort (ties by id; missing values last), then by group if any."""
    by_id = sorted(accounts, key=lambda a: a.account_id)
    present = [a for a in by_id if _sort_value(a, q.sort, now) is not None]
    missing = [a for a in by_id if _sort_value(a, q.sort, now) is None]
    present.sort(key=lambda a: _sort_value(a, q.sort, now), reverse=q.descending)
    ordered = present + missing
    if q.group_by is not None:
        group_by = q.group_by
        ordered.sort(key=lambda a: _group_key(a, group_by, now))
    return ordered


def run(accounts: Sequence[Account], q: Query, now: datetime) -> Page:
    """Filter, flag, sort, group and cut one page."""
    shared = Counter(fold(a.email) for a in accounts)
    flagged = {a.account_id: flags(a, now, q.inactive_days, shared) for a in accounts}
    kept = [a for a in accounts if _matches(a, q, now, flagged[a.account_id])]
    ordered = _ordered(kept, q, now)
    chosen = ordered[(q.page - 1) * q.per_page : q.page * q.per_page]
    rows = [_row(a, q, now, flagged[a.account_id]) for a in chosen]
    groups = None
    if q.group_by is not None:
        group_by = q.group_by
        counts = Counter(_group_key(a, group_by, now) for a in ordered)
        groups = [{"key": k, "total": n} for k, n in sorted(counts.items())]
    return Page(rows, len(ordered), groups)


def _row(account: Account, q: Query, now: datetime, found: list[str]) -> dict[str, Any]:
    row = account.to_json(now)
    row["flags"] = found
    row["expires_in_days"] = (account.expires_at - now).days
    if q.group_by is not None:
        row["group"] = _group_key(account, q.group_by, now)
    return row
