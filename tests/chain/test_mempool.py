"""Mempool admission rules, replacement, eviction, reaping and post-block cleanup.

Every test uses a real SignatureVerifier with two worker threads and real
signatures; `CountingVerifier` only counts calls, its verdicts are the real ones.
"""

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chain import codec
from chain.address import address_from_public_key
from chain.crypto import SignatureVerifier, SigningKey, VerifyItem
from chain.errors import (
    DecodeError,
    FeeBelowMinimum,
    FeeTooLow,
    InvalidTxSignature,
    MempoolError,
    MempoolFull,
    NonceGapTooLarge,
    NonceTooLow,
    TxAlreadyKnown,
    TxTooLarge,
)
from chain.hashing import sha256
from chain.mempool import Mempool, MempoolLimits
from chain.records import EMPTY_ACCOUNT, Account, SignedTx, Transfer, Tx, tx_hash
from chain.signing import sign_tx

CHAIN = "gannet-test"
KEYS = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(6)]
ADDRS = [address_from_public_key(key.public_key) for key in KEYS]
A, B, C, D = 0, 1, 2, 3
RICH = 10**15


class CountingVerifier(SignatureVerifier):
    """A real verifier that records each `verify_many` batch size."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers=workers)
        self.batches: list[int] = []

    def verify_many(self, items: Sequence[VerifyItem]) -> list[bool]:
        self.batches.append(len(items))
        return super().verify_many(items)


class Ledger:
    """Committed accounts by address, as the node's state would serve them."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}

    def get(self, address: bytes) -> Account:
        return self.accounts.get(address, EMPTY_ACCOUNT)

    def set(self, who: int, *, gpu: int | None = None, nonce: int | None = None) -> None:
        old = self.get(ADDRS[who])
        self.accounts[ADDRS[who]] = Account(
            gpu=old.gpu if gpu is None else gpu,
            stable=0,
            nonce=old.nonce if nonce is None else nonce,
            licences=0,
            locks=(),
        )


_RAW_CACHE: dict[tuple, bytes] = {}


def raw_tx(who: int, nonce: int, fee: int, amount: int = 1, chain: str = CHAIN) -> bytes:
    """The encoded SignedTx of a transfer by KEYS[who] (cached: signing is deterministic)."""
    key = (who, nonce, fee, amount, chain)
    if key not in _RAW_CACHE:
        tx = Tx(
            chain_id=chain.encode(),
            sender=KEYS[who].public_key,
            nonce=nonce,
            fee=fee,
            body=Transfer(to=bytes(20), amount=amount, denom=0),
        )
        _RAW_CACHE[key] = codec.encode(sign_tx(KEYS[who], tx))
    return _RAW_CACHE[key]


def bad_sig_tx(who: int, nonce: int, fee: int) -> bytes:
    """A tx by KEYS[who] whose signature was made by another key."""
    stx = codec.decode(SignedTx, raw_tx(who, nonce, fee))
    forged = SignedTx(tx=stx.tx, signature=KEYS[5].sign(b"x" * 32))
    return codec.encode(forged)


@pytest.fixture(scope="module")
def verifier() -> Iterator[CountingVerifier]:
    with CountingVerifier(workers=2) as v:
        yield v


@pytest.fixture
def ledger() -> Ledger:
    book = Ledger()
    for who in range(len(KEYS)):
        book.set(who, gpu=RICH, nonce=0)
    return book


def make_pool(ledger: Ledger, verifier: SignatureVerifier, **limits: int) -> Mempool:
    return Mempool(CHAIN, ledger.get, verifier, MempoolLimits(**limits))


def senders_and_nonces(stxs: Sequence[SignedTx]) -> list[tuple[int, int]]:
    """(key index, nonce) per tx, for readable expectations."""
    index = {key.public_key: i for i, key in enumerate(KEYS)}
    return [(index[stx.tx.sender], stx.tx.nonce) for stx in stxs]


# --- admission ------------------------------------------------------------------------


def test_add_admits_and_answers_queries(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier)
    raw = raw_tx(A, 0, 10)
    digest = pool.add(raw)
    stx = codec.decode(SignedTx, raw)
    assert digest == sha256(raw) == tx_hash(stx)
    assert len(pool) == 1 and pool.size_bytes == len(raw)
    assert pool.get(digest) == stx and pool.contains(digest) and digest in pool
    assert pool.get_pending(digest).raw == raw
    assert pool.is_verified(digest) and not pool.is_verified(bytes(32))
    assert pool.get(bytes(32)) is None
    assert pool.pending_nonce(ADDRS[A]) == 1 and pool.pending_nonce(ADDRS[B]) == 0
    assert pool.pending_for(ADDRS[A]) == [stx] and pool.pending_for(ADDRS[B]) == []


def test_too_large(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier, max_tx_bytes=100)
    raw = raw_tx(A, 0, 10)
    with pytest.raises(TxTooLarge, match=f"expected at most 100 bytes, got {len(raw)}"):
        pool.add(raw)


@pytest.mark.parametrize("raw", [b"", b"\x01\x02", raw_tx(A, 0, 10) + b"\x00", "text"], ids=repr)
def test_malformed_bytes_raise_decode_error(
    ledger: Ledger, verifier: SignatureVerifier, raw: bytes
) -> None:
    with pytest.raises(DecodeError):
        make_pool(ledger, verifier).add(raw)


def test_wrong_chain_id(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier)
    with pytest.raises(MempoolError, match="wrong chain id: expected 'gannet-test', got 'other'"):
        pool.add(raw_tx(A, 0, 10, chain="other"))
    assert len(pool) == 0


def test_bad_signature(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier)
    with pytest.raises(InvalidTxSignature, match="expected a signature by sender key"):
        pool.add(bad_sig_tx(A, 0, 10))
    assert len(pool) == 0 and pool.pending_nonce(ADDRS[A]) == 0


def test_duplicate(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier)
    pool.add(raw_tx(A, 0, 10))
    with pytest.raises(TxAlreadyKnown):
        pool.add(raw_tx(A, 0, 10))
    assert len(pool) == 1


def test_nonce_too_low(ledger: Ledger, verifier: SignatureVerifier) -> None:
    ledger.set(A, nonce=5)
    pool = make_pool(ledger, verifier)
    with pytest.raises(NonceTooLow, match="expected >= 5, got 4"):
        pool.add(raw_tx(A, 4, 10))
    pool.add(raw_tx(A, 5, 10))


def test_nonce_gap_is_measured_from_the_pending_nonce(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier, max_nonce_gap=2)
    with pytest.raises(NonceGapTooLarge, match=r"expected <= 2 \(next nonce 0 \+ gap 2\), got 3"):
        pool.add(raw_tx(A, 3, 10))
    pool.add(raw_tx(A, 2, 10))  # held past a gap, not ready
    assert pool.pending_nonce(ADDRS[A]) == 0
    pool.add(raw_tx(A, 0, 10))
    pool.add(raw_tx(A, 1, 10))  # closes the gap: the run is 0, 1, 2
    assert pool.pending_nonce(ADDRS[A]) == 3
    pool.add(raw_tx(A, 5, 10))
    with pytest.raises(NonceGapTooLarge):
        pool.add(raw_tx(A, 6, 10))


def test_replacement_needs_a_strictly_higher_fee(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier)
    old = pool.add(raw_tx(A, 0, 10))
    with pytest.raises(FeeTooLow, match="expected > 10, got 10"):
        pool.add(raw_tx(A, 0, 10, amount=2))
    with pytest.raises(FeeTooLow, match="expected > 10, got 9"):
        pool.add(raw_tx(A, 0, 9))
    new = pool.add(raw_tx(A, 0, 11))
    assert not pool.contains(old) and not pool.is_verified(old)
    assert pool.contains(new) and len(pool) == 1
    assert pool.size_bytes == len(raw_tx(A, 0, 11))
    assert senders_and_nonces(pool.reap(10, 10**6)) == [(A, 0)]
    assert pool.reap(10, 10**6)[0].tx.fee == 11


def test_fees_must_be_payable_from_the_committed_balance(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    ledger.set(A, gpu=250)
    pool = make_pool(ledger, verifier)
    pool.add(raw_tx(A, 0, 100))
    pool.add(raw_tx(A, 1, 100))
    with pytest.raises(MempoolError, match="cannot pay fees: expected pending fees <= balance"):
        pool.add(raw_tx(A, 2, 51))
    pool.add(raw_tx(A, 2, 50))
    # A replacement counts the difference only.
    with pytest.raises(MempoolError, match="cannot pay fees"):
        pool.add(raw_tx(A, 1, 101))
    ledger.set(A, gpu=251)
    pool.add(raw_tx(A, 1, 101))
    assert len(pool) == 3


def test_per_account_limit(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier, max_per_account=3)
    for nonce in range(3):
        pool.add(raw_tx(A, nonce, 10))
    with pytest.raises(MempoolError, match="too many pending txs from sender: expected < 3"):
        pool.add(raw_tx(A, 3, 10))
    pool.add(raw_tx(A, 2, 11))  # a replacement is not a new slot
    pool.add(raw_tx(B, 0, 10))
    assert len(pool) == 4


def test_add_rebases_a_sender_whose_committed_nonce_moved(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier)
    for nonce in range(3):
        pool.add(raw_tx(A, nonce, 10))
    ledger.set(A, nonce=2)  # committed elsewhere, no update_after_block yet
    pool.add(raw_tx(A, 3, 10))
    assert [stx.tx.nonce for stx in pool.pending_for(ADDRS[A])] == [2, 3]
    assert pool.pending_nonce(ADDRS[A]) == 4


# --- eviction when full ---------------------------------------------------------------


def test_full_by_count_evicts_the_cheapest_tail_of_another_sender(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier, max_txs=3)
    cheap_head = pool.add(raw_tx(A, 0, 1))  # cheapest, but evicting it would open a gap
    pool.add(raw_tx(A, 1, 50))
    victim = pool.add(raw_tx(B, 0, 10))
    newcomer = pool.add(raw_tx(C, 0, 20))
    assert len(pool) == 3
    assert not pool.contains(victim)
    assert pool.contains(cheap_head) and pool.contains(newcomer)
    with pytest.raises(MempoolFull, match="expected a fee above 20 to evict, got 20"):
        pool.add(raw_tx(D, 0, 20))
    assert len(pool) == 3


def test_full_pool_never_evicts_the_senders_own_txs(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier, max_txs=2)
    pool.add(raw_tx(A, 0, 1))
    pool.add(raw_tx(A, 1, 1))
    with pytest.raises(MempoolFull, match="no tx of another sender to evict"):
        pool.add(raw_tx(A, 2, 1000))


def test_full_by_bytes_evicts_tails_until_the_tx_fits(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    small = [raw_tx(A, 0, 5), raw_tx(A, 1, 2), raw_tx(B, 0, 3)]
    big = raw_tx(C, 0, 4, amount=2**63)
    budget = sum(map(len, small)) + 1
    assert len(big) - 1 > len(small[1])  # one victim can't make room: it takes two
    pool = make_pool(ledger, verifier, max_bytes=budget, max_tx_bytes=budget)
    hashes = [pool.add(raw) for raw in small]
    # Victims are A1 (fee 2), then the cheaper of A0 (5, now exposed) and B0 (3).
    with pytest.raises(MempoolFull, match="expected a fee above 3 to evict, got 3"):
        pool.add(raw_tx(C, 0, 3, amount=2**63))
    assert [pool.contains(h) for h in hashes] == [True, True, True]  # a refusal evicts nothing
    pool.add(big)
    assert [pool.contains(h) for h in hashes] == [True, False, False]
    assert pool.size_bytes <= budget and len(pool) == 2


def test_evicting_a_tail_exposes_the_senders_next_tx(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    small = [raw_tx(A, 0, 3), raw_tx(A, 1, 2), raw_tx(B, 0, 5)]
    budget = sum(map(len, small)) + 1
    pool = make_pool(ledger, verifier, max_bytes=budget, max_tx_bytes=budget)
    hashes = [pool.add(raw) for raw in small]
    # A1 (fee 2) goes first; then A0 (fee 3), the new tail, is cheaper than B0 (fee 5).
    with pytest.raises(MempoolFull, match="expected a fee above 3 to evict, got 3"):
        pool.add(raw_tx(C, 0, 3, amount=2**63))
    pool.add(raw_tx(C, 0, 4, amount=2**63))
    assert [pool.contains(h) for h in hashes] == [False, False, True]
    assert pool.pending_nonce(ADDRS[A]) == 0 and pool.pending_for(ADDRS[A]) == []


def test_evicting_a_ready_tail_shortens_the_pending_run(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier, max_txs=3)
    for raw in [raw_tx(A, 0, 9), raw_tx(A, 1, 1), raw_tx(B, 0, 9)]:
        pool.add(raw)
    assert pool.pending_nonce(ADDRS[A]) == 2
    pool.add(raw_tx(C, 0, 5))
    assert pool.pending_nonce(ADDRS[A]) == 1
    assert senders_and_nonces(pool.reap(10, 10**6))[-1] == (C, 0)
    pool.add(raw_tx(A, 1, 6))  # refills the slot by evicting C0 (fee 5)
    assert pool.pending_nonce(ADDRS[A]) == 2


def test_eviction_stays_correct_across_heap_compaction(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    count = 1200  # > 1024 tail changes: the eviction heap is rebuilt on the way
    pool = make_pool(ledger, verifier, max_txs=count, max_per_account=count)
    results = pool.add_many([raw_tx(A, n, 1) for n in range(count)])
    assert all(isinstance(r, bytes) for r in results)
    for n in range(5):
        pool.add(raw_tx(B, n, 2))
    assert len(pool) == count
    assert pool.pending_nonce(ADDRS[A]) == count - 5
    assert pool.pending_nonce(ADDRS[B]) == 5


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_txs must be >= 1"):
        MempoolLimits(max_txs=0)
    with pytest.raises(ValueError, match="max_tx_bytes must be <= max_bytes"):
        MempoolLimits(max_bytes=10, max_tx_bytes=11)
    with pytest.raises(ValueError, match="max_nonce_gap"):
        MempoolLimits(max_nonce_gap=-1)


# --- reaping --------------------------------------------------------------------------


def test_reap_orders_heads_by_fee_and_skips_gapped_senders(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier)
    for raw in [raw_tx(A, 0, 10), raw_tx(A, 1, 100), raw_tx(B, 0, 50), raw_tx(C, 1, 1000)]:
        pool.add(raw)
    assert senders_and_nonces(pool.reap(10, 10**6)) == [(B, 0), (A, 0), (A, 1)]
    assert senders_and_nonces(pool.reap(2, 10**6)) == [(B, 0), (A, 0)]
    assert len(pool) == 4  # reaping removes nothing


def test_reap_breaks_fee_ties_by_hash(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier)
    hashes = [pool.add(raw_tx(who, 0, 7)) for who in range(5)]
    reaped = pool.reap_pending(10, 10**6)
    assert [p.hash for p in reaped] == sorted(hashes)


def test_reap_byte_limit_ends_a_senders_run(ledger: Ledger, verifier: SignatureVerifier) -> None:
    pool = make_pool(ledger, verifier)
    pool.add(raw_tx(A, 0, 100))
    pool.add(raw_tx(A, 1, 90, amount=2**63))  # larger
    pool.add(raw_tx(B, 0, 10))
    budget = len(raw_tx(A, 0, 100)) + len(raw_tx(B, 0, 10))
    reaped = pool.reap_pending(10, budget)
    assert [(p.sender, p.nonce) for p in reaped] == [(ADDRS[A], 0), (ADDRS[B], 0)]
    assert sum(p.size for p in reaped) <= budget
    assert pool.reap(10, 0) == [] and pool.reap(0, 10**6) == []


# --- after a block --------------------------------------------------------------------


def test_update_after_block_removes_included_and_stale_txs(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    ledger.set(B, gpu=300)
    pool = make_pool(ledger, verifier)
    a0, a1 = pool.add(raw_tx(A, 0, 10)), pool.add(raw_tx(A, 1, 10))
    b0, b1, b2 = (pool.add(raw_tx(B, n, 100)) for n in range(3))
    c1 = pool.add(raw_tx(C, 1, 5))  # waits for C's nonce 0
    # The block included a0 and another version of C's nonce 0; B lost balance.
    ledger.set(A, nonce=1, gpu=RICH - 10)
    ledger.set(C, nonce=1)
    ledger.set(B, gpu=150)
    evicted = pool.update_after_block([a0], [ADDRS[C], ADDRS[B]])
    assert sorted(evicted) == sorted([b1, b2])  # fees dropped from the highest nonce down
    assert [pool.contains(h) for h in (a0, a1, b0, c1)] == [False, True, True, True]
    assert pool.pending_nonce(ADDRS[C]) == 2  # c1 is now ready
    assert senders_and_nonces(pool.reap(10, 10**6)) == [(B, 0), (A, 1), (C, 1)]


def test_update_after_block_drops_txs_below_the_new_nonce(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    pool = make_pool(ledger, verifier)
    hashes = [pool.add(raw_tx(A, n, 10)) for n in range(4)]
    ledger.set(A, nonce=3)  # nonces 0..2 executed from other versions
    assert pool.update_after_block([], [ADDRS[A]]) == hashes[:3]
    assert pool.pending_for(ADDRS[A]) == [codec.decode(SignedTx, raw_tx(A, 3, 10))]
    assert pool.size_bytes == len(raw_tx(A, 3, 10))
    ledger.set(A, nonce=9)
    pool.update_after_block([], [ADDRS[A]])
    assert len(pool) == 0 and pool.size_bytes == 0 and pool.pending_nonce(ADDRS[A]) == 9


# --- batches --------------------------------------------------------------------------


def test_add_many_verifies_all_signatures_in_one_batch(
    ledger: Ledger, verifier: CountingVerifier
) -> None:
    pool = make_pool(ledger, verifier)
    known = pool.add(raw_tx(D, 0, 10))
    raws = [
        raw_tx(A, 0, 10),
        bad_sig_tx(B, 0, 10),
        raw_tx(A, 1, 10),  # needs A0 admitted first: admission is in order
        b"\x93garbage",
        raw_tx(C, 0, 10, chain="other"),
        raw_tx(A, 0, 10),  # duplicate inside the batch
        raw_tx(D, 0, 10),  # already pending
        raw_tx(C, 0, 10),
        bad_sig_tx(C, 1, 10),
    ]
    verifier.batches.clear()
    results = pool.add_many(raws)
    assert verifier.batches == [5]  # A0, B0(bad), A1, C0, C1(bad): one call, no repeats
    kinds = [type(r) if not isinstance(r, bytes) else bytes for r in results]
    assert kinds == [
        bytes,
        InvalidTxSignature,
        bytes,
        DecodeError,
        MempoolError,
        TxAlreadyKnown,
        TxAlreadyKnown,
        bytes,
        InvalidTxSignature,
    ]
    assert results[0] == sha256(raws[0]) and results[7] == sha256(raws[7])
    assert len(pool) == 4 and pool.contains(known)
    verifier.batches.clear()
    assert all(isinstance(r, TxAlreadyKnown) for r in pool.add_many(raws[:1] * 3))
    assert verifier.batches == []  # nothing new to verify


def test_add_many_large_batch_splits_across_workers(
    ledger: Ledger, verifier: CountingVerifier
) -> None:
    pool = make_pool(ledger, verifier)
    raws = [raw_tx(who, n, 10 + n) for who in range(4) for n in range(40)]
    raws[17] = bad_sig_tx(0, 17, 27)
    verifier.batches.clear()
    results = pool.add_many(raws)
    assert verifier.batches == [160]
    assert isinstance(results[17], InvalidTxSignature)
    assert len(pool) == 159
    # A's run stops before the bad nonce 17; later nonces wait past the gap.
    assert pool.pending_nonce(ADDRS[A]) == 17


# --- property: limits and reap shape under random operations ---------------------------

SMALL_LIMITS = {"max_txs": 6, "max_per_account": 4, "max_nonce_gap": 2}
TX_SIZE = len(raw_tx(A, 0, 10))
SENDERS = st.integers(0, 3)
BAD = st.integers(0, 5).map(lambda i: i == 0)  # one tx in six has a forged signature


class MempoolMachine(RuleBasedStateMachine):
    """Random adds, batches, blocks and balance drains against a small pool."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        for who in range(4):
            self.ledger.set(who, gpu=400, nonce=0)
        limits = MempoolLimits(max_bytes=6 * TX_SIZE + 10, max_tx_bytes=2 * TX_SIZE, **SMALL_LIMITS)
        self.pool = Mempool(CHAIN, self.ledger.get, MACHINE_VERIFIER, limits)

    def _raw(self, who: int, offset: int, fee: int, bad: bool) -> bytes:
        nonce = self.ledger.get(ADDRS[who]).nonce + offset
        if bad:
            return bad_sig_tx(who, nonce, fee)
        amount = 2**40 if fee % 3 == 0 else 1  # 8 bytes larger: sizes vary
        return raw_tx(who, nonce, fee, amount)

    @rule(who=SENDERS, offset=st.integers(0, 4), fee=st.integers(1, 40), bad=BAD)
    def add(self, who: int, offset: int, fee: int, bad: bool) -> None:
        try:
            digest = self.pool.add(self._raw(who, offset, fee, bad))
        except MempoolError:
            return
        assert not bad and self.pool.is_verified(digest)

    @rule(
        txs=st.lists(
            st.tuples(SENDERS, st.integers(0, 4), st.integers(1, 40), BAD),
            max_size=5,
        )
    )
    def add_many(self, txs: list[tuple[int, int, int, bool]]) -> None:
        results = self.pool.add_many([self._raw(*args) for args in txs])
        for (_, _, _, bad), result in zip(txs, results, strict=True):
            assert isinstance(result, MempoolError) or not bad

    @rule(max_txs=st.integers(0, 5), slack=st.integers(0, 4 * TX_SIZE))
    def commit_block(self, max_txs: int, slack: int) -> None:
        reaped = self.pool.reap_pending(max_txs, slack)
        assert len(reaped) <= max_txs and sum(p.size for p in reaped) <= slack
        for pending in reaped:  # execute in reaped order
            account = self.ledger.get(pending.sender)
            assert pending.nonce == account.nonce
            assert pending.fee <= account.gpu
            who = ADDRS.index(pending.sender)
            self.ledger.set(who, nonce=account.nonce + 1, gpu=account.gpu - pending.fee)
        senders = {p.sender for p in reaped}
        self.pool.update_after_block([p.hash for p in reaped], senders)
        assert not any(self.pool.contains(p.hash) for p in reaped)

    @rule(who=SENDERS, amount=st.integers(0, 80), bump=st.integers(0, 2))
    def external_change(self, who: int, amount: int, bump: int) -> None:
        account = self.ledger.get(ADDRS[who])
        self.ledger.set(who, gpu=max(0, account.gpu - amount), nonce=account.nonce + bump)
        self.pool.update_after_block([], [ADDRS[who]])

    @invariant()
    def within_limits(self) -> None:
        pool, limits = self.pool, self.pool.limits
        assert len(pool) <= limits.max_txs
        assert pool.size_bytes <= limits.max_bytes
        pending = [pool.pending_for(address) for address in ADDRS]
        assert sum(map(len, pending)) == len(pool)
        assert sum(len(codec.encode(stx)) for txs in pending for stx in txs) == pool.size_bytes
        for address, txs in zip(ADDRS, pending, strict=True):
            account = self.ledger.get(address)
            assert len(txs) <= limits.max_per_account
            assert sum(stx.tx.fee for stx in txs) <= account.gpu
            assert all(stx.tx.nonce >= account.nonce for stx in txs)

    @invariant()
    def reap_returns_gap_free_runs(self) -> None:
        reaped = self.pool.reap_pending(100, 10**9)
        by_sender: dict[bytes, list[int]] = {}
        for pending in reaped:
            by_sender.setdefault(pending.sender, []).append(pending.nonce)
        for address in ADDRS:
            base = self.ledger.get(address).nonce
            nonces = by_sender.get(address, [])
            assert nonces == list(range(base, base + len(nonces)))
            assert self.pool.pending_nonce(address) == base + len(nonces)
            all_nonces = {stx.tx.nonce for stx in self.pool.pending_for(address)}
            assert base + len(nonces) not in all_nonces  # the run is maximal


MACHINE_VERIFIER = SignatureVerifier(workers=2)


@pytest.fixture(scope="module", autouse=True)
def _close_machine_verifier() -> Iterator[None]:
    yield
    MACHINE_VERIFIER.close()


MempoolMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMempoolMachine = MempoolMachine.TestCase


def test_lowest_fee_is_the_cheapest_evictable_tail(
    ledger: Ledger, verifier: SignatureVerifier
) -> None:
    """lowest_fee is the fee of the cheapest sender tail: what a newcomer must outbid."""
    pool = make_pool(ledger, verifier)
    assert pool.lowest_fee() is None
    for who, fee in ((0, 500), (1, 300), (2, 900)):
        pool.add(raw_tx(who, 0, fee))
    assert pool.lowest_fee() == 300
    pool.add(raw_tx(1, 1, 2000))  # sender 1's tail is now its 2000-fee tx
    assert pool.lowest_fee() == 500


def test_fee_below_the_network_minimum(ledger: Ledger, verifier: SignatureVerifier) -> None:
    """A tx offering less than the network minimum fee is never includable: refuse it."""
    pool = Mempool(CHAIN, ledger.get, verifier, min_fee=1000)
    with pytest.raises(FeeBelowMinimum, match="expected >= 1000, got 999"):
        pool.add(raw_tx(0, 0, 999))
    pool.add(raw_tx(0, 0, 1000))
    assert len(pool) == 1
