"""The tile Merkle tree: roots, proofs, and every way a proof must fail."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.hashing import merkle_root
from vm.merkle import (
    MAX_PROOF_LENGTH,
    MAX_TILES,
    MerkleError,
    leaf_hash,
    node_hash,
    proof,
    proof_length,
    root,
    verify,
)

CHECKS = settings(max_examples=60, deadline=None)
tile_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=40, unique=True)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _tiles(count: int, tag: bytes = b"t") -> list[bytes]:
    return [tag + i.to_bytes(4, "big") for i in range(count)]


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length()


def test_root_of_three_tiles_written_out() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = _sha(b"\x00a"), _sha(b"\x00b"), _sha(b"\x00c")
    top = _sha(b"\x01" + _sha(b"\x01" + la + lb) + lc)  # c is promoted, not duplicated
    assert root([a, b, c]) == _sha(b"\x02" + (3).to_bytes(8, "big") + top)
    assert root([a]) == _sha(b"\x02" + (1).to_bytes(8, "big") + la)


@CHECKS
@given(tile_lists)
def test_top_node_is_the_chain_merkle_shape(tiles: list[bytes]) -> None:
    # chain.hashing.merkle_root splits at the largest power of two (RFC 6962); ours
    # must build the same tree and only add the count binding on top.
    top = merkle_root(tiles)
    assert root(tiles) == _sha(b"\x02" + len(tiles).to_bytes(8, "big") + top)


@CHECKS
@given(tile_lists, st.data())
def test_every_proof_verifies_and_has_its_predicted_length(
    tiles: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(tiles) - 1))
    siblings = proof(tiles, index)
    assert len(siblings) == proof_length(index, len(tiles)) <= _ceil_log2(len(tiles))
    assert verify(root(tiles), index, len(tiles), tiles[index], siblings)


@CHECKS
@given(tile_lists, st.data())
def test_a_proof_fails_for_any_other_index_or_count(
    tiles: list[bytes], data: st.DataObject
) -> None:
    n = len(tiles)
    index = data.draw(st.integers(0, n - 1))
    top, siblings = root(tiles), proof(tiles, index)
    for other in range(n + 4):
        if other != index:
            assert not verify(top, other, n, tiles[index], siblings)
        if other != n:
            assert not verify(top, index, other, tiles[index], siblings)


@CHECKS
@given(tile_lists, st.data(), st.binary(max_size=12))
def test_a_proof_fails_for_another_tile(
    tiles: list[bytes], data: st.DataObject, other: bytes
) -> None:
    index = data.draw(st.integers(0, len(tiles) - 1))
    if other != tiles[index]:
        assert not verify(root(tiles), index, len(tiles), other, proof(tiles, index))


@CHECKS
@given(tile_lists, st.data())
def test_a_truncated_extended_or_altered_proof_fails(
    tiles: list[bytes], data: st.DataObject
) -> None:
    n = len(tiles)
    index = data.draw(st.integers(0, n - 1))
    top, siblings, tile = root(tiles), proof(tiles, index), tiles[index]
    assert not verify(top, index, n, tile, (*siblings, bytes(32)))
    assert not verify(top, index, n, tile, (bytes(32), *siblings))
    if siblings:
        assert not verify(top, index, n, tile, siblings[:-1])
        assert not verify(top, index, n, tile, siblings[1:])
        flip = data.draw(st.integers(0, len(siblings) - 1))
        altered = bytes([siblings[flip][0] ^ 1]) + siblings[flip][1:]
        assert not verify(top, index, n, tile, (*siblings[:flip], altered, *siblings[flip + 1 :]))
        assert not verify(
            top, index, n, tile, (*siblings[:flip], siblings[flip][:31], *siblings[flip + 1 :])
        )


@CHECKS
@given(tile_lists, tile_lists, st.data())
def test_a_proof_from_another_tree_fails(
    tiles: list[bytes], others: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(others) - 1))
    if root(others) != root(tiles):
        tile = others[index]
        assert not verify(root(tiles), index, len(others), tile, proof(others, index))
        assert not verify(root(tiles), index, len(tiles), tile, proof(others, index))


def test_the_count_is_bound_even_where_promotion_gives_the_same_path() -> None:
    # Leaf 0 of a 5-tile and of a 6-tile tree have the same path shape (3 siblings);
    # only the count in the root tells the trees apart.
    five = _tiles(5)
    siblings = proof(five, 0)
    assert proof_length(0, 5) == proof_length(0, 6) == len(siblings) == 3
    assert verify(root(five), 0, 5, five[0], siblings)
    assert not verify(root(five), 0, 6, five[0], siblings)


def test_a_leaf_cannot_pass_for_an_inner_node() -> None:
    # A two-tile tree's top node is H(0x01 || l0 || l1); a one-tile tree whose tile
    # is l0 || l1 has leaf H(0x00 || l0 || l1), a different hash.
    tiles = _tiles(2)
    pair = leaf_hash(tiles[0]) + leaf_hash(tiles[1])
    assert leaf_hash(pair) != node_hash(leaf_hash(tiles[0]), leaf_hash(tiles[1]))
    assert not verify(root(tiles), 0, 1, pair, ())


def test_bounds() -> None:
    with pytest.raises(MerkleError):
        root([])
    with pytest.raises(MerkleError):
        root([b""] * (MAX_TILES + 1))
    for bad in (-1, 3):
        with pytest.raises(MerkleError):
            proof(_tiles(3), bad)
    assert proof_length(0, MAX_TILES) == proof_length(MAX_TILES - 1, MAX_TILES) == 20
    assert _ceil_log2(MAX_TILES) == MAX_PROOF_LENGTH
    top = root(_tiles(4))
    assert not verify(top, 0, 0, b"", ())
    assert not verify(top, 0, MAX_TILES + 1, _tiles(4)[0], (bytes(32),) * 21)
    assert not verify(top, 0, 4, _tiles(4)[0], (bytes(32),) * (MAX_PROOF_LENGTH + 1))


def test_every_index_of_a_larger_tree_verifies() -> None:
    tiles = _tiles(1000)
    top = root(tiles)
    for index in range(1000):
        siblings = proof(tiles, index)
        assert len(siblings) <= 10
        assert verify(top, index, 1000, tiles[index], siblings)
        assert not verify(top, index, 1000, tiles[(index + 1) % 1000], siblings)
