"""Peer addresses: parsing, validation of what peer exchange brings, and the address book."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p.addrbook import (
    MAX_DIAL_FAILURES,
    AddrBook,
    PeerAddress,
    address_from_pex,
    address_to_pex,
    parse_peer_address,
)
from p2p.errors import InvalidPeerAddress
from p2p.messages import PeerAddr

ID = bytes(range(32))
OWN = bytes([255]) * 32


def addr(n: int, host: str = "10.0.0.1", port: int = 26656) -> PeerAddress:
    return PeerAddress(bytes([n]) * 32, host, port)


@pytest.mark.parametrize(("text", "host", "port"), [
    (f"{ID.hex()}@127.0.0.1:26656", "127.0.0.1", 26656),
    (f"{ID.hex()}@[::1]:1", "::1", 1),
    (f"{ID.hex()}@node-1.example.com:65535", "node-1.example.com", 65535),
    (f"  {ID.hex()}@localhost:80 ", "localhost", 80),
])
def test_parse_peer_address(text: str, host: str, port: int) -> None:
    assert parse_peer_address(text) == PeerAddress(ID, host, port)


@pytest.mark.parametrize("text", [
    "127.0.0.1:26656",                       # no node id
    f"{ID.hex()[:-2]}@127.0.0.1:26656",      # 31-byte id
    f"zz{ID.hex()[2:]}@127.0.0.1:26656",     # not hex
    f"{ID.hex()}@127.0.0.1",                 # no port
    f"{ID.hex()}@127.0.0.1:0",               # port 0
    f"{ID.hex()}@127.0.0.1:65536",           # port too large
    f"{ID.hex()}@127.0.0.1:-1",
    f"{ID.hex()}@:26656",                    # empty host
    f"{ID.hex()}@0.0.0.0:26656",             # unspecified
    f"{ID.hex()}@224.0.0.1:26656",           # multicast
    f"{ID.hex()}@bad..host:26656",
    f"{ID.hex()}@-bad.host:26656",
    f"{ID.hex()}@under_score.host:26656",
    f"{ID.hex()}@1.2.3:26656",               # numeric top-level label
    f"{ID.hex()}@{'a' * 254}:26656",         # host too long
])
def test_parse_rejects_malformed_addresses(text: str) -> None:
    with pytest.raises(InvalidPeerAddress):
        parse_peer_address(text)


@given(st.binary(min_size=32, max_size=32),
       st.sampled_from(["127.0.0.1", "::1", "2001:db8::7", "seed.example.org"]),
       st.integers(1, 65535))
def test_format_and_parse_round_trip(node_id: bytes, host: str, port: int) -> None:
    address = PeerAddress(node_id, host, port)
    assert parse_peer_address(str(address)) == address
    assert address_from_pex(address_to_pex(address)) == address


@pytest.mark.parametrize("bad", [
    PeerAddr(node_id=ID, host="héllo".encode(), port=1),
    PeerAddr(node_id=ID, host=b"127.0.0.1", port=0),
    PeerAddr(node_id=ID, host=b"127.0.0.1", port=70000),
    PeerAddr(node_id=ID, host=b"not a host", port=1),
])
def test_address_from_pex_rejects_garbage(bad: PeerAddr) -> None:
    with pytest.raises(InvalidPeerAddress):
        address_from_pex(bad)


def test_heard_addresses_never_override_and_never_include_ourselves() -> None:
    book = AddrBook(OWN, max_size=3)
    assert not book.add_heard(PeerAddress(OWN, "10.0.0.9", 1))
    assert book.add_heard(addr(1))
    assert not book.add_heard(addr(1, host="10.6.6.6"))
    assert book.get(addr(1).node_id) == addr(1)
    book.mark_good(addr(1, host="10.0.0.2"))
    assert book.is_good(addr(1).node_id) and book.get(addr(1).node_id).host == "10.0.0.2"
    assert not book.add_heard(addr(1, host="10.6.6.6"))


def test_full_book_drops_heard_addresses_and_evicts_them_for_good_ones() -> None:
    book = AddrBook(OWN, max_size=2)
    assert book.add_heard(addr(1)) and book.add_heard(addr(2))
    assert not book.add_heard(addr(3))
    book.mark_good(addr(4))
    assert len(book) == 2 and book.is_good(addr(4).node_id)
    book.mark_good(addr(5))
    book.mark_good(addr(6))  # all good now: no room, nothing evicted
    assert {a.node_id for a in book.addresses()} == {addr(4).node_id, addr(5).node_id}


def test_failed_dials_back_off_and_heard_addresses_are_forgotten() -> None:
    book = AddrBook(OWN)
    book.add_heard(addr(1))
    book.mark_good(addr(2))
    book.mark_failed(addr(1).node_id, now=100.0)
    assert book.dial_candidates(100.0, lambda _: False) == [addr(2)]
    assert addr(1) in book.dial_candidates(106.0, lambda _: False)
    for _ in range(MAX_DIAL_FAILURES):
        book.mark_failed(addr(1).node_id, now=100.0)
        book.mark_failed(addr(2).node_id, now=100.0)
    assert addr(1).node_id not in book
    assert book.is_good(addr(2).node_id)  # proven addresses stay, retried ever later


def test_good_addresses_skip_and_limit() -> None:
    book = AddrBook(OWN, rng=random.Random(1))
    for n in range(10):
        book.mark_good(addr(n))
    book.add_heard(addr(50))
    chosen = book.good_addresses(4, lambda node_id: node_id == addr(0).node_id)
    assert len(chosen) == 4
    assert addr(0) not in chosen and addr(50) not in chosen
    assert len(book.good_addresses(100, lambda _: False)) == 10
