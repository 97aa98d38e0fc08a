"""The state overlay: reads through, buffers writes, journals a tx, hashes its write set."""

from __future__ import annotations

import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chain.codec import encode
from chain.hashing import sha256
from chain.records import EMPTY_ACCOUNT, Account, Validator, ValidatorSet
from chain.state import (
    VALIDATORS_KEY,
    State,
    account_key,
    next_app_hash,
    write_set_hash,
)
from tests.strategies import accounts

ALICE, BOB, CAROL = bytes([1]) * 20, bytes([2]) * 20, bytes([3]) * 20
RICH = Account(gpu=100, stable=5, nonce=2, licences=0, locks=())
VSET = ValidatorSet(validators=(
    Validator(address=ALICE, public_key=bytes(32), power=10, operator=BOB),
))


class CountingReader:
    """Committed state as a dict of encoded values, counting reads."""

    def __init__(self, values: dict[bytes, bytes]) -> None:
        self.values = dict(values)
        self.reads: list[bytes] = []

    def __call__(self, key: bytes) -> bytes | None:
        self.reads.append(key)
        return self.values.get(key)


def test_reads_through_and_caches() -> None:
    """A committed value is read once, decoded, then served from the overlay."""
    reader = CountingReader({account_key(ALICE): encode(RICH)})
    state = State(reader)
    assert state.get_account(ALICE) == RICH
    assert state.get_account(ALICE) == RICH
    assert reader.reads == [account_key(ALICE)]


def test_absent_values_read_as_defaults() -> None:
    """A missing account is the empty account; a missing validator set is empty."""
    reader = CountingReader({})
    state = State(reader)
    assert state.get_account(BOB) == EMPTY_ACCOUNT
    assert state.get_validator_set() == ValidatorSet(validators=())
    assert state.get_account(BOB) == EMPTY_ACCOUNT
    assert reader.reads == [account_key(BOB), VALIDATORS_KEY]
    assert state.write_set() == {}


def test_writes_are_buffered_not_written_through() -> None:
    """A write changes what the overlay reads, never the committed values."""
    committed = {account_key(ALICE): encode(RICH)}
    reader = CountingReader(committed)
    state = State(reader)
    poorer = Account(gpu=1, stable=0, nonce=3, licences=0, locks=())
    state.set_account(ALICE, poorer)
    state.set_validator_set(VSET)
    assert state.get_account(ALICE) == poorer
    assert state.get_validator_set() == VSET
    assert reader.values == committed
    assert reader.reads == []  # a written key is never read from below
    assert state.write_set() == {account_key(ALICE): encode(poorer), VALIDATORS_KEY: encode(VSET)}


def test_deletions_are_empty_values_in_the_write_set() -> None:
    """Setting an account to the empty account deletes it: b"" in the write set."""
    reader = CountingReader({account_key(ALICE): encode(RICH)})
    state = State(reader)
    state.set_account(ALICE, EMPTY_ACCOUNT)
    state.put(account_key(BOB), None)
    assert state.get_account(ALICE) == EMPTY_ACCOUNT
    assert state.write_set() == {account_key(ALICE): b"", account_key(BOB): b""}


def test_rollback_restores_exactly() -> None:
    """A rolled-back tx leaves reads and the write set as they were at `begin`."""
    reader = CountingReader({account_key(ALICE): encode(RICH)})
    state = State(reader)
    before = Account(gpu=7, stable=0, nonce=1, licences=0, locks=())
    state.set_account(BOB, before)
    state.begin()
    state.set_account(ALICE, EMPTY_ACCOUNT)
    state.set_account(BOB, RICH)
    state.set_account(CAROL, RICH)
    state.set_account(BOB, EMPTY_ACCOUNT)
    state.rollback()
    assert state.get_account(ALICE) == RICH
    assert state.get_account(BOB) == before
    assert state.get_account(CAROL) == EMPTY_ACCOUNT
    assert state.write_set() == {account_key(BOB): encode(before)}


def test_commit_tx_keeps_changes_and_ends_the_journal() -> None:
    """After commit_tx, a later rollback (without begin) undoes nothing."""
    state = State(CountingReader({}))
    state.begin()
    state.set_account(ALICE, RICH)
    state.commit_tx()
    state.rollback()
    assert state.get_account(ALICE) == RICH
    assert state.write_set() == {account_key(ALICE): encode(RICH)}


# --- the overlay against a dict model ------------------------------------------------

KEYS = [ALICE, BOB, CAROL]
small_accounts = st.one_of(st.just(EMPTY_ACCOUNT), st.just(RICH), accounts)


class OverlayModel(RuleBasedStateMachine):
    """Random puts, reads, begin / rollback / commit_tx, checked against plain dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.committed = {account_key(ALICE): encode(RICH), account_key(CAROL): encode(RICH)}
        self.reader = CountingReader(self.committed)
        self.state = State(self.reader)
        # The model: the current view, the pending writes, and a snapshot at `begin`.
        self.view = {a: RICH if account_key(a) in self.committed else EMPTY_ACCOUNT for a in KEYS}
        self.dirty: dict[bytes, Account | None] = {}
        self.snapshot: tuple[dict, dict] | None = None

    @rule(who=st.sampled_from(KEYS), account=small_accounts)
    def set_account(self, who: bytes, account: Account) -> None:
        self.state.set_account(who, account)
        self.view[who] = account
        self.dirty[who] = None if account == EMPTY_ACCOUNT else account

    @rule(who=st.sampled_from(KEYS))
    def read(self, who: bytes) -> None:
        assert self.state.get_account(who) == self.view[who]

    @precondition(lambda self: self.snapshot is None)
    @rule()
    def begin(self) -> None:
        self.state.begin()
        self.snapshot = (dict(self.view), dict(self.dirty))

    @precondition(lambda self: self.snapshot is not None)
    @rule()
    def rollback(self) -> None:
        self.state.rollback()
        assert self.snapshot is not None
        self.view, self.dirty = self.snapshot
        self.snapshot = None

    @precondition(lambda self: self.snapshot is not None)
    @rule()
    def commit_tx(self) -> None:
        self.state.commit_tx()
        self.snapshot = None

    @invariant()
    def write_set_matches(self) -> None:
        expected = {account_key(a): b"" if v is None else encode(v) for a, v in self.dirty.items()}
        assert self.state.write_set() == expected
        assert self.reader.values == self.committed  # nothing ever writes through


OverlayModel.TestCase.settings = settings(max_examples=150, stateful_step_count=25,
                                          deadline=None)
TestOverlayModel = OverlayModel.TestCase


# --- write-set hash and app hash -----------------------------------------------------

write_sets = st.dictionaries(st.binary(min_size=1, max_size=6), st.binary(max_size=6),
                             max_size=8)


@given(write_sets, st.randoms(use_true_random=False))
def test_write_set_hash_ignores_insertion_order(writes: dict, rnd: random.Random) -> None:
    """The hash of a write set depends on its contents, not on the order keys were written."""
    items = list(writes.items())
    rnd.shuffle(items)
    assert write_set_hash(dict(items)) == write_set_hash(writes)
    assert write_set_hash(dict(reversed(items))) == write_set_hash(writes)


def test_write_set_hash_is_hash_of_sorted_pairs() -> None:
    """H(msgpack [[key, value], ...] sorted by key), keys and values as bin."""
    writes = {b"b": b"2", b"a": b"", b"c": b"3"}
    expected = sha256(msgpack.packb([[b"a", b""], [b"b", b"2"], [b"c", b"3"]],
                                    use_bin_type=True))
    assert write_set_hash(writes) == expected
    assert write_set_hash({}) == sha256(b"\x90")


@given(write_sets, st.binary(min_size=1, max_size=6), st.binary(max_size=6))
def test_write_set_hash_sees_every_entry(writes: dict, key: bytes, value: bytes) -> None:
    """Adding, changing or deleting one entry changes the hash."""
    changed = {**writes, key: value}
    if writes.get(key) != value:
        assert write_set_hash(changed) != write_set_hash(writes)
    without = {k: v for k, v in writes.items() if k != key}
    if key in writes:
        assert write_set_hash(without) != write_set_hash(writes)


def test_deleting_differs_from_never_writing() -> None:
    """A deletion (b"") is part of the write set: it changes the app hash."""
    assert write_set_hash({b"a": b""}) != write_set_hash({})


def test_next_app_hash_chains() -> None:
    """app_hash(n) = H(app_hash(n-1) || H(sorted writes of block n))."""
    genesis = sha256(b"genesis")
    w1 = {b"a": b"1"}
    w2 = {b"a": b"", b"b": b"2"}
    h1 = next_app_hash(genesis, w1)
    h2 = next_app_hash(h1, w2)
    assert h1 == sha256(genesis + write_set_hash(w1))
    assert h2 == sha256(h1 + write_set_hash(w2))
    # The chain remembers history: the same writes on another past differ.
    assert next_app_hash(sha256(b"other"), w1) != h1
    assert next_app_hash(h1, w1) != h1  # an empty-looking step still moves the hash
    assert next_app_hash(genesis, {}) != genesis
