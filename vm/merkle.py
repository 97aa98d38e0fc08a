"""The Merkle commitment over a job's output tiles, and its inclusion proofs.

A provider commits to the root of its tiles before the chain picks which tiles it
must reveal; each revealed tile comes with a proof against that root.

The tree (our choice, stated so another implementation can match it):
- leaf  = SHA-256(0x00 || tile bytes)    (the raw tile, not a pre-hashed digest)
- node  = SHA-256(0x01 || left || right)
- Levels pair neighbours left to right; an odd last node is promoted to the next
  level unchanged, never duplicated, so the CVE-2012-2459 ambiguity cannot arise.
  This is the RFC 6962 shape, the same as `chain.hashing.merkle_root`.
- root  = SHA-256(0x02 || count as 8 bytes big-endian || top node)
  Binding the count matters: with promotion, a proof for leaf 0 of a 5-tile tree
  is also a valid path in a 6-tile tree, so without the count in the root a
  verifier could be told the wrong count and still accept.
The three tag bytes keep leaves, inner nodes and roots apart, so none of them can
pass for another. A tree holds 1 to MAX_TILES tiles, and a proof is the list of
sibling hashes from the leaf upwards, at most MAX_PROOF_LENGTH of them.
"""

import hashlib
from collections.abc import Sequence

from chain.types import Hash32

MAX_PROOF_LENGTH = 20
MAX_TILES = 1 << MAX_PROOF_LENGTH  # the proof of any leaf has at most 20 siblings
HASH_SIZE = 32

_LEAF = b"\x00"
_NODE = b"\x01"
_ROOT = b"\x02"
_sha256 = hashlib.sha256


class MerkleError(ValueError):
    """A tree cannot be built or a proof cannot be made: no tiles, too many, bad index."""


def leaf_hash(tile: bytes) -> bytes:
    """The leaf of a tile: SHA-256(0x00 || tile)."""
    return _sha256(_LEAF + tile).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner node: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


def bind_count(count: int, top: bytes) -> Hash32:
    """The root: SHA-256(0x02 || count as u64 big-endian || top node)."""
    return Hash32(_sha256(_ROOT + count.to_bytes(8, "big") + top).digest())


def root(tiles: Sequence[bytes]) -> Hash32:
    """The count-bound Merkle root of `tiles` (1 to MAX_TILES of them)."""
    _validate_count(len(tiles))
    level = [leaf_hash(tile) for tile in tiles]
    while len(level) > 1:
        level = _next_level(level)
    return bind_count(len(tiles), level[0])


def proof(tiles: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """The sibling hashes of tile `index`, bottom-up; a promoted level adds none."""
    _validate_count(len(tiles))
    if not 0 <= index < len(tiles):
        raise MerkleError(f"tile index must be in [0, {len(tiles)}), got {index}")
    level = [leaf_hash(tile) for tile in tiles]
    siblings = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):  # otherwise index is the odd last node: promoted
            siblings.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return tuple(siblings)


def verify(
    root_hash: bytes, index: int, count: int, tile: bytes, siblings: Sequence[bytes]
) -> bool:
    """Whether `tile` is tile `index` of a `count`-tile tree with root `root_hash`.

    The count fixes the path, so the proof must have exactly the siblings that path
    needs, each 32 bytes; anything malformed is simply not a proof (False).
    """
    if not (1 <= count <= MAX_TILES and 0 <= index < count):
        return False
    if len(siblings) > MAX_PROOF_LENGTH or len(siblings) != proof_length(index, count):
        return False
    if any(len(sibling) != HASH_SIZE for sibling in siblings):
        return False
    return bind_count(count, _climb(leaf_hash(tile), index, count, siblings)) == root_hash


def proof_length(index: int, count: int) -> int:
    """How many siblings the path of leaf `index` in a `count`-leaf tree has."""
    length = 0
    while count > 1:
        if index ^ 1 < count:
            length += 1
        index, count = index // 2, (count + 1) // 2
    return length


def _climb(node: bytes, index: int, count: int, siblings: Sequence[bytes]) -> bytes:
    """Hash from a leaf up to the top node along the path that (index, count) fixes."""
    remaining = iter(siblings)
    while count > 1:
        if index ^ 1 < count:
            sibling = next(remaining)
            node = node_hash(sibling, node) if index % 2 else node_hash(node, sibling)
        index, count = index // 2, (count + 1) // 2
    return node


def _next_level(level: list[bytes]) -> list[bytes]:
    """Pair neighbours into parents; an odd last node goes up unchanged."""
    upper = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        upper.append(level[-1])
    return upper


def _validate_count(count: int) -> None:
    """A tree holds 1 to MAX_TILES tiles."""
    if not 1 <= count <= MAX_TILES:
        raise MerkleError(f"a tile tree holds 1 to {MAX_TILES} tiles, got {count}")
