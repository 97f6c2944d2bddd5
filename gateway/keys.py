"""Every Redis key name the gateway uses, in one place.

The keys the OTP hot path touches (challenges, failures, trusted devices,
rate limits) carry a keyed fingerprint (`Keyring.tag`) of the account or the
number, never the number itself: no phone number shows in `redis-cli
--scan`, a slow log or a key-space notification.

**Hash slots.** Every key a script touches shares one Redis Cluster hash slot
(a hash tag `{...}`): the keys of one account, the queue of one group, every
rate limit. There are `GROUPS` (16) slot groups; group `i`'s tag is
`{LABELS[i]}`, whose slot lies in the i-th sixteenth of the slot space, so
an even split of slots over primaries spreads the groups evenly and a
reshard moves whole groups. An account's group is the first character of
its tag (`group_of_tag`); a challenge's is its account's (the id ends with
the tag); a step-up grant's is that of its token digest. The account record
and its history are keyed by the account *tag* (not the id): /verify and the
worker know only the challenge id, hence the tag, and must name the record
up front. docs/architecture.md ("Hash slots") has the whole table.
"""

from __future__ import annotations

from typing import Final

from gateway.crypto import B64_ALPHABET

PREFIX: Final = "otp:"
GROUPS: Final = 16

# One hash-tag label per group: the shortest [a-z0-9] strings (1 to 2
# characters, searched in that order) whose CRC16 slot (`redis.crc.key_slot`)
# falls in [i * 1024, (i + 1) * 1024) for group i. tests/test_keys.py
# recomputes them. Never change them: every key name depends on them
# (`otp-gateway migrate` would be needed again).
LABELS: Final = (
    "bd", "3", "b1", "b", "ba", "2", "b0", "c", "bb", "1", "b3", "d", "bc", "0", "b2", "a",
)  # fmt: skip
RATE_TAG: Final = "{rl}"  # every rate limit, one slot (create.lua and resend.lua spend them)

GROUP = "workers"  # the send streams' consumer group
LAYOUT = PREFIX + "layout"  # string: the key layout version ("2": hash-tagged)
LAYOUT_VERSION: Final = "2"
SWEEP_LOCK = PREFIX + "sweep:lock"  # string: the token of the sweeper running now
SWEEP_LAST = PREFIX + "sweep:last"  # string: when the last sweep finished (ms)
# The e-mail outbox and its dead letters share a hash tag: a dead letter moves
# from one to the other in one MULTI, which a cluster allows in one slot only.
MAIL_TAG: Final = "{mail}"
MAIL_STREAM = PREFIX + "mail:" + MAIL_TAG  # stream: the e-mail outbox
MAIL_GROUP = "mailers"  # its consumer group
MAIL_DEAD = PREFIX + "mail:" + MAIL_TAG + "dead"  # mails that could not be delivered
# The webhook outbox and its dead letters, likewise (gateway/otp/webhooks.py).
HOOK_TAG: Final = "{hooks}"
HOOK_STREAM = PREFIX + "hooks:" + HOOK_TAG  # stream: challenge events to post to webhooks
HOOK_GROUP = "webhooks"  # its consumer group
HOOK_DEAD = PREFIX + "hooks:" + HOOK_TAG + "dead"  # posts given up on
# string: crypto.key_fingerprint of the secret the data is written with (gateway/keycheck.py)
KEY_FINGERPRINT = PREFIX + "key-fingerprint"
GLOBAL_RATE = PREFIX + "rl:" + RATE_TAG + "global"
# SCAN patterns of the live state a secret rotation drops (`gateway.rotate`):
# challenges, rate limits, pending phone changes, the answers kept for Idempotency-Keys.
TRANSIENT_PATTERNS = (PREFIX + "c:*", PREFIX + "rl:*", PREFIX + "pc:*", PREFIX + "idem:*")


def group_of_char(char: str) -> int:
    """The group of a URL-safe base64 character; 0 for anything else."""
    index = B64_ALPHABET.find(char[:1]) if char else -1
    return max(index, 0) % GROUPS


def group_of_tag(tag: str) -> int:
    """The group of an account (or establishment) tag: its first character's."""
    return group_of_char(tag[:1])


def group_of_challenge(challenge_id: str) -> int:
    """The group of a challenge id: its account tag's (the characters after 16)."""
    return group_of_tag(challenge_id[16:])


def hashtag(group: int) -> str:
    """`{label}`: the hash tag of a group."""
    return "{" + LABELS[group % GROUPS] + "}"


def _of_tag(kind: str, tag: str) -> str:
    return f"{PREFIX}{kind}:{hashtag(group_of_tag(tag))}{tag}"


def _of_challenge(kind: str, challenge_id: str) -> str:
    return f"{PREFIX}{kind}:{hashtag(group_of_challenge(challenge_id))}{challenge_id}"


# --- per account (the account's group) -------------------------------------------


def account(account_tag: str) -> str:
    """Hash: the account record (phone sealed) and its OTP runtime state."""
    return _of_tag("a", account_tag)


def history(account_tag: str) -> str:
    """Stream: audit entries of one account."""
    return _of_tag("h", account_tag)


def challenge(challenge_id: str) -> str:
    """Hash: one challenge (sealed code, code digest, state), then its tombstone."""
    return _of_challenge("c", challenge_id)


def phone_change(challenge_id: str) -> str:
    """String (JSON): a number change waiting for the code sent to the new number."""
    return _of_challenge("pc", challenge_id)


def idempotency(account_tag: str, key_digest: str) -> str:
    """Hash: the first answer to a `POST /challenge` that carried an
    Idempotency-Key, by the digest of the API key's name and that key
    (create.lua writes it with the challenge; it lives as long as a code)."""
    return f"{_of_tag('idem', account_tag)}:{key_digest}"


def failures(account_tag: str) -> str:
    """String: the account's failed-verification rate state."""
    return _of_tag("f", account_tag)


def trusted_devices(account_tag: str) -> str:
    """Hash: token digest -> trusted-device record."""
    return _of_tag("td", account_tag)


def totp(account_tag: str) -> str:
    """Hash: an account's authenticator app (sealed secrets, last used step)."""
    return _of_tag("totp", account_tag)


def reminders(account_tag: str) -> str:
    """Hash: reminders already sent, one field per threshold and expiry."""
    return _of_tag("rem", account_tag)


def step_up(token_digest: str) -> str:
    """String: a single-use step-up grant; its group is its digest's first
    character's, which the token is drawn again for until it matches the
    account's group (gateway/otp/tokens.py `new_step_up`)."""
    return _of_tag("su", token_digest)


# --- per group ---------------------------------------------------------------------


def logins(group: int) -> str:
    """Hash: account tag -> last login (ms), for the accounts of one group."""
    return f"{PREFIX}logins:{hashtag(group)}"


def logins_of(account_tag: str) -> str:
    """The last-logins hash that holds this account's."""
    return logins(group_of_tag(account_tag))


def account_index(group: int) -> str:
    """Set: the ids of one group's accounts."""
    return f"{PREFIX}accounts:{hashtag(group)}"


def stream(group: int) -> str:
    """Stream: one group's send queue (consumer group `GROUP`)."""
    return f"{PREFIX}sends:{hashtag(group)}"


def retries(group: int) -> str:
    """Sorted set: one group's call-again schedule, challenge id -> due (unix ms)."""
    return f"{PREFIX}retries:{hashtag(group)}"


def dead_letters(group: int) -> str:
    """Stream: one group's sends that every provider failed."""
    return f"{PREFIX}dead:{hashtag(group)}"


def expiring(group: int) -> str:
    """Sorted set: one group's challenges whose `expired` event a webhook wants,
    challenge id -> expiry (unix ms); written only when a webhook wants it."""
    return f"{PREFIX}expiring:{hashtag(group)}"


def expiring_of(challenge_id: str) -> str:
    return expiring(group_of_challenge(challenge_id))


def stream_of(challenge_id: str) -> str:
    return stream(group_of_challenge(challenge_id))


def retries_of(challenge_id: str) -> str:
    return retries(group_of_challenge(challenge_id))


def group_of_stream(stream_key: str) -> int:
    """The group of one of `STREAMS` (0 for any other name)."""
    return STREAMS.index(stream_key) if stream_key in STREAMS else 0


def dead_letters_of(stream_key: str) -> str:
    """The dead-letter stream beside a send stream (same hash tag)."""
    return dead_letters(group_of_stream(stream_key))


STREAMS: Final = tuple(stream(g) for g in range(GROUPS))
RETRIES: Final = tuple(retries(g) for g in range(GROUPS))
DEAD_LETTERS: Final = tuple(dead_letters(g) for g in range(GROUPS))
EXPIRING: Final = tuple(expiring(g) for g in range(GROUPS))
ACCOUNT_INDEXES: Final = tuple(account_index(g) for g in range(GROUPS))
LOGINS: Final = tuple(logins(g) for g in range(GROUPS))


# --- per establishment (the establishment tag's group) ------------------------------


def establishment(name_tag: str) -> str:
    """Set: account ids of one establishment."""
    return _of_tag("e", name_tag)


def establishment_history(establishment_tag: str) -> str:
    """Stream: audit entries of every account of one establishment."""
    return _of_tag("eh", establishment_tag)


def establishment_pending(establishment_tag: str) -> str:
    """Hash: account id -> when (ms) a Redis Cluster's creation added it to the
    establishment's set, until the account is written (establishment.lua)."""
    return _of_tag("ep", establishment_tag)


def establishment_lease(establishment_tag: str) -> str:
    """String: the token of the change that may remove an active admin of the
    establishment now, on a Redis Cluster (`SET NX PX`: the last-admin guard)."""
    return _of_tag("el", establishment_tag)


PENDING_PATTERN: Final = PREFIX + "ep:*"  # SCAN: every establishment's pending creations


# --- the console (single-key commands only: no hash tag) ----------------------------


def console_session(digest: str) -> str:
    """String (JSON): a console session, by the SHA-256 of its id (the id itself
    is never stored)."""
    return f"{PREFIX}console:session:{digest}"


# --- rate limits (one slot: `{rl}`) ---------------------------------------------------

NUMBER_BUCKET_CHARS = 2  # 4096 buckets: a few dozen numbers each at 100k live


def number_rate(number_tag: str) -> str:
    """Hash: the rate state of the numbers whose tag starts like this one's,
    field: the rest of the tag -> GCRA state (ms). One key per number cost
    more in Redis's key tables than the state itself; the scripts drop a
    bucket's stale fields whenever they write to it, and the bucket expires
    with its last live state."""
    return f"{PREFIX}rl:{RATE_TAG}n:{number_tag[:NUMBER_BUCKET_CHARS]}"


def ip_rate(ip_tag: str) -> str:
    """String: the rate state of one client address."""
    return f"{PREFIX}rl:{RATE_TAG}ip:{ip_tag}"


def establishment_rate(digest: str) -> str:
    """String: the rate state of one establishment; the scripts name it from the
    SHA-1 of the account record's `establishment` (bounded, any characters)."""
    return f"{PREFIX}rl:{RATE_TAG}e:{digest}"


def country_rate(region: str) -> str:
    """String: the rate state of one country (region code)."""
    return f"{PREFIX}rl:{RATE_TAG}cc:{region}"
