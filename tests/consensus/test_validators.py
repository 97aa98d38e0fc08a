"""Validator sets by height: genesis state, queued updates, the two-height rule, history.

Block scenarios run real blocks (build_block, then apply_block on a fresh copy of
the pre-state). No tx kind queues validator updates yet, so `queue` stands in
for a staking tx of the block: it queues the updates into the block's State
before the block is built or applied, exactly where a tx would have.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    MAX_VALIDATORS,
    Block,
    Commit,
    Validator,
    ValidatorSet,
    block_hash,
    validator_set_hash,
)
from chain.state import (
    NEXT_VALIDATORS_KEY,
    PROPOSER_PRIORITIES_KEY,
    VALIDATOR_UPDATES_KEY,
    VALIDATORS_KEY,
    State,
    next_app_hash,
    validator_history_key,
    validators_since_key,
)
from chain.store import Head
from chain.types import ZERO_HASH
from consensus.commit import EMPTY_COMMIT, sign_commit
from consensus.context import ChainRules
from consensus.errors import InvalidCommit, InvalidHeader, InvalidValidatorUpdate
from consensus.params import FeeParams, NetworkParams
from consensus.producer import BuiltBlock, build_block
from consensus.proposer import (
    MAX_TOTAL_VOTING_POWER,
    ProposerPriorities,
    carry_priorities,
    get_proposer_priorities,
    next_priorities,
    proposer_of_height,
)
from consensus.transition import apply_block
from consensus.validators import (
    ValidatorSetSince,
    apply_updates,
    get_queued_updates,
    init_validator_state,
    process_validator_updates,
    queue_validator_updates,
    validate_validator_set,
    validator_set_at,
)

CHAIN = "gannet-test"
MIN_FEE = 1
RULES = ChainRules(CHAIN, dataclasses.replace(NetworkParams(), fee=FeeParams(min_fee=MIN_FEE)))
KEYS = [SigningKey.from_seed(bytes([40 + i]) * 32) for i in range(6)]


def val(i: int, power: int) -> Validator:
    address = address_from_public_key(KEYS[i].public_key)
    return Validator(address=address, public_key=KEYS[i].public_key, power=power,
                     operator=address)


def vset(*members: Validator) -> ValidatorSet:
    return ValidatorSet(validators=tuple(sorted(members, key=lambda v: v.address)))


def genesis_state(vs: ValidatorSet) -> State:
    state = State(lambda _key: None)
    init_validator_state(state, vs)
    return committed(state.write_set())


def committed(writes: dict[bytes, bytes]) -> State:
    return State(lambda key: writes.get(key) or None)


G = vset(val(0, 100))


# --- genesis ------------------------------------------------------------------------------


def test_genesis_writes_current_next_priorities_and_history() -> None:
    """Pre-state: nothing. Post-state: the set signs 1 and 2; its history starts at 1."""
    unsorted = ValidatorSet(validators=(val(1, 5), val(0, 7)))
    state = State(lambda _key: None)
    init_validator_state(state, unsorted)
    sorted_ = vset(val(1, 5), val(0, 7))
    since1 = encode(ValidatorSetSince(height=1))
    assert state.write_set() == {
        VALIDATORS_KEY: encode(sorted_),
        NEXT_VALIDATORS_KEY: encode(sorted_),
        PROPOSER_PRIORITIES_KEY: encode(ProposerPriorities(biased=(2**63, 2**63))),
        validator_history_key(1): encode(sorted_),
        validators_since_key(1): since1,
        validators_since_key(2): since1,
    }
    after = committed(state.write_set())
    assert [validator_set_at(after, h) for h in (0, 1, 2, 3)] == [None, sorted_, sorted_, None]


# --- queueing ---------------------------------------------------------------------------------


def forged(v: Validator) -> Validator:
    """`v` claiming another validator's address."""
    return replace(v, address=val(5, 1).address)


QUEUE_REFUSALS = [
    ("address-not-of-key", [forged(val(1, 10))], "not derived from its key"),
    ("remove-absent", [val(1, 0)], "cannot remove"),
    ("remove-everyone", [val(0, 0)], "would be empty"),
    ("too-powerful", [val(1, MAX_TOTAL_VOTING_POWER)], "total power"),
    ("second-batch-removes-absent", [val(2, 0)], "cannot remove"),
]


@pytest.mark.parametrize(("updates", "message"), [r[1:] for r in QUEUE_REFUSALS],
                         ids=[r[0] for r in QUEUE_REFUSALS])
def test_queue_refuses_and_queues_nothing(updates: list[Validator], message: str) -> None:
    state = genesis_state(G)
    with pytest.raises(InvalidValidatorUpdate, match=message):
        queue_validator_updates(state, updates)
    assert state.write_set() == {}


def test_too_many_validators_are_refused() -> None:
    many = ValidatorSet(validators=tuple(replace(val(0, 1), address=i.to_bytes(20, "big"))
                                         for i in range(MAX_VALIDATORS + 1)))
    with pytest.raises(InvalidValidatorUpdate, match="exceed the limit"):
        validate_validator_set(many)


def test_queue_merges_by_address_in_address_order() -> None:
    state = genesis_state(G)
    queue_validator_updates(state, [val(2, 5), val(1, 3)])
    queue_validator_updates(state, [val(1, 9), val(0, 50)])  # later update of 1 wins
    assert get_queued_updates(state) == tuple(sorted((val(0, 50), val(1, 9), val(2, 5)),
                                                     key=lambda v: v.address))


def test_removing_what_the_block_added_cancels_it() -> None:
    state = genesis_state(G)
    queue_validator_updates(state, [val(1, 3)])
    queue_validator_updates(state, [val(1, 0)])
    assert get_queued_updates(state) == ()
    process_validator_updates(state, 1)
    assert state.get_next_validator_set() == G


def test_a_rolled_back_tx_queues_nothing() -> None:
    state = genesis_state(G)
    queue_validator_updates(state, [val(1, 3)])
    state.begin()
    queue_validator_updates(state, [val(2, 4)])
    state.rollback()
    assert get_queued_updates(state) == (val(1, 3),)


def test_apply_updates_adds_changes_and_removes() -> None:
    base = vset(val(0, 10), val(1, 20))
    assert apply_updates(base, (val(1, 0), val(2, 5), val(0, 11))) == vset(val(0, 11), val(2, 5))
    with pytest.raises(InvalidValidatorUpdate, match="cannot remove"):
        apply_updates(base, (val(3, 0),))


# --- end of block: the two-height rule -----------------------------------------------------


def test_end_of_block_moves_next_to_current_and_queues_into_next() -> None:
    """Pre: current = next = G. Block 1 queues +V1. Post: current(2) = G, next(3) = G+V1;
    the queue is gone; history: the new set takes effect at 3."""
    state = genesis_state(G)
    queue_validator_updates(state, [val(1, 50)])
    process_validator_updates(state, 1)
    changed = vset(val(0, 100), val(1, 50))
    writes = state.write_set()
    assert writes == {
        NEXT_VALIDATORS_KEY: encode(changed),
        VALIDATOR_UPDATES_KEY: b"",
        validator_history_key(3): encode(changed),
        validators_since_key(3): encode(ValidatorSetSince(height=3)),
    }
    after = committed({**genesis_state_writes(G), **writes})
    assert after.get_validator_set() == G
    assert [validator_set_at(after, h) for h in (1, 2, 3)] == [G, G, changed]


def genesis_state_writes(vs: ValidatorSet) -> dict[bytes, bytes]:
    state = State(lambda _key: None)
    init_validator_state(state, vs)
    return state.write_set()


@dataclass
class Node:
    """Committed writes and head of a chain under construction."""

    writes: dict[bytes, bytes]
    head: Head
    last_commit: Commit = EMPTY_COMMIT


def new_chain(vs: ValidatorSet) -> Node:
    writes = genesis_state_writes(vs)
    return Node(writes, Head(height=0, block_hash=sha256(b"genesis"), time_ms=1_000,
                             app_hash=next_app_hash(ZERO_HASH, writes), results_hash=ZERO_HASH))


def queue(state: State, updates: tuple[Validator, ...]) -> State:
    """Stand-in for a staking tx of the block: queue `updates` into its State."""
    if updates:
        queue_validator_updates(state, updates)
    return state


def key_of(address: bytes) -> SigningKey:
    return next(k for k in KEYS if address_from_public_key(k.public_key) == address)


def commit_by(signers: ValidatorSet, height: int, block_hash_: bytes) -> Commit:
    sigs = tuple(s for v in signers.validators
                 for s in sign_commit(CHAIN, key_of(v.address), v.address, height, 0,
                                      block_hash_).signatures)
    return Commit(height=height, round=0, block_hash=block_hash_, signatures=sigs)


def produce(node: Node, updates: tuple[Validator, ...] = ()) -> BuiltBlock:
    """Build the next block (queueing `updates`), replay it on a fresh pre-state, commit it
    with every validator of its height."""
    pre = committed(node.writes)
    proposer = proposer_of_height(pre)(0)
    built = build_block(queue(pre, updates), node.head, RULES, proposer,
                        node.head.time_ms + 1, node.last_commit, [])
    replay = apply_block(queue(committed(node.writes), updates), built.block, node.head, RULES)
    assert replay == built.result
    block = built.block
    height = block.header.height
    node.writes = {**node.writes, **built.result.writes}
    node.head = Head(height=height, block_hash=block_hash(block), time_ms=block.header.time_ms,
                     app_hash=built.result.app_hash, results_hash=built.result.results_hash)
    node.last_commit = commit_by(validator_set_at(committed(node.writes), height), height,
                                 node.head.block_hash)
    return built


def test_a_change_queued_at_h_is_announced_at_h_plus_1_and_signs_from_h_plus_2() -> None:
    node = new_chain(G)
    added = vset(val(0, 100), val(1, 100))
    headers = [produce(node).block.header]  # block 1
    headers.append(produce(node, (val(1, 100),)).block.header)  # block 2 queues +V1
    for _ in range(3):  # blocks 3, 4, 5
        headers.append(produce(node).block.header)
    hashes = [(h.validators_hash, h.next_validators_hash) for h in headers]
    g, a = validator_set_hash(G), validator_set_hash(added)
    assert hashes == [(g, g), (g, g), (g, a), (a, a), (a, a)]
    state = committed(node.writes)
    assert [validator_set_at(state, h) for h in range(1, 8)] == [G, G, G, added, added, added,
                                                                 added]
    assert validator_set_at(state, 8) is None  # history reaches the last height + 2
    # The set is written once, where it takes effect.
    assert state.get(validator_history_key(4), ValidatorSet) == added
    assert state.get(validator_history_key(5), ValidatorSet) is None


def test_the_parents_signers_check_the_last_commit_across_a_change() -> None:
    """Block 4 (first signed by G+V1) commits block 3, which G signed; block 5 commits block
    4, which needs +2/3 of G+V1: V0 alone (half) is not enough."""
    node = new_chain(G)
    produce(node)
    produce(node, (val(1, 100),))
    produce(node)  # block 3, signed by G
    assert {s.validator for s in node.last_commit.signatures} == {val(0, 1).address}
    produce(node)  # block 4 carries G's commit of 3; the commit of 4 is by both
    assert len(node.last_commit.signatures) == 2
    only_v0 = replace(node.last_commit, signatures=tuple(
        s for s in node.last_commit.signatures if s.validator == val(0, 1).address))
    pre = committed(node.writes)
    proposer = proposer_of_height(pre)(0)
    with pytest.raises(InvalidCommit, match="not more than 2/3"):
        build_and_apply(node, proposer, only_v0)
    build_and_apply(node, proposer, node.last_commit)


def build_and_apply(node: Node, proposer: bytes, last_commit: Commit) -> None:
    built = build_block(committed(node.writes), node.head, RULES, proposer,
                        node.head.time_ms + 1, last_commit, [])
    apply_block(committed(node.writes), built.block, node.head, RULES)


def test_headers_must_name_the_current_and_next_sets() -> None:
    node = new_chain(G)
    produce(node)
    built = produce(node, (val(1, 100),))  # block 2: next(4) changes at its end
    block3 = produce_unapplied(node)
    assert block3.header.next_validators_hash != block3.header.validators_hash
    stale = replace(block3, header=replace(block3.header,
                                           next_validators_hash=validator_set_hash(G)))
    with pytest.raises(InvalidHeader, match="wrong next validators hash"):
        apply_block(committed(node.writes), stale, node.head, RULES)
    assert built.block.header.next_validators_hash == validator_set_hash(G)


def produce_unapplied(node: Node) -> Block:
    pre = committed(node.writes)
    return build_block(pre, node.head, RULES, proposer_of_height(pre)(0),
                       node.head.time_ms + 1, node.last_commit, []).block


def test_removal_and_power_change_take_effect_two_heights_later() -> None:
    start = vset(val(0, 100), val(1, 100), val(2, 100))
    node = new_chain(start)
    produce(node, (val(0, 0), val(1, 300)))  # block 1
    produce(node)  # block 2
    produce(node)  # block 3: signed by the changed set
    state = committed(node.writes)
    changed = vset(val(1, 300), val(2, 100))
    assert [validator_set_at(state, h) for h in (1, 2, 3)] == [start, start, changed]
    assert state.get_validator_set() == changed


def test_priorities_follow_the_new_current_set() -> None:
    """At the end of block 2 the set of height 3 changes: V0's priority is carried, V1 joins at
    -1.125 x total, then one round-robin step."""
    node = new_chain(G)
    produce(node, (val(1, 100),))  # block 1 queues +V1: it signs from 3
    before = get_proposer_priorities(committed(node.writes))
    produce(node)  # block 2 ends: current(3) = G + V1
    added = vset(val(0, 100), val(1, 100))
    expected = next_priorities(added, carry_priorities(G, before, added))
    assert get_proposer_priorities(committed(node.writes)) == expected
    assert min(expected) < 0  # the newcomer waits its turn


# --- a model of the history ---------------------------------------------------------------

update_batches = st.lists(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=3), max_size=12)


@settings(max_examples=60, deadline=None)
@given(batches=update_batches)
def test_history_matches_a_model_of_the_two_height_rule(batches: list) -> None:
    """For any sequence of per-block updates, the set signing height h is the genesis set
    with every batch of blocks <= h - 2 applied; current and next agree with it."""
    writes = genesis_state_writes(G)
    model = {1: G, 2: G}
    for height, batch in enumerate(batches, start=1):
        state = committed(writes)
        for i, power in batch:
            try:
                queue_validator_updates(state, [val(i, power)])
            except InvalidValidatorUpdate:
                continue
        upcoming = model[height + 1]
        model[height + 2] = apply_updates(upcoming, get_queued_updates(state))
        process_validator_updates(state, height)
        writes = {**writes, **state.write_set()}
        after = committed(writes)
        assert after.get_validator_set() == model[height + 1]
        assert after.get_next_validator_set() == model[height + 2]
    final = committed(writes)
    for h, expected in model.items():
        assert validator_set_at(final, h) == expected
        assert expected.validators  # never empty
    assert validator_set_at(final, len(batches) + 3) is None
