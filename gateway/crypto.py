"""Keys derived from the one server secret, and the few primitives built on them.

Redis never holds a code, a token or a phone number in clear:

- a code is kept as HMAC-SHA256(code key, challenge id || code), so even a full
  dump of Redis cannot be brute-forced offline without the secret;
- the copy of the code that delivery and resends need is sealed with AES-GCM,
  bound to its challenge id (associated data), so it cannot be moved to
  another challenge;
- phone numbers are sealed the same way, and Redis keys that concern a number
  or an account use a keyed fingerprint, never the number or the id itself;
- tokens are random and stored as SHA-256 digests (they have 256 bits of
  entropy: a fast hash is enough).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12
TAG_BYTES = 9  # 72 bits: 12 URL-safe characters
CHALLENGE_ID_LENGTH = 28
# The URL-safe base64 alphabet, in value order: a tag's first character picks
# its hash-slot group (gateway/keys.py).
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _derive(secret: bytes, label: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def constant_time_equal(a: bytes | str, b: bytes | str) -> bool:
    """The one place secrets are compared."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)


class Sealer:
    """AES-GCM with a random nonce; `aad` binds a ciphertext to its owner."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Raises cryptography's InvalidTag when the data or its owner do not match."""
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)

    def seal_with(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Sealed under a nonce the caller owns and never reuses with this key
        (not stored: 12 bytes less per ciphertext)."""
        return self._aead.encrypt(nonce, plaintext, aad)

    def open_with(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, sealed, aad)


@dataclass(frozen=True, slots=True)
class Keyring:
    """Every key the gateway uses, derived once from `[security] secret`."""

    code_key: bytes
    tag_key: bytes
    codes: Sealer
    phones: Sealer

    @classmethod
    def from_secret(cls, secret: str) -> Keyring:
        raw = secret.encode()
        return cls(
            code_key=_derive(raw, "otp-gateway/code-hmac/v1"),
            tag_key=_derive(raw, "otp-gateway/key-tag/v1"),
            codes=Sealer(_derive(raw, "otp-gateway/code-seal/v1")),
            phones=Sealer(_derive(raw, "otp-gateway/phone-seal/v1")),
        )

    def code_digest(self, challenge_id: str, code: str) -> bytes:
        """What Redis keeps of a code: 16 bytes of HMAC over id and code."""
        msg = challenge_id.encode() + b"\x00" + code.encode()
        return hmac.new(self.code_key, msg, hashlib.sha256).digest()[:16]

    def tag(self, kind: str, value: str) -> str:
        """A short keyed fingerprint for Redis key names (account ids, numbers)."""
        msg = kind.encode() + b"\x00" + value.encode()
        return b64(hmac.new(self.tag_key, msg, hashlib.sha256).digest()[:TAG_BYTES])


def key_fingerprint(secret: str) -> str:
    """Which secret wrote a Redis's data (`gateway/keycheck.py`): a keyed hash
    under its own HKDF label, so it shows neither the secret nor a plain hash of
    it, and tells nothing about the other keys."""
    key = _derive(secret.encode(), "otp-gateway/key-fingerprint/v1")
    return b64(hmac.new(key, b"otp-gateway key fingerprint", hashlib.sha256).digest()[:16])


def new_token(prefix: str) -> tuple[str, str]:
    """A bearer token of 256 random bits and the digest Redis stores of it."""
    token = f"{prefix}_{b64(secrets.token_bytes(32))}"
    return token, token_digest(token)


def is_device_token(token: str) -> bool:
    """Shaped like a trusted-device token (`td_...`): anything else matches no device."""
    return token.startswith("td_") and len(token) <= 100


def token_digest(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest()[:24])


def new_challenge_id(account_tag: str) -> str:
    """96 random bits, then the account's tag.

    Carrying the (keyed, opaque) account tag lets `/verify` name every Redis
    key it touches up front, so verification is a single script call.
    """
    return b64(secrets.token_bytes(12)) + account_tag


def challenge_nonce(challenge_id: str) -> bytes:
    """The 96 random bits that open a challenge id: its code's AES-GCM nonce.

    Each id is drawn at random once and its code sealed once, under the codes
    key only, so the nonce is never reused with that key."""
    return base64.urlsafe_b64decode(challenge_id[:16])


def seal_code(keyring: Keyring, challenge_id: str, code: str) -> bytes:
    nonce = challenge_nonce(challenge_id)
    return keyring.codes.seal_with(nonce, code.encode(), challenge_id.encode())


def open_code(keyring: Keyring, challenge_id: str, sealed: bytes) -> str:
    """Raises InvalidTag when the sealed code is not this challenge's."""
    aad = challenge_id.encode()
    try:
        return keyring.codes.open_with(challenge_nonce(challenge_id), sealed, aad).decode()
    except InvalidTag:
        if len(sealed) <= _NONCE + 16:
            raise
        # Sealed before nonces came from the id: the nonce leads the ciphertext.
        return keyring.codes.open(sealed, aad).decode()


def destination_aad(challenge_id: str) -> bytes:
    """Binds a challenge's own destination number (a number being proven) to it."""
    return f"{challenge_id}:to".encode()


def points_to(pointer: bytes | None, challenge_id: str) -> bool:
    """True when an account record's `c:<purpose>` pointer names this challenge:
    it holds the id's 16 random characters (the tag is the account's own), or
    the whole id when written before that."""
    return pointer is not None and pointer in (
        challenge_id[:16].encode(),
        challenge_id.encode(),
    )


def account_tag_of(challenge_id: str) -> str:
    return challenge_id[16:]
