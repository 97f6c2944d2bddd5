"""An account record <-> its Redis hash.

The hash holds plain string fields. The phone number is kept only sealed
(AES-GCM under the phone key, bound to the account id); its region, line type,
keyed fingerprint (`number_tag`) and masked form (`masked`, what admins and
the /challenge answer show) are kept in clear, they are not the number. Times
are unix milliseconds. Some fields are not the record's own and survive every
rewrite: the version `v`, `last_login_at`, the sweep's `expiry_mark` (the
expiry it last recorded as passed), and the OTP scripts' runtime state,
kept here rather than in a key of its own per account (~140 bytes less per
live challenge): `c:<purpose>` (the live challenge), `s:<purpose>` (its last
send) and `g` (the account's send-rate state).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.accounts.records import Account, Role
from gateway.clock import from_ms, to_ms
from gateway.crypto import Keyring
from gateway.errors import GatewayError
from gateway.phones import LineType, Phone

UNMANAGED: Final = frozenset({b"v", b"last_login_at", b"expiry_mark", b"g"})


def unmanaged(name: bytes) -> bool:
    """A field the codec never writes nor removes (`c:<purpose>`, `s:<purpose>`...)."""
    return name in UNMANAGED or b":" in name


Record = dict[bytes, bytes]


def as_record(raw: Mapping[Any, Any]) -> Record:
    """HGETALL's answer as bytes, whatever the client's decode_responses."""

    def raw_bytes(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    return {raw_bytes(k): raw_bytes(v) for k, v in raw.items()}


class Codec:
    """Encodes and decodes account hashes with the deployment's keys."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def seal(self, account_id: str, phone: Phone) -> bytes:
        return self._keyring.phones.seal(phone.e164.encode(), aad=account_id.encode())

    def open(self, account_id: str, sealed: bytes) -> str:
        return self._keyring.phones.open(sealed, aad=account_id.encode()).decode()

    def encode(self, account: Account, *, sealed: bytes | None) -> dict[str, bytes]:
        """The hash fields of a record; `sealed` reuses the stored ciphertext."""
        record: dict[str, str | bytes] = {
            "establishment": account.establishment,
            "last_name": account.last_name,
            "first_name": account.first_name,
            "email": account.email,
            "role": account.role.value,
            "phone_hidden": "1" if account.phone_hidden else "0",
            "services": json.dumps(list(account.services)),
            "net_entreprises": "1" if account.net_entreprises else "0",
            "expires_at": str(to_ms(account.expires_at)),
            "suspended": "1" if account.suspended else "0",
            "created_at": str(to_ms(account.created_at)),
        }
        if account.phone is not None:
            record["phone"] = sealed or self.seal(account.account_id, account.phone)
            record["region"] = account.phone.region
            record["line_type"] = account.phone.line_type.value
            record["number_tag"] = self._keyring.tag("number", account.phone.e164)
            # What /challenge answers as `destination`, ready for create.lua.
            record["masked"] = account.phone.masked(hide_all=account.phone_hidden)
        if account.phone_extension is not None:
            record["phone_extension"] = account.phone_extension
        if account.last_login_at is not None:
            record["last_login_at"] = str(to_ms(account.last_login_at))
        return {k: v.encode() if isinstance(v, str) else v for k, v in record.items()}

    def diff(
        self, raw: Mapping[bytes, bytes], updated: Account
    ) -> tuple[dict[str, bytes], list[str]]:
        """Fields to write and fields to remove to turn `raw` into `updated`."""
        sealed = None
        if updated.phone is not None and b"phone" in raw:
            stored = self.open(updated.account_id, raw[b"phone"])
            if stored == updated.phone.e164:
                sealed = raw[b"phone"]
        record = self.encode(updated, sealed=sealed)
        to_set = {k: v for k, v in record.items() if raw.get(k.encode()) != v}
        to_delete = [
            name.decode() for name in raw if not unmanaged(name) and name.decode() not in record
        ]
        return to_set, to_delete

    def decode(self, account_id: str, raw: Mapping[bytes, bytes]) -> Account:
        try:
            return self._decode_fields(account_id, {k.decode(): v for k, v in raw.items()})
        except Exception as exc:
            # Never chained: the cause may quote record data.
            raise GatewayError(f"account record is unreadable ({type(exc).__name__})") from None

    def _decode_fields(self, account_id: str, f: Mapping[str, bytes]) -> Account:
        def text(name: str) -> str:
            return f[name].decode()

        phone = None
        if "phone" in f:
            phone = Phone(
                self.open(account_id, f["phone"]), text("region"), LineType(text("line_type"))
            )
        login = f.get("last_login_at")
        extension = f.get("phone_extension")
        return Account(
            account_id=account_id,
            establishment=text("establishment"),
            last_name=text("last_name"),
            first_name=text("first_name"),
            email=text("email"),
            role=Role(text("role")),
            phone=phone,
            phone_hidden=f["phone_hidden"] == b"1",
            phone_extension=None if extension is None else extension.decode(),
            services=tuple(json.loads(f["services"])),
            net_entreprises=f["net_entreprises"] == b"1",
            expires_at=from_ms(int(f["expires_at"])),
            suspended=f["suspended"] == b"1",
            created_at=from_ms(int(f["created_at"])),
            last_login_at=None if login is None else from_ms(int(login)),
        )


def names(values: Sequence[Any]) -> list[str]:
    """Set members or ids as str, whatever the client's decode_responses."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
