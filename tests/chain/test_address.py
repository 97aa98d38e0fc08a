"""Addresses: derivation from a public key, bech32 text, typo detection, error messages."""

import hashlib
from typing import Any

import pytest
from bech32 import CHARSET, bech32_encode, convertbits
from hypothesis import given
from hypothesis import strategies as st

from chain.address import (
    ADDRESS_LEN,
    HRP,
    AddressError,
    address_from_public_key,
    decode_address,
    encode_address,
    parse_address,
)
from chain.crypto import SigningKey

addresses = st.binary(min_size=ADDRESS_LEN, max_size=ADDRESS_LEN)

# The address of the RFC 8032 TEST 1 key, pinned so other implementations can check theirs.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def test_address_is_sha256_prefix_of_the_key() -> None:
    """address = SHA-256(public key)[:20]."""
    key = SigningKey.from_seed(RFC8032_SEED)
    address = address_from_public_key(key.public_key)
    assert address == hashlib.sha256(key.public_key).digest()[:20]
    assert len(address) == ADDRESS_LEN == 20 and HRP == "gnt"


def test_text_form_of_a_known_address() -> None:
    """Lower-case bech32, `gnt1` + 32 data characters + 6 checksum characters."""
    text = encode_address(bytes(range(20)))
    assert text == bech32_encode("gnt", convertbits(bytes(range(20)), 8, 5))
    assert text.startswith("gnt1") and len(text) == 42 and text == text.lower()


@given(addresses)
def test_round_trip(address: bytes) -> None:
    """Every 20-byte address survives bech32 and every accepted spelling parses back."""
    text = encode_address(address)
    assert decode_address(text) == address
    assert decode_address(text.upper()) == address
    assert parse_address(text) == address
    assert parse_address(address.hex()) == address
    assert parse_address("0x" + address.hex()) == address
    assert parse_address("0X" + address.hex().upper()) == address


@given(addresses, st.integers(min_value=0), st.sampled_from(CHARSET + "1bio"))
def test_single_character_typo_is_caught(address: bytes, position: int, char: str) -> None:
    """Replacing any one character with any other is refused, never read as another address."""
    text = encode_address(address)
    index = position % len(text)
    if text[index] == char:
        char = CHARSET[(CHARSET.index(char) + 1) % 32] if char in CHARSET else "q"
    typo = text[:index] + char + text[index + 1 :]
    with pytest.raises(AddressError):
        decode_address(typo)


@given(addresses, st.integers(min_value=0))
def test_swapped_neighbours_are_caught(address: bytes, position: int) -> None:
    """Transposing two different adjacent data characters is refused."""
    text = encode_address(address)
    index = len(HRP) + 1 + position % (len(text) - len(HRP) - 2)
    if text[index] != text[index + 1]:
        swapped = text[:index] + text[index + 1] + text[index] + text[index + 2 :]
        with pytest.raises(AddressError, match="bad checksum"):
            decode_address(swapped)


def _valid_text() -> str:
    """A well-formed address for the table below to break."""
    return encode_address(bytes(range(20)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_valid_text()[:-1] + ("q" if _valid_text()[-1] != "q" else "p"), "bad checksum"),
        ("cosmos1" + _valid_text()[4:], "wrong address prefix: expected gnt, got cosmos"),
        (bech32_encode("gnt", convertbits(bytes(32), 8, 5)), "wrong address length"),
        (bech32_encode("gnt", convertbits(bytes(19), 8, 5)), "wrong address length"),
        (_valid_text()[:10] + "b" + _valid_text()[11:], "invalid character 'b' at position 10"),
        ("Gnt1" + _valid_text()[4:], "mixes upper and lower case"),
        (_valid_text()[4:], "no '1' separator"),
        ("1" + _valid_text()[4:], "no '1' separator"),
        ("gnt1qqq", "shorter than a checksum"),
        ("gnt 1" + _valid_text()[4:], "space or non-ASCII"),
        ("gnt1" + "q" * 90, "bech32 allows 90"),
        ("", "empty"),
    ],
)
def test_decode_errors_say_what_is_wrong(text: str, message: str) -> None:
    """Each malformed address is refused with a message naming the fault."""
    with pytest.raises(AddressError, match=message):
        decode_address(text)


@pytest.mark.parametrize("value", [None, 5, b"gnt1"])
def test_decode_refuses_non_strings(value: Any) -> None:
    """Only text decodes."""
    with pytest.raises(AddressError, match="must be a string"):
        decode_address(value)
    with pytest.raises(AddressError, match="must be a string"):
        parse_address(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0x" + "ab" * 19, "40 hex digits"),
        ("0x" + "zz" * 20, "40 hex digits"),
        ("ab" * 21, "no '1' separator"),
        ("cosmos1" + _valid_text()[4:], "expected gnt, got cosmos"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    """parse_address refuses hex of the wrong size and falls back to bech32 errors."""
    with pytest.raises(AddressError, match=message):
        parse_address(text)


@pytest.mark.parametrize("value", [bytes(19), bytes(21), b"", "00" * 20, None])
def test_encode_refuses_wrong_sizes(value: Any) -> None:
    """Only 20-byte addresses are encoded."""
    with pytest.raises(AddressError, match="address must be 20 bytes"):
        encode_address(value)


@pytest.mark.parametrize("value", [bytes(31), bytes(33), "00" * 32, None])
def test_public_key_must_be_32_bytes(value: Any) -> None:
    """Only 32-byte Ed25519 public keys have addresses."""
    with pytest.raises(AddressError, match="public key must be 32 bytes"):
        address_from_public_key(value)
