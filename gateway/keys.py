"""Every Redis key name the gateway uses, in one place.

The keys the OTP hot path touches (challenges, failures, trusted devices,
rate limits) carry a keyed fingerprint
(`Keyring.tag`) of the account or the number, never the number itself: no
phone number shows in `redis-cli --scan`, a slow log or a key-space
notification. The account record (which also holds the account's OTP
runtime state: see gateway/accounts/codec.py), its history and the indexes
are keyed by the account id, which is not a secret.
"""

from __future__ import annotations

PREFIX = "otp:"

STREAM = PREFIX + "sends"  # the send queue (a Redis Stream)
GROUP = "workers"  # its consumer group
DEAD_LETTERS = PREFIX + "dead"  # sends that every provider failed
GLOBAL_RATE = PREFIX + "rl:global"
ACCOUNT_INDEX = PREFIX + "accounts"  # set of all account ids
LOGINS = PREFIX + "logins"  # hash: account tag -> last login (ms)
RETRIES = PREFIX + "retries"  # sorted set: challenge id -> when to call again (unix ms)
SWEEP_LOCK = PREFIX + "sweep:lock"  # string: the token of the sweeper running now
SWEEP_LAST = PREFIX + "sweep:last"  # string: when the last sweep finished (ms)
MAIL_STREAM = PREFIX + "mail"  # stream: the e-mail outbox
MAIL_GROUP = "mailers"  # its consumer group
MAIL_DEAD = PREFIX + "mail:dead"  # mails that could not be delivered
# string: crypto.key_fingerprint of the secret the data is written with (gateway/keycheck.py)
KEY_FINGERPRINT = PREFIX + "key-fingerprint"
# SCAN patterns of the live state a secret rotation drops (`gateway.rotate`):
# challenges, rate limits, pending phone changes.
TRANSIENT_PATTERNS = (PREFIX + "c:*", PREFIX + "rl:*", PREFIX + "pc:*")


def challenge(challenge_id: str) -> str:
    """Hash: one challenge (sealed code, code digest, state), then its tombstone."""
    return f"{PREFIX}c:{challenge_id}"


def failures(account_tag: str) -> str:
    """String: the account's failed-verification rate state."""
    return f"{PREFIX}f:{account_tag}"


def trusted_devices(account_tag: str) -> str:
    """Hash: token digest -> trusted-device record."""
    return f"{PREFIX}td:{account_tag}"


def step_up(token_digest: str) -> str:
    """String: a single-use step-up grant."""
    return f"{PREFIX}su:{token_digest}"


NUMBER_BUCKET_CHARS = 2  # 4096 buckets: a few dozen numbers each at 100k live


def number_rate(number_tag: str) -> str:
    """Hash: the rate state of the numbers whose tag starts like this one's,
    field: the rest of the tag -> GCRA state (ms). One key per number cost
    more in Redis's key tables than the state itself; the scripts drop a
    bucket's stale fields whenever they write to it, and the bucket expires
    with its last live state."""
    return f"{PREFIX}rl:n:{number_tag[:NUMBER_BUCKET_CHARS]}"


def ip_rate(ip_tag: str) -> str:
    """String: the rate state of one client address."""
    return f"{PREFIX}rl:ip:{ip_tag}"


def establishment_rate(digest: str) -> str:
    """String: the rate state of one establishment; the scripts name it from the
    SHA-1 of the account record's `establishment` (bounded, any characters)."""
    return f"{PREFIX}rl:e:{digest}"


def country_rate(region: str) -> str:
    """String: the rate state of one country (region code)."""
    return f"{PREFIX}rl:cc:{region}"


def account(account_id: str) -> str:
    """Hash: the account record (phone sealed)."""
    return f"{PREFIX}a:{account_id}"


def establishment(name_tag: str) -> str:
    """Set: account ids of one establishment."""
    return f"{PREFIX}e:{name_tag}"


def history(account_id: str) -> str:
    """Stream: audit entries of one account."""
    return f"{PREFIX}h:{account_id}"


def establishment_history(establishment_tag: str) -> str:
    """Stream: audit entries of every account of one establishment."""
    return f"{PREFIX}eh:{establishment_tag}"


def totp(account_tag: str) -> str:
    """Hash: an account's authenticator app (sealed secrets, last used step)."""
    return f"{PREFIX}totp:{account_tag}"


def reminders(account_tag: str) -> str:
    """Hash: reminders already sent, one field per threshold and expiry."""
    return f"{PREFIX}rem:{account_tag}"


def phone_change(challenge_id: str) -> str:
    """String (JSON): a number change waiting for the code sent to the new number."""
    return f"{PREFIX}pc:{challenge_id}"
