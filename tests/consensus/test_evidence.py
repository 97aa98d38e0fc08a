"""Duplicate-vote evidence: every acceptance rule by table, recording, the pool, listing.

The pre-state is a chain whose validators are V0 and V1 from genesis and V2 from
height 3 (queued in block 1), with blocks 1..5 ended, so the next block is 6.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    DuplicateVoteEvidence,
    SignedVote,
    Validator,
    ValidatorSet,
    Vote,
)
from chain.signing import sign_vote, vote_signing_bytes
from chain.state import EVIDENCE_PREFIX, State
from chain.store import BlockStore, GenesisMark, Head
from consensus.errors import InvalidBlock, InvalidEvidence
from consensus.evidence import (
    CommittedEvidence,
    EvidencePool,
    Offence,
    committed_evidence,
    evidence_committed_at,
    evidence_hash,
    get_committed_evidence,
    offence_from_key,
    offence_key,
    offence_of,
    record_evidence,
    validate_block_evidence,
    validate_evidence,
)
from consensus.validators import (
    init_validator_state,
    process_validator_updates,
    queue_validator_updates,
)

CHAIN = "gannet-test"
KEYS = [SigningKey.from_seed(bytes([60 + i]) * 32) for i in range(4)]
V0, V1, V2, OUTSIDER = (address_from_public_key(k.public_key) for k in KEYS)
BLOCK_HEIGHT = 6
MAX_AGE = 4
H1, H2 = sha256(b"block-one"), sha256(b"block-two")
LOW, HIGH = sorted((H1, H2))


def validator(i: int) -> Validator:
    address = address_from_public_key(KEYS[i].public_key)
    return Validator(address=address, public_key=KEYS[i].public_key, power=100,
                     operator=address)


def pre_state_writes() -> dict[bytes, bytes]:
    state = State(lambda _key: None)
    init_validator_state(state, ValidatorSet(validators=(validator(0), validator(1))))
    writes = state.write_set()
    for height in range(1, BLOCK_HEIGHT):
        state = State(lambda key, w=writes: w.get(key) or None)
        if height == 1:
            queue_validator_updates(state, [validator(2)])
        process_validator_updates(state, height)
        writes = {**writes, **state.write_set()}
    return writes


PRE = pre_state_writes()


def pre_state() -> State:
    return State(lambda key: PRE.get(key) or None)


def vote(signer: int = 0, block_hash: bytes = LOW, height: int = 2, round_: int = 0,
         vote_type: int = VOTE_PRECOMMIT, validator: bytes | None = None,
         chain: str = CHAIN) -> SignedVote:
    v = Vote(vote_type=vote_type, height=height, round=round_, block_hash=block_hash,
             validator=validator or address_from_public_key(KEYS[signer].public_key))
    if v.validator != address_from_public_key(KEYS[signer].public_key):  # a forgery
        return SignedVote(vote=v, signature=KEYS[signer].sign(vote_signing_bytes(chain, v)))
    return sign_vote(KEYS[signer], chain, v)


def evidence(a: SignedVote | None = None, b: SignedVote | None = None) -> DuplicateVoteEvidence:
    return DuplicateVoteEvidence(vote_a=a or vote(block_hash=LOW),
                                 vote_b=b or vote(block_hash=HIGH))


def flip(signed: SignedVote) -> SignedVote:
    return replace(signed, signature=bytes([signed.signature[0] ^ 1]) + signed.signature[1:])


GOOD = evidence()


@dataclass(frozen=True)
class Row:
    name: str
    evidence: DuplicateVoteEvidence
    reason: str | None  # None: accepted
    block_height: int = BLOCK_HEIGHT


ROWS = [
    Row("precommits", GOOD, None),
    Row("prevotes", evidence(vote(vote_type=VOTE_PREVOTE, block_hash=LOW),
                             vote(vote_type=VOTE_PREVOTE, block_hash=HIGH)), None),
    Row("nil-and-block", evidence(vote(block_hash=b""), vote(block_hash=H1)), None),
    Row("later-round", evidence(vote(round_=7, block_hash=LOW), vote(round_=7, block_hash=HIGH)),
        None),
    Row("oldest-allowed", evidence(vote(height=2), vote(height=2, block_hash=HIGH)), None,
        block_height=2 + MAX_AGE),
    Row("validator-joined-at-3", evidence(vote(signer=2, height=3),
                                          vote(signer=2, height=3, block_hash=HIGH)), None),
    Row("different-validators", evidence(vote(signer=0), vote(signer=1, block_hash=HIGH)),
        "votes differ in validator"),
    Row("different-heights", evidence(vote(height=2), vote(height=3, block_hash=HIGH)),
        "votes differ in height: 2 vs 3"),
    Row("different-rounds", evidence(vote(round_=0), vote(round_=1, block_hash=HIGH)),
        "votes differ in round: 0 vs 1"),
    Row("different-types", evidence(vote(vote_type=VOTE_PREVOTE),
                                    vote(vote_type=VOTE_PRECOMMIT, block_hash=HIGH)),
        "votes differ in vote type: 1 vs 2"),
    Row("unknown-type", evidence(vote(vote_type=3), vote(vote_type=3, block_hash=HIGH)),
        "unknown vote type 3"),
    Row("same-block", evidence(vote(block_hash=LOW), vote(block_hash=LOW)),
        "votes do not conflict: same block hash"),
    Row("same-nil", evidence(vote(block_hash=b""), vote(block_hash=b"")),
        "votes do not conflict"),
    Row("not-canonical-order", evidence(vote(block_hash=HIGH), vote(block_hash=LOW)),
        "not in canonical order"),
    Row("nil-second", evidence(vote(block_hash=H1), vote(block_hash=b"")),
        "not in canonical order"),
    Row("height-of-the-block", evidence(vote(height=6), vote(height=6, block_hash=HIGH)),
        "evidence height 6 is not below block height 6"),
    Row("height-from-the-future", evidence(vote(height=9), vote(height=9, block_hash=HIGH)),
        "evidence height 9 is not below block height 6"),
    Row("too-old", evidence(vote(height=1), vote(height=1, block_hash=HIGH)),
        "evidence is too old: height 1, block height 6, max age 4"),
    Row("not-a-validator", evidence(vote(signer=3), vote(signer=3, block_hash=HIGH)),
        f"{OUTSIDER.hex()} is not a validator at height 2"),
    Row("not-yet-a-validator", evidence(vote(signer=2, height=2),
                                        vote(signer=2, height=2, block_hash=HIGH)),
        f"{V2.hex()} is not a validator at height 2"),
    Row("no-set-at-height-0", evidence(vote(height=0), vote(height=0, block_hash=HIGH)),
        f"{V0.hex()} is not a validator at height 0", block_height=2),
    Row("bad-signature-a", evidence(flip(vote(block_hash=LOW))), "vote_a signature does not"),
    Row("bad-signature-b", evidence(b=flip(vote(block_hash=HIGH))), "vote_b signature does not"),
    Row("signed-for-another-chain", evidence(vote(chain="gannet-other")),
        "vote_a signature does not verify"),
    Row("signed-by-another-key", evidence(b=vote(signer=1, validator=V0, block_hash=HIGH)),
        "vote_b signature does not verify"),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_evidence_rules(row: Row) -> None:
    state = pre_state()
    if row.reason is None:
        validate_evidence(CHAIN, state, row.evidence, row.block_height, MAX_AGE)
    else:
        with pytest.raises(InvalidEvidence) as info:
            validate_evidence(CHAIN, state, row.evidence, row.block_height, MAX_AGE)
        assert row.reason in info.value.reason
        assert isinstance(info.value, InvalidBlock)
    assert state.write_set() == {}


def test_already_committed_evidence_is_refused() -> None:
    state = pre_state()
    record_evidence(state, GOOD, 4)
    with pytest.raises(InvalidEvidence, match="offence already committed at height 4"):
        validate_evidence(CHAIN, state, GOOD, BLOCK_HEIGHT, MAX_AGE)
    # Other votes proving the same offence are refused too.
    other = evidence(vote(block_hash=b""), vote(block_hash=LOW))
    with pytest.raises(InvalidEvidence, match="already committed"):
        validate_evidence(CHAIN, state, other, BLOCK_HEIGHT, MAX_AGE)


def test_a_block_proves_each_offence_once() -> None:
    other_pair = evidence(vote(block_hash=b""), vote(block_hash=LOW))  # same offence as GOOD
    second = evidence(vote(signer=1), vote(signer=1, block_hash=HIGH))
    validate_block_evidence(CHAIN, pre_state(), (GOOD, second), BLOCK_HEIGHT, MAX_AGE)
    for pieces, index in [((GOOD, GOOD), 1), ((second, GOOD, other_pair), 2)]:
        with pytest.raises(InvalidEvidence, match="duplicate evidence of one offence") as info:
            validate_block_evidence(CHAIN, pre_state(), pieces, BLOCK_HEIGHT, MAX_AGE)
        assert info.value.index == index
        assert str(info.value).startswith(f"evidence {index} is invalid: ")


def test_block_evidence_names_the_bad_index() -> None:
    bad = evidence(vote(round_=1, block_hash=HIGH), vote(round_=1, block_hash=LOW))
    with pytest.raises(InvalidEvidence, match="evidence 1 is invalid: votes not in canonical"):
        validate_block_evidence(CHAIN, pre_state(), (GOOD, bad), BLOCK_HEIGHT, MAX_AGE)


def test_recording_writes_one_entry_per_offence() -> None:
    """Pre-state: no evidence. Post-state: the offence's key -> (commit height, hash)."""
    state = pre_state()
    record_evidence(state, GOOD, 6)
    offence = Offence(validator=V0, height=2, round=0, vote_type=VOTE_PRECOMMIT)
    entry = CommittedEvidence(committed_at=6, evidence_hash=sha256(encode(GOOD)))
    assert state.write_set() == {EVIDENCE_PREFIX + offence_key(offence): encode(entry)}
    assert offence_of(GOOD) == offence
    assert get_committed_evidence(state, offence) == entry
    assert evidence_committed_at(state, offence) == 6
    assert evidence_committed_at(state, replace(offence, round=1)) is None


def test_offence_keys_round_trip() -> None:
    offence = Offence(validator=V1, height=2**40 + 3, round=2**31, vote_type=VOTE_PREVOTE)
    key = offence_key(offence)
    assert len(key) == 33 and key.startswith(V1)
    assert offence_from_key(key) == offence
    with pytest.raises(ValueError, match="33 bytes"):
        offence_from_key(key[:-1])


# --- listing committed evidence from the store -------------------------------------------


def test_committed_evidence_lists_from_the_store(tmp_path: Path) -> None:
    state = pre_state()
    later = evidence(vote(height=3, block_hash=LOW), vote(height=3, block_hash=HIGH))
    of_v1 = evidence(vote(signer=1), vote(signer=1, block_hash=HIGH))
    for piece in (later, GOOD, of_v1):
        record_evidence(state, piece, 6)
    store = BlockStore(str(tmp_path / "db"))
    try:
        head = Head(height=0, block_hash=bytes(32), time_ms=0, app_hash=bytes(32),
                    results_hash=bytes(32))
        store.init_genesis(GenesisMark(genesis_hash=bytes(32), app_hash=bytes(32)),
                           {**PRE, **state.write_set()}, head)
        everything = committed_evidence(store.iter_state)
        mine = committed_evidence(store.iter_state, V0)
    finally:
        store.close()
    entry = {p: CommittedEvidence(committed_at=6, evidence_hash=evidence_hash(p))
             for p in (later, GOOD, of_v1)}
    expected_v0 = [(offence_of(GOOD), entry[GOOD]), (offence_of(later), entry[later])]
    assert mine == expected_v0
    assert sorted(everything, key=lambda e: offence_key(e[0])) == everything
    assert set(map(tuple, everything)) == {*expected_v0, (offence_of(of_v1), entry[of_v1])}


# --- the pool ---------------------------------------------------------------------------------


def pool(max_pending: int = 100) -> EvidencePool:
    return EvidencePool(CHAIN, max_age=MAX_AGE, max_pending=max_pending)


HEAD = BLOCK_HEIGHT - 1  # the pool sees the committed state at head 5


def test_pool_validates_and_ignores_known_offences() -> None:
    p = pool()
    assert p.add(pre_state(), GOOD, HEAD) is True
    assert p.add(pre_state(), GOOD, HEAD) is False
    assert p.add(pre_state(), evidence(vote(block_hash=b""), vote(block_hash=LOW)), HEAD) is False
    with pytest.raises(InvalidEvidence, match="canonical order"):
        p.add(pre_state(), evidence(vote(round_=1, block_hash=HIGH),
                                    vote(round_=1, block_hash=LOW)), HEAD)
    assert len(p) == 1


def by_height_validator_round_type(piece: DuplicateVoteEvidence) -> tuple:
    o = offence_of(piece)
    return (o.height, o.validator, o.round, o.vote_type)


def test_pool_orders_pending_by_height_validator_round_type() -> None:
    p = pool()
    pieces = [
        evidence(vote(signer=1, height=3, round_=1), vote(signer=1, height=3, round_=1,
                                                           block_hash=HIGH)),
        evidence(vote(signer=0, height=3, round_=2), vote(signer=0, height=3, round_=2,
                                                           block_hash=HIGH)),
        evidence(vote(signer=0, height=3, round_=1, vote_type=VOTE_PRECOMMIT),
                 vote(signer=0, height=3, round_=1, vote_type=VOTE_PRECOMMIT, block_hash=HIGH)),
        evidence(vote(signer=0, height=3, round_=1, vote_type=VOTE_PREVOTE),
                 vote(signer=0, height=3, round_=1, vote_type=VOTE_PREVOTE, block_hash=HIGH)),
        evidence(vote(signer=1, height=2), vote(signer=1, height=2, block_hash=HIGH)),
    ]
    for piece in pieces:
        assert p.add(pre_state(), piece, HEAD)
    expected = tuple(sorted(pieces, key=by_height_validator_round_type))
    assert p.pending(100, BLOCK_HEIGHT) == expected
    assert p.pending(2, BLOCK_HEIGHT) == expected[:2]


def test_pool_takes_the_height_in_progress_for_the_block_after() -> None:
    """Evidence found at height 6 (in progress over head 5) waits for block 7."""
    p = pool()
    now = evidence(vote(height=6), vote(height=6, block_hash=HIGH))
    assert p.add(pre_state(), now, HEAD)
    assert p.pending(10, 6) == ()
    assert p.pending(10, 7) == (now,)
    with pytest.raises(InvalidEvidence, match="not below block height"):
        p.add(pre_state(), evidence(vote(height=7), vote(height=7, block_hash=HIGH)), HEAD)


def test_pool_forgets_committed_and_expired_evidence() -> None:
    p = pool()
    old = evidence(vote(height=2), vote(height=2, block_hash=HIGH))
    new = evidence(vote(height=4), vote(height=4, block_hash=HIGH))
    assert p.add(pre_state(), old, HEAD) and p.add(pre_state(), new, HEAD)
    p.mark_committed([new])
    assert p.pending(10, BLOCK_HEIGHT) == (old,)
    assert p.add(pre_state(), new, HEAD) is False  # committed: refused from now on
    assert p.pending(10, 2 + MAX_AGE + 1) == ()  # too old for that block
    p.prune(2 + MAX_AGE + 1)
    assert len(p) == 0


def test_pool_refuses_beyond_its_bound() -> None:
    p = pool(max_pending=1)
    assert p.add(pre_state(), GOOD, HEAD)
    assert p.add(pre_state(), evidence(vote(signer=1), vote(signer=1, block_hash=HIGH)),
                 HEAD) is False
    assert p.pending(10, BLOCK_HEIGHT) == (GOOD,)
