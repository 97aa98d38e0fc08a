"""RPC admission: submissions in one loop turn share one parallel signature batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SignatureVerifier, SigningKey, VerifyItem
from chain.errors import InvalidTxSignature, TxAlreadyKnown
from chain.mempool import Mempool
from chain.records import EMPTY_ACCOUNT, Account, Transfer, Tx
from chain.signing import sign_tx
from node.admission import TxAdmission

CHAIN = "gannet-test"
KEYS = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
RICH = Account(gpu=10**15, stable=0, nonce=0, licences=0, locks=())
FUNDED = {address_from_public_key(k.public_key): RICH for k in KEYS}


class CountingVerifier(SignatureVerifier):
    """A real verifier that counts its batches."""

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.batches: list[int] = []

    def verify_many(self, items: Sequence[VerifyItem]) -> list[bool]:
        self.batches.append(len(items))
        return super().verify_many(items)


def raw_tx(who: int, nonce: int) -> bytes:
    key = KEYS[who]
    tx = Tx(chain_id=CHAIN.encode(), sender=key.public_key, nonce=nonce, fee=1000,
            body=Transfer(to=bytes(20), amount=1, denom=0))
    return encode(sign_tx(key, tx))


def forged(raw: bytes) -> bytes:
    """The same tx with one signature byte flipped."""
    return raw[:-1] + bytes([raw[-1] ^ 1])


async def _submit_all(admission: TxAdmission, raws: list[bytes]) -> list:
    return await asyncio.gather(*(admission.submit(r) for r in raws), return_exceptions=True)


def test_concurrent_submissions_share_one_batch() -> None:
    with CountingVerifier() as verifier:
        pool = Mempool(CHAIN, lambda a: FUNDED.get(a, EMPTY_ACCOUNT), verifier)
        raws = [raw_tx(who, nonce) for who in range(4) for nonce in range(40)]
        bad = forged(raw_tx(0, 40))

        results = asyncio.run(_submit_all(TxAdmission(pool), [*raws, bad, raws[0]]))

    assert verifier.batches == [len(raws) + 1]  # one batch; the duplicate needs no check
    assert all(isinstance(r, bytes) for r in results[: len(raws)])
    assert isinstance(results[-2], InvalidTxSignature)
    assert isinstance(results[-1], TxAlreadyKnown)
    assert len(pool) == len(raws)


def test_a_lone_submission_is_admitted() -> None:
    with SignatureVerifier(workers=2) as verifier:
        pool = Mempool(CHAIN, lambda a: FUNDED.get(a, EMPTY_ACCOUNT), verifier)
        admission = TxAdmission(pool)
        h = asyncio.run(admission.submit(raw_tx(1, 0)))
        assert pool.get(h) is not None
        with pytest.raises(InvalidTxSignature):
            asyncio.run(admission.submit(forged(raw_tx(1, 1))))


