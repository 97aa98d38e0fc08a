"""The LevelDB block store: round trips, reopening, one atomic batch per block, typed errors."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.codec import encode
from chain.errors import StoreCorrupted, StoreError
from chain.records import (
    Block,
    Commit,
    CommitSig,
    Header,
    Lock,
    Receipt,
    SignedTx,
    Transfer,
    Tx,
    TxLocation,
    block_hash,
    tx_hash,
)
from chain.store import (
    GENESIS_KEY,
    HEAD_KEY,
    P_BLOCK,
    P_COMMIT,
    P_HASH,
    P_STATE,
    P_TX,
    BlockStore,
    GenesisMark,
    Head,
)
from tests.strategies import blocks, commits, heads, tx_locations

MARK = GenesisMark(genesis_hash=b"g" * 32, app_hash=b"a" * 32)
HEAD0 = Head(height=0, block_hash=b"g" * 32, time_ms=1000, app_hash=b"a" * 32,
             results_hash=bytes(32))
GENESIS_WRITES = {b"acct-1": b"one", b"acct-2": b"two", b"v": b"validators"}


def make_tx(nonce: int) -> SignedTx:
    tx = Tx(chain_id=b"gannet-test", sender=bytes([nonce]) * 32, nonce=nonce, fee=10,
            body=Transfer(to=bytes(20), amount=nonce, denom=0))
    return SignedTx(tx=tx, signature=bytes([nonce]) * 64)


def make_block(height: int, prev: bytes, txs: tuple[SignedTx, ...]) -> Block:
    header = Header(version=1, chain_id=b"gannet-test", height=height, time_ms=1000 + height,
                    prev_hash=prev, last_commit_hash=bytes(32), tx_root=bytes(32),
                    app_hash=bytes(32), results_hash=bytes(32), validators_hash=bytes(32),
                    next_validators_hash=bytes(32), evidence_hash=bytes(32),
                    proposer=bytes(20))
    return Block(header=header, txs=txs, evidence=(),
                 last_commit=Commit(height=0, round=0, block_hash=b"", signatures=()))


def commit_for(block: Block) -> Commit:
    return Commit(height=block.header.height, round=0, block_hash=block_hash(block),
                  signatures=(CommitSig(validator=bytes(20), signature=bytes(64)),))


def locations_for(block: Block) -> list[tuple[bytes, TxLocation]]:
    return [
        (tx_hash(stx), TxLocation(height=block.header.height, index=i,
                                  receipt=Receipt(status=0, code=0, reason=b"", fee_paid=10)))
        for i, stx in enumerate(block.txs)
    ]


def head_after(block: Block) -> Head:
    return Head(height=block.header.height, block_hash=block_hash(block),
                time_ms=block.header.time_ms, app_hash=b"n" * 32, results_hash=b"r" * 32)


BLOCK1 = make_block(1, HEAD0.block_hash, (make_tx(1), make_tx(2)))
WRITES1 = {b"acct-1": b"", b"acct-3": b"three", b"acct-2": b"two-b"}  # one deletion


def commit_block1(store: BlockStore, writes: dict[bytes, Any] = WRITES1) -> None:
    store.commit_block(BLOCK1, commit_for(BLOCK1), locations_for(BLOCK1), writes,
                       head_after(BLOCK1))


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "db")


@pytest.fixture
def store(path: str) -> Iterator[BlockStore]:
    opened = BlockStore(path)
    opened.init_genesis(MARK, GENESIS_WRITES, HEAD0)
    yield opened
    opened.close()


def raw_contents(path: str) -> dict[bytes, bytes]:
    """Every key and value in the LevelDB at `path` (the store must be closed)."""
    db = plyvel.DB(path)
    try:
        return dict(db.iterator())
    finally:
        db.close()


# --- round trips ---------------------------------------------------------------------


def test_empty_store_has_nothing(path: str) -> None:
    store = BlockStore(path)
    try:
        assert store.head() is None and store.genesis_mark() is None
        assert store.get_block(0) is None and store.get_block_raw(1) is None
        assert store.get_commit(1) is None and store.get_state(b"acct-1") is None
        assert store.get_height_by_hash(bytes(32)) is None
        assert store.get_tx_location(bytes(32)) is None
    finally:
        store.close()


def test_init_genesis_writes_state_mark_and_head(store: BlockStore) -> None:
    assert store.genesis_mark() == MARK
    assert store.head() == HEAD0
    for key, value in GENESIS_WRITES.items():
        assert store.get_state(key) == value


def check_block1_committed(store: BlockStore) -> None:
    """Everything commit_block(BLOCK1) writes reads back."""
    assert store.get_block(1) == BLOCK1
    assert store.get_block_raw(1) == encode(BLOCK1)
    assert store.get_height_by_hash(block_hash(BLOCK1)) == 1
    assert store.get_commit(1) == commit_for(BLOCK1)
    for h, location in locations_for(BLOCK1):
        assert store.get_tx_location(h) == location
    assert store.head() == head_after(BLOCK1)
    assert store.get_state(b"acct-1") is None  # deleted
    assert store.get_state(b"acct-2") == b"two-b"
    assert store.get_state(b"acct-3") == b"three"
    assert store.get_state(b"v") == b"validators"  # untouched
    assert store.genesis_mark() == MARK


def test_commit_block_round_trips(store: BlockStore) -> None:
    commit_block1(store)
    check_block1_committed(store)
    assert store.get_block(2) is None and store.get_commit(2) is None


def test_reopening_sees_the_same(path: str, store: BlockStore) -> None:
    commit_block1(store)
    store.close()
    store.close()  # idempotent
    reopened = BlockStore(path)
    try:
        check_block1_committed(reopened)
    finally:
        reopened.close()


def test_second_block_extends_the_first(store: BlockStore) -> None:
    commit_block1(store)
    block2 = make_block(2, block_hash(BLOCK1), (make_tx(3),))
    store.commit_block(block2, commit_for(block2), locations_for(block2),
                       {b"acct-3": b""}, head_after(block2))
    assert store.get_block(1) == BLOCK1 and store.get_block(2) == block2
    assert store.get_height_by_hash(block_hash(block2)) == 2
    assert store.head() == head_after(block2)
    assert store.get_state(b"acct-3") is None and store.get_state(b"acct-2") == b"two-b"


@settings(max_examples=15, deadline=None)
@given(block=blocks, commit=commits, head=heads,
       locations=st.lists(st.tuples(st.binary(min_size=32, max_size=32), tx_locations),
                          max_size=3, unique_by=lambda item: item[0]),
       writes=st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=8),
                              max_size=5))
def test_any_records_round_trip(block: Block, commit: Commit, head: Head,
                                locations: list, writes: dict) -> None:
    """Whatever the records, what commit_block writes is what the getters return."""
    with tempfile.TemporaryDirectory() as tmp:
        store = BlockStore(tmp)
        try:
            store.commit_block(block, commit, locations, writes, head)
            height = block.header.height
            assert store.get_block(height) == block
            assert store.get_commit(height) == commit
            assert store.get_height_by_hash(block_hash(block)) == height
            assert store.head() == head
            for h, location in locations:
                assert store.get_tx_location(h) == location
            for key, value in writes.items():
                assert store.get_state(key) == (value or None)
        finally:
            store.close()


# --- atomicity and failures ------------------------------------------------------------


class FailingBatch:
    """A real transactional batch whose `fail_at`-th put or delete raises a LevelDB error."""

    def __init__(self, batch: Any, fail_at: int) -> None:
        self._batch = batch
        self._fail_at = fail_at
        self._ops = 0

    def _step(self) -> None:
        self._ops += 1
        if self._ops == self._fail_at:
            raise plyvel.IOError("IO error: No space left on device")

    def put(self, key: bytes, value: bytes) -> None:
        self._step()
        self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        self._step()
        self._batch.delete(key)

    def __enter__(self) -> FailingBatch:
        self._batch.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._batch.__exit__(*exc)


class FailingDB:
    """The store's plyvel DB with batches that fail at one operation (or reads that fail)."""

    def __init__(self, db: Any, fail_at: int = 0, fail_reads: bool = False) -> None:
        self._db = db
        self.fail_at = fail_at
        self.fail_reads = fail_reads
        self.batch_kwargs: dict[str, Any] = {}

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        self._db.close()

    def get(self, key: bytes) -> bytes | None:
        if self.fail_reads:
            raise plyvel.IOError("IO error: read failed")
        return self._db.get(key)

    def write_batch(self, **kwargs: Any) -> FailingBatch:
        self.batch_kwargs = kwargs
        return FailingBatch(self._db.write_batch(**kwargs), self.fail_at)


# commit_block(BLOCK1) does 4 + 2 (tx locations) + 3 (state) = 9 puts and deletes.
BLOCK1_OPS = 4 + len(BLOCK1.txs) + len(WRITES1)


@pytest.mark.parametrize("fail_at", range(1, BLOCK1_OPS + 1))
def test_a_failed_write_commits_nothing_and_stops_the_store(
    path: str, store: BlockStore, fail_at: int
) -> None:
    """A LevelDB error at any put of the batch: StoreError, nothing visible, no more writes."""
    store.close()
    before = raw_contents(path)
    store = BlockStore(path)
    failing = FailingDB(store._db, fail_at=fail_at)
    store._db = failing
    with pytest.raises(StoreError, match="nothing was committed"):
        commit_block1(store)
    assert failing.batch_kwargs == {"transaction": True, "sync": True}
    assert store.head() == HEAD0 and store.get_block(1) is None
    assert store.get_state(b"acct-1") == b"one"  # the deletion did not happen either
    # The store refuses every later write, even one that would succeed.
    failing.fail_at = 0
    with pytest.raises(StoreError, match="earlier write failure"):
        commit_block1(store)
    with pytest.raises(StoreError, match="earlier write failure"):
        store.init_genesis(MARK, GENESIS_WRITES, HEAD0)
    store.close()
    assert raw_contents(path) == before


def test_an_exception_inside_the_batch_writes_nothing(path: str, store: BlockStore) -> None:
    """A value that is not bytes makes batch.put raise mid-batch: the batch is discarded.

    Without `transaction=True`, plyvel would write the puts made before the error.
    """
    store.close()
    before = raw_contents(path)
    store = BlockStore(path)
    bad_writes = {b"acct-2": b"two-b", b"acct-4": 5}  # a bug upstream: not bytes
    with pytest.raises(TypeError):
        commit_block1(store, bad_writes)
    assert store.head() == HEAD0 and store.get_block(1) is None
    store.close()
    assert raw_contents(path) == before


def test_a_failed_read_is_a_store_error(store: BlockStore) -> None:
    commit_block1(store)
    store._db = FailingDB(store._db, fail_reads=True)
    store._recent_blocks.clear()  # make get_block reach the database
    for read in (lambda: store.head(), lambda: store.get_block(1),
                 lambda: store.get_state(b"v"), lambda: store.get_height_by_hash(bytes(32))):
        with pytest.raises(StoreError, match="read failed"):
            read()


def test_opening_a_locked_store_is_a_store_error(path: str, store: BlockStore) -> None:
    """A second node on the same data directory gets StoreError (LevelDB's lock)."""
    with pytest.raises(StoreError, match="cannot open store"):
        BlockStore(path)


def test_a_closed_store_raises_store_error(store: BlockStore) -> None:
    store.close()
    with pytest.raises(StoreError):
        commit_block1(store)
    with pytest.raises(StoreError):
        store.head()


# --- corruption ------------------------------------------------------------------------


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


CORRUPTIONS = [
    ("block", P_BLOCK + _h(1), lambda s: s.get_block(1)),
    ("commit", P_COMMIT + _h(1), lambda s: s.get_commit(1)),
    ("head", HEAD_KEY, lambda s: s.head()),
    ("genesis-mark", GENESIS_KEY, lambda s: s.genesis_mark()),
    ("tx-location", P_TX + tx_hash(BLOCK1.txs[0]), lambda s: s.get_tx_location(
        tx_hash(BLOCK1.txs[0]))),
]


@pytest.mark.parametrize("junk", [b"junk", b"", encode(Lock(amount=1, release_height=2))],
                         ids=["garbage", "empty", "other-record"])
@pytest.mark.parametrize(("key", "read"), [row[1:] for row in CORRUPTIONS],
                         ids=[row[0] for row in CORRUPTIONS])
def test_a_corrupt_entry_is_store_corrupted(path: str, store: BlockStore, key: bytes,
                                            read: Any, junk: bytes) -> None:
    """An entry that does not decode as its record raises StoreCorrupted (a StoreError)."""
    commit_block1(store)
    store.close()
    db = plyvel.DB(path)
    db.put(key, junk)
    db.close()
    reopened = BlockStore(path)
    try:
        with pytest.raises(StoreCorrupted, match="corrupt"):
            read(reopened)
    finally:
        reopened.close()


def test_a_corrupt_height_index_is_store_corrupted(path: str, store: BlockStore) -> None:
    commit_block1(store)
    store.close()
    db = plyvel.DB(path)
    db.put(P_HASH + block_hash(BLOCK1), b"\x01\x02\x03")
    db.close()
    reopened = BlockStore(path)
    try:
        with pytest.raises(StoreCorrupted):
            reopened.get_height_by_hash(block_hash(BLOCK1))
    finally:
        reopened.close()


def test_state_keys_are_prefixed(path: str, store: BlockStore) -> None:
    """State values live under the S prefix, so a state key can't shadow a block or meta key."""
    store.close()
    contents = raw_contents(path)
    for key, value in GENESIS_WRITES.items():
        assert contents[P_STATE + key] == value
        assert key not in contents


def test_init_genesis_refuses_an_initialised_store(store: BlockStore) -> None:
    """Re-initialising would reset the head to height 0 over existing blocks."""
    commit_block1(store)
    with pytest.raises(StoreError, match="already initialised"):
        store.init_genesis(MARK, {}, HEAD0)
    assert store.head().height == 1


def test_recent_blocks_are_served_unchanged(path: str, store: BlockStore) -> None:
    """The decoded-block cache returns what the database holds."""
    commit_block1(store)
    cached = store.get_block(1)
    store.close()
    reopened = BlockStore(path)
    try:
        assert reopened.get_block(1) == cached
    finally:
        reopened.close()


def test_iter_state_lists_committed_state_under_a_prefix_in_key_order(store: BlockStore) -> None:
    """Only state keys (prefix stripped) under the prefix, after deletions, in key order."""
    assert list(store.iter_state(b"acct-")) == [(b"acct-1", b"one"), (b"acct-2", b"two")]
    commit_block1(store)
    assert list(store.iter_state(b"acct-")) == [(b"acct-2", b"two-b"), (b"acct-3", b"three")]
    assert list(store.iter_state(b"acct-3")) == [(b"acct-3", b"three")]
    assert list(store.iter_state(b"nothing")) == []
    assert [k for k, _ in store.iter_state(b"")] == [b"acct-2", b"acct-3", b"v"]


def test_iter_state_on_a_closed_store_is_a_store_error(store: BlockStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="read failed"):
        list(store.iter_state(b"acct-"))
