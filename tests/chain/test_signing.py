"""Tx and vote signing: what the signature covers, domain separation, the raw fast path."""

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import codec
from chain.address import address_from_public_key
from chain.crypto import CryptoError, SigningKey, sign_bytes
from chain.records import SignedTx, SignedVote, Transfer, Tx, Vote
from chain.signing import (
    sender_address,
    sign_tx,
    sign_vote,
    tx_signing_bytes,
    tx_verify_item,
    verify_tx_signature,
    verify_vote_signature,
    vote_signing_bytes,
)

CHAIN = "gannet-test-1"
KEY = SigningKey.from_seed(bytes(range(32)))
OTHER = SigningKey.from_seed(bytes(range(1, 33)))


def make_tx(**changes: object) -> Tx:
    """A valid transfer from KEY; `changes` replace fields."""
    tx = Tx(
        chain_id=CHAIN.encode(),
        sender=KEY.public_key,
        nonce=7,
        fee=1000,
        body=Transfer(to=bytes(range(20)), amount=5 * 10**9, denom=0),
    )
    return dataclasses.replace(tx, **changes)


def make_vote(**changes: object) -> Vote:
    """A precommit by KEY's validator address; `changes` replace fields."""
    vote = Vote(
        vote_type=2,
        height=10,
        round=1,
        block_hash=bytes(32),
        validator=address_from_public_key(KEY.public_key),
    )
    return dataclasses.replace(vote, **changes)


# --- pinned vectors -------------------------------------------------------------------


def test_tx_signing_bytes_follow_the_domain_rule() -> None:
    tx = make_tx()
    chain = CHAIN.encode()
    preimage = bytes([len(chain)]) + chain + bytes([2]) + b"tx" + codec.encode(tx)
    assert tx_signing_bytes(tx) == hashlib.sha256(preimage).digest()


def test_tx_signing_vector_is_pinned() -> None:
    tx = make_tx()
    assert tx_signing_bytes(tx).hex() == (
        "8ee6f9873744482191bc81c9661fff2fd2527edcad5fc403173e9ea90c14bfa0"
    )
    assert sign_tx(KEY, tx).signature.hex() == (
        "5b510df660a1acd0d6f4207944cc20b97f1681370cff996ccf5a5007fe13c3d5"
        "be28a96af5f42a95f2bf6dd645751eb1dc55da141e404d495f0a88d2a6a0390b"
    )


def test_vote_signing_vector_is_pinned() -> None:
    vote = make_vote()
    assert vote_signing_bytes(CHAIN, vote) == sign_bytes(CHAIN, b"vote", codec.encode(vote))
    assert vote_signing_bytes(CHAIN, vote).hex() == (
        "8d225e563feaa39c5f55805a95f0b94d2da1601e7e490f5fab314f786099a153"
    )


# --- transactions ---------------------------------------------------------------------


def test_signed_tx_verifies() -> None:
    stx = sign_tx(KEY, make_tx())
    assert verify_tx_signature(stx)
    assert sender_address(stx) == address_from_public_key(KEY.public_key)


@pytest.mark.parametrize(
    "changes",
    [
        {"nonce": 8},
        {"fee": 999},
        {"chain_id": b"gannet-test-2"},
        {"body": Transfer(to=bytes(range(20)), amount=5 * 10**9 + 1, denom=0)},
        {"body": Transfer(to=bytes(range(20)), amount=5 * 10**9, denom=1)},
        {"sender": OTHER.public_key},
    ],
    ids=["nonce", "fee", "chain_id", "amount", "denom", "sender"],
)
def test_changing_any_tx_field_breaks_the_signature(changes: dict) -> None:
    stx = sign_tx(KEY, make_tx())
    forged = dataclasses.replace(stx, tx=dataclasses.replace(stx.tx, **changes))
    assert not verify_tx_signature(forged)


def test_flipped_signature_bit_fails() -> None:
    stx = sign_tx(KEY, make_tx())
    sig = bytearray(stx.signature)
    sig[5] ^= 1
    assert not verify_tx_signature(dataclasses.replace(stx, signature=bytes(sig)))


def test_vote_domain_signature_does_not_verify_as_tx() -> None:
    tx = make_tx()
    signature = KEY.sign(sign_bytes(CHAIN, Vote.TYPE_TAG, codec.encode(tx)))
    assert not verify_tx_signature(SignedTx(tx=tx, signature=signature))


def test_sign_tx_with_the_wrong_key_raises() -> None:
    with pytest.raises(CryptoError, match="does not match the tx sender"):
        sign_tx(OTHER, make_tx())


def test_non_utf8_chain_id_has_no_signing_bytes() -> None:
    tx = make_tx(chain_id=b"\xff\xfe")
    with pytest.raises(CryptoError, match="utf-8"):
        tx_signing_bytes(tx)
    assert not verify_tx_signature(SignedTx(tx=tx, signature=bytes(64)))


@settings(max_examples=60, deadline=None)
@given(
    nonce=st.integers(0, 2**64 - 1),
    fee=st.integers(0, 2**64 - 1),
    amount=st.integers(0, 2**64 - 1),
    chain=st.text(min_size=1, max_size=16).filter(lambda s: len(s.encode()) <= 64),
)
def test_raw_fast_path_matches_reencoding(nonce: int, fee: int, amount: int, chain: str) -> None:
    tx = make_tx(
        nonce=nonce,
        fee=fee,
        chain_id=chain.encode(),
        body=Transfer(to=bytes(20), amount=amount, denom=0),
    )
    stx = SignedTx(tx=tx, signature=bytes(range(64)))
    raw = codec.encode(stx)
    assert tx_verify_item(stx, raw) == tx_verify_item(stx)
    assert tx_verify_item(stx)[1] == tx_signing_bytes(tx)


def test_raw_with_an_unexpected_layout_falls_back_to_reencoding() -> None:
    stx = sign_tx(KEY, make_tx())
    assert tx_verify_item(stx, b"") == tx_verify_item(stx)


# --- votes ----------------------------------------------------------------------------


def test_signed_vote_verifies_for_its_chain_and_key_only() -> None:
    svote = sign_vote(KEY, CHAIN, make_vote())
    assert isinstance(svote, SignedVote)
    assert verify_vote_signature(CHAIN, svote, KEY.public_key)
    assert not verify_vote_signature("gannet-test-2", svote, KEY.public_key)
    assert not verify_vote_signature(CHAIN, svote, OTHER.public_key)
    assert not verify_vote_signature(CHAIN, svote, b"short")


def test_changed_vote_fails() -> None:
    svote = sign_vote(KEY, CHAIN, make_vote())
    for changes in ({"round": 2}, {"height": 11}, {"vote_type": 1}, {"block_hash": b""}):
        forged = dataclasses.replace(svote, vote=dataclasses.replace(svote.vote, **changes))
        assert not verify_vote_signature(CHAIN, forged, KEY.public_key), changes


def test_tx_domain_signature_does_not_verify_as_vote() -> None:
    vote = make_vote()
    signature = KEY.sign(sign_bytes(CHAIN, Tx.TYPE_TAG, codec.encode(vote)))
    assert not verify_vote_signature(
        CHAIN, SignedVote(vote=vote, signature=signature), KEY.public_key
    )


def test_sign_vote_with_the_wrong_key_raises() -> None:
    with pytest.raises(CryptoError, match="does not match the vote validator"):
        sign_vote(OTHER, CHAIN, make_vote())
