"""SHA-256 and the binary Merkle root used for tx and receipt roots."""

import hashlib

from chain.types import ZERO_HASH, Hash32

_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256


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
    level = [_sha256(_LEAF + leaf).digest() for leaf in leaves]
    # Bottom-up, pairing neighbours and carrying an odd last node up unchanged. This
    # builds the same tree as splitting at the largest power of two: the left part of
    # each split is a perfect tree of even width, so no pair ever straddles a split.
    while len(level) > 1:
        nodes = iter(level)
        pairs = zip(nodes, nodes, strict=False)  # (0, 1), (2, 3), ...; an odd last is left
        upper = [_sha256(_NODE + left + right).digest() for left, right in pairs]
        if len(level) % 2:
            upper.append(level[-1])
        level = upper
    return Hash32(level[0])
