"""Codes and the primitives around them."""

from __future__ import annotations

from collections import Counter

import pytest
from cryptography.exceptions import InvalidTag

from gateway.crypto import (
    CHALLENGE_ID_LENGTH,
    Keyring,
    constant_time_equal,
    new_challenge_id,
    new_token,
    token_digest,
)
from gateway.otp import codes

KEYRING = Keyring.from_secret("s" * 40)


@pytest.mark.parametrize("length", [6, 8, 10])
def test_codes_are_ascii_digit_strings_of_the_length(length: int) -> None:
    for _ in range(200):
        code = codes.generate(length)
        assert len(code) == length and codes.is_well_formed(code, length)


def test_codes_are_uniform_and_keep_leading_zeros() -> None:
    # 2-digit codes, 100k draws: every value incl. "00".."09" appears, and a
    # chi-square far below the 1e-8 tail (about 200 for 99 degrees of freedom).
    draws = 100_000
    counts = Counter(codes.generate(2) for _ in range(draws))
    assert set(counts) == {f"{i:02d}" for i in range(100)}
    expected = draws / 100
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    assert chi2 < 200


@pytest.mark.parametrize(
    "code",
    ["12345", "1234567", "", "１２３４５６", "١٢٣٤٥٦", "123456\n", " 123456", "12345a", "+12345"],
)
def test_malformed_codes(code: str) -> None:
    assert not codes.is_well_formed(code, 6)


def test_code_digest_is_keyed_and_bound_to_the_challenge() -> None:
    other = Keyring.from_secret("t" * 40)
    d = KEYRING.code_digest("challenge-a", "123456")
    assert d == KEYRING.code_digest("challenge-a", "123456")
    assert d != KEYRING.code_digest("challenge-b", "123456")
    assert d != other.code_digest("challenge-a", "123456")
    assert len(d) == 16


def test_sealed_code_opens_only_for_its_challenge() -> None:
    sealed = KEYRING.codes.seal(b"123456", b"challenge-a")
    assert b"123456" not in sealed
    assert KEYRING.codes.open(sealed, b"challenge-a") == b"123456"
    with pytest.raises(InvalidTag):
        KEYRING.codes.open(sealed, b"challenge-b")
    with pytest.raises(InvalidTag):
        KEYRING.phones.open(sealed, b"challenge-a")  # another key


def test_challenge_ids_carry_the_account_tag() -> None:
    tag = KEYRING.tag("account", "alice")
    challenge_id = new_challenge_id(tag)
    assert len(challenge_id) == CHALLENGE_ID_LENGTH
    assert challenge_id.endswith(tag)
    assert new_challenge_id(tag) != challenge_id
    assert "alice" not in challenge_id


def test_tokens_have_256_random_bits_and_are_stored_as_digests() -> None:
    token, digest = new_token("td")
    assert token.startswith("td_") and len(token) == 3 + 43
    assert digest == token_digest(token) and token not in digest
    assert new_token("td")[0] != token


def test_constant_time_equal() -> None:
    assert constant_time_equal("abc", "abc")
    assert not constant_time_equal("abc", "abd")
    assert not constant_time_equal(b"abc", b"abcd")


# --- the settings baked into the Lua scripts -------------------------------------


def test_settings_chunk_renders_the_config_as_one_lua_table() -> None:
    from gateway.config import config_from_dict
    from gateway.luascripts import settings_chunk

    config = config_from_dict({
        "otp": {"ttl_seconds": 120, "max_attempts": 3},
        "rate_limits": {"number": "7/1m"},
    })  # fmt: skip
    chunk = settings_chunk(config, {"voice"})
    assert chunk.startswith("local CFG = {")
    assert '["ttl_ms"] = 120000' in chunk
    assert '["max_attempts"] = 3' in chunk
    assert '["number_limit"] = {7, 60000}' in chunk
    assert '["channels"] = {["voice"] = true}' in chunk
    assert '["fixed"] = {"voice"}' in chunk
    assert '["mobile"] = {"sms", "voice"}' in chunk


def test_lua_literals_escape_strings() -> None:
    from gateway.luascripts import lua_literal

    assert lua_literal('a"b\\c') == '"a\\"b\\\\c"'
    assert lua_literal({"k": [1, True]}) == '{["k"] = {1, true}}'
    with pytest.raises(TypeError):
        lua_literal(1.5)
