"""SHA-256 and the RFC 6962 Merkle root of tx and receipt roots."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.hashing import merkle_root, sha256
from chain.types import ZERO_HASH


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash: H(0x00 || data)."""
    return h(b"\x00" + data)


def node(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node: H(0x01 || left || right)."""
    return h(b"\x01" + left + right)


A, B, C, D, E = b"a", b"b", b"c", b"d", b"e"


def test_sha256_is_sha256() -> None:
    """The FIPS 180-2 'abc' vector."""
    assert sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_empty_tree_is_the_zero_hash() -> None:
    """Gannet's documented choice for no leaves: 32 zero bytes (RFC 6962 would say H(''))."""
    assert merkle_root([]) == ZERO_HASH == bytes(32)


def test_one_leaf() -> None:
    """A single leaf is its leaf hash, never the raw data."""
    assert merkle_root([A]) == leaf(A)


def test_two_leaves() -> None:
    assert merkle_root([A, B]) == node(leaf(A), leaf(B))


def test_three_leaves() -> None:
    """Split at the largest power of two below 3: ([a, b], [c]); c is not duplicated."""
    assert merkle_root([A, B, C]) == node(node(leaf(A), leaf(B)), leaf(C))


def test_five_leaves() -> None:
    """Split 5 as (4, 1)."""
    left = node(node(leaf(A), leaf(B)), node(leaf(C), leaf(D)))
    assert merkle_root([A, B, C, D, E]) == node(left, leaf(E))


# The certificate-transparency reference vectors (RFC 6962 implementations, e.g.
# google/certificate-transparency merkle_tree_test): the roots of the first n of
# these leaves.
CT_LEAVES = [
    b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("count", range(1, 9))
def test_certificate_transparency_vectors(count: int) -> None:
    """Roots of 1..8 leaves match the published RFC 6962 reference values."""
    assert merkle_root(CT_LEAVES[:count]).hex() == CT_ROOTS[count - 1]


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written from the text: MTH(D[n]) = H(1 || MTH(D[0:k]) || ...)."""
    if len(leaves) == 1:
        return leaf(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(reference_root(leaves[:k]), reference_root(leaves[k:]))


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40))
def test_matches_the_rfc_definition(leaves: list[bytes]) -> None:
    """Any number of leaves gives the root RFC 6962 defines."""
    assert merkle_root(leaves) == reference_root(leaves)


@given(st.binary(max_size=16), st.binary(max_size=16))
def test_no_second_preimage_between_levels(a: bytes, b: bytes) -> None:
    """A 2-leaf tree never equals a 1-leaf tree whose leaf is a concatenation.

    Without the 0x00 / 0x01 prefixes, the leaf `leaf(a) || leaf(b)` would give
    the 2-leaf root; the domain separation rules that out.
    """
    root = merkle_root([a, b])
    assert merkle_root([leaf(a) + leaf(b)]) != root
    assert merkle_root([b"\x01" + leaf(a) + leaf(b)]) != root
    assert merkle_root([a + b]) != root


def test_no_duplicate_last_leaf_ambiguity() -> None:
    """[a, b, c] and [a, b, c, c] have different roots (CVE-2012-2459 cannot arise)."""
    assert merkle_root([A, B, C]) != merkle_root([A, B, C, C])


@given(st.lists(st.binary(max_size=4), min_size=1, max_size=10), st.data())
def test_any_leaf_change_changes_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    """Changing, adding or dropping a leaf changes the root."""
    i = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    changed = [*leaves[:i], leaves[i] + b"!", *leaves[i + 1:]]
    assert merkle_root(changed) != merkle_root(leaves)
    assert merkle_root([*leaves, b""]) != merkle_root(leaves)
    if len(leaves) > 1:
        assert merkle_root(leaves[:-1]) != merkle_root(leaves)
