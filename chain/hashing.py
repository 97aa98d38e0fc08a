"""SHA-256 and the binary Merkle root used for tx and receipt roots."""

import hashlib

from chain.types import ZERO_HASH, Hash32

_LEAF = b"\x00"
_NODE = b"\x01"


def sha256(data: bytes) -> Hash32:
    """SHA-256 of `data`."""
    return Hash32(hashlib.sha256(data).digest())


def merkle_root(leaves: list[bytes]) -> Hash32:
    """RFC 6962 Merkle root: leaves hashed as H(0x00||leaf), nodes as H(0x01||l||r).

    The split point is the largest power of two below the count, so no leaf is
    ever duplicated (the CVE-2012-2459 ambiguity cannot arise). Empty → zero hash.
    """
    if not leaves:
        return ZERO_HASH
    level = [sha256(_LEAF + leaf) for leaf in leaves]
    return _root_of_hashes(level)


def _root_of_hashes(hashes: list[Hash32]) -> Hash32:
    if len(hashes) == 1:
        return hashes[0]
    split = 1 << ((len(hashes) - 1).bit_length() - 1)
    left = _root_of_hashes(hashes[:split])
    right = _root_of_hashes(hashes[split:])
    return sha256(_NODE + left + right)
