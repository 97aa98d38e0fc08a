"""Account addresses: 20 bytes of SHA-256(public key), shown as bech32 with prefix `gnt`.

The text form is BIP-173 bech32 (the checksum Cosmos uses): `gnt1` followed by
32 data characters and a 6-character checksum, 42 characters in all. The
checksum catches any single-character typo, and the exact payload length
check catches bech32's one blind spot (inserting or dropping `q` before a
final `p`).
"""

import hashlib

from bech32 import CHARSET, bech32_encode, bech32_verify_checksum, convertbits

from chain.errors import ChainError
from chain.types import ADDRESS_LEN, PUBLIC_KEY_LEN, Address

__all__ = [
    "ADDRESS_LEN",
    "HRP",
    "AddressError",
    "address_from_public_key",
    "decode_address",
    "encode_address",
    "parse_address",
]

HRP = "gnt"
MAX_BECH32_LEN = 90
_CHECKSUM_LEN = 6
_HEX_LEN = 2 * ADDRESS_LEN
_DATA_CHARS = ADDRESS_LEN * 8 // 5


class AddressError(ChainError):
    """Text or bytes are not a valid Gannet address; the message says what is wrong."""


def address_from_public_key(public_key: bytes) -> Address:
    """The account address of an Ed25519 public key: the first 20 bytes of SHA-256(key)."""
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != PUBLIC_KEY_LEN:
        raise AddressError(
            f"public key must be {PUBLIC_KEY_LEN} bytes, got {_describe(public_key)}"
        )
    return Address(hashlib.sha256(public_key).digest()[:ADDRESS_LEN])


def encode_address(addr: bytes) -> str:
    """The bech32 text of a 20-byte address, always lower case (`gnt1...`)."""
    if not isinstance(addr, bytes | bytearray) or len(addr) != ADDRESS_LEN:
        raise AddressError(f"address must be {ADDRESS_LEN} bytes, got {_describe(addr)}")
    return bech32_encode(HRP, convertbits(addr, 8, 5))


def decode_address(text: str) -> Address:
    """The 20 bytes of a bech32 address; raises AddressError saying what is wrong.

    Checks in order: a string of printable ASCII in one case, the `1`
    separator, prefix `gnt`, the bech32 alphabet, the checksum, then a payload
    of exactly 32 characters (20 bytes; 160 bits need no padding).
    """
    lowered = _validated_text(text)
    hrp, _, data_part = lowered.rpartition("1")
    if not hrp:
        raise AddressError(f"address {text!r} has no '1' separator after the prefix")
    if hrp != HRP:
        raise AddressError(f"wrong address prefix: expected {HRP}, got {hrp}")
    data = _validated_data(data_part)
    if not bech32_verify_checksum(hrp, data):
        raise AddressError(f"bad checksum in address {text!r} (mistyped?)")
    return _payload(data[:-_CHECKSUM_LEN])


def parse_address(text: str) -> Address:
    """An address given as bech32 (`gnt1...`) or as 40 hex digits with optional `0x`."""
    if not isinstance(text, str):
        raise AddressError(f"address must be a string, got {type(text).__name__}")
    has_0x = text[:2] in ("0x", "0X")
    digits = text[2:] if has_0x else text
    if len(digits) == _HEX_LEN and _is_hex(digits):
        return Address(bytes.fromhex(digits))
    if has_0x:
        raise AddressError(f"hex address must be {_HEX_LEN} hex digits after 0x, got {text!r}")
    return decode_address(text)


def _validated_text(text: str) -> str:
    """The lower-cased text; it must be printable ASCII, one case, at most 90 characters."""
    if not isinstance(text, str):
        raise AddressError(f"address must be a string, got {type(text).__name__}")
    if not text:
        raise AddressError("address is empty")
    if len(text) > MAX_BECH32_LEN:
        raise AddressError(f"address is {len(text)} characters, bech32 allows {MAX_BECH32_LEN}")
    if any(not 33 <= ord(char) <= 126 for char in text):
        raise AddressError(f"address {text!r} contains a space or non-ASCII character")
    if text.lower() != text and text.upper() != text:
        raise AddressError(f"address {text!r} mixes upper and lower case")
    return text.lower()


def _validated_data(data_part: str) -> list[int]:
    """The 5-bit values of the data characters; each must be in the bech32 alphabet."""
    if len(data_part) < _CHECKSUM_LEN:
        raise AddressError(f"address data is {len(data_part)} characters, shorter than a checksum")
    for position, char in enumerate(data_part):
        if char not in CHARSET:
            raise AddressError(
                f"invalid character {char!r} at position {len(HRP) + 1 + position} "
                "(bech32 never uses 1, b, i or o)"
            )
    return [CHARSET.index(char) for char in data_part]


def _payload(values: list[int]) -> Address:
    """The bytes of the 5-bit payload: exactly 32 characters, 160 bits, 20 bytes, no padding."""
    if len(values) != _DATA_CHARS:
        raise AddressError(
            f"wrong address length: expected {_DATA_CHARS} data characters ({ADDRESS_LEN} bytes), "
            f"got {len(values)}"
        )
    return Address(bytes(convertbits(values, 5, 8, False)))


def _is_hex(text: str) -> bool:
    """True iff every character is a hex digit."""
    return all(char in "0123456789abcdefABCDEF" for char in text)


def _describe(value: object) -> str:
    """'N bytes' for bytes, else the type name (for error messages)."""
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__
