"""Key names and their hash-slot groups (gateway/keys.py)."""

from __future__ import annotations

import itertools
import string

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway import keys
from gateway.crypto import B64_ALPHABET, Keyring, new_challenge_id, token_digest
from gateway.otp.tokens import new_step_up

SLOTS_PER_GROUP = 16384 // keys.GROUPS


def test_each_label_hashes_into_its_own_sixteenth_of_the_slots() -> None:
    for group, label in enumerate(keys.LABELS):
        assert key_slot(label.encode()) // SLOTS_PER_GROUP == group, label


def test_the_labels_are_the_shortest_found_in_search_order() -> None:
    """1-character strings first, then 2 (over [a-z0-9]): the first of each group."""
    alphabet = string.ascii_lowercase + string.digits
    first: dict[int, str] = {}
    for size in (1, 2):
        for chars in itertools.product(alphabet, repeat=size):
            label = "".join(chars)
            first.setdefault(key_slot(label.encode()) // SLOTS_PER_GROUP, label)
    assert tuple(first[g] for g in range(keys.GROUPS)) == keys.LABELS


def test_every_key_of_an_account_hashes_to_one_slot() -> None:
    tag = Keyring.from_secret("k" * 40).tag("account", "alice")
    cid = new_challenge_id(tag)
    names = [
        keys.account(tag), keys.history(tag), keys.challenge(cid), keys.phone_change(cid),
        keys.failures(tag), keys.trusted_devices(tag), keys.totp(tag), keys.reminders(tag),
        keys.logins_of(tag), keys.stream_of(cid), keys.retries_of(cid),
        keys.dead_letters_of(keys.stream_of(cid)),
        keys.account_index(keys.group_of_tag(tag)),
    ]  # fmt: skip
    assert len({key_slot(n.encode()) for n in names}) == 1, names


def test_a_step_up_token_is_drawn_in_its_accounts_group() -> None:
    for first in B64_ALPHABET[:20]:
        tag = first + "x" * 11
        token, digest = new_step_up(tag)
        assert digest == token_digest(token)
        assert key_slot(keys.step_up(digest).encode()) == key_slot(keys.account(tag).encode())


def test_rate_limits_share_one_slot() -> None:
    names = [
        keys.GLOBAL_RATE, keys.number_rate("abcdef"), keys.country_rate("FR"),
        keys.ip_rate("xyz"), keys.establishment_rate("0" * 40),
    ]  # fmt: skip
    assert len({key_slot(n.encode()) for n in names}) == 1


@given(st.text(max_size=40))
def test_groups_are_total_over_any_input(text: str) -> None:
    """Ids come from clients: any string has a group, and a challenge's keys
    (all named from it) still share one slot."""
    assert 0 <= keys.group_of_tag(text) < keys.GROUPS
    assert 0 <= keys.group_of_challenge(text) < keys.GROUPS
    slots = {key_slot(k.encode()) for k in (keys.challenge(text), keys.account(text[16:]))}
    assert len(slots) == 1
