"""The Tendermint engine: scenario tests (pre-state, inputs, outputs) for each rule of
Algorithm 1, message validation, and safety/liveness over the simulated network."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from chain.address import address_from_public_key
from chain.records import (
    NO_POL_ROUND,
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    STEP_PROPOSE,
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Block,
    Proposal,
    SignedProposal,
    SignedVote,
    Vote,
    block_hash,
)
from chain.signing import sign_proposal, sign_vote
from chain.types import ZERO_HASH
from consensus import engine as engine_module
from consensus.commit import validate_commit
from consensus.engine import (
    MAX_CATCHUP_ROUNDS,
    BroadcastProposal,
    BroadcastVote,
    Decide,
    Engine,
    FoundEvidence,
    Output,
    ScheduleTimeout,
    Timeout,
    TimeoutConfig,
)
from consensus.errors import (
    BadMessageSignature,
    InvalidMessage,
    MalformedProposal,
    MalformedVote,
    UnknownValidator,
    WrongProposer,
)
from consensus.votes import NIL
from tests.consensus.sim import (
    FAST_TIMEOUTS,
    SIM_CHAIN_ID,
    Behaviour,
    SimApp,
    SimNetwork,
    SimSigner,
    make_block,
    make_key,
    make_validator_set,
)

KEYS = [make_key(i) for i in range(4)]
VSET = make_validator_set(KEYS, [1, 1, 1, 1])
A, B, C, D = (v.address for v in VSET.validators)  # sorted by address
KEY_OF = {v.address: k for v in VSET.validators for k in KEYS if k.public_key == v.public_key}
OUTSIDER = make_key(99)
OUTSIDER_ADDRESS = address_from_public_key(OUTSIDER.public_key)
TIMEOUTS = TimeoutConfig()


def proposer_of(round_: int) -> bytes:
    """Round r's proposer is B, C, D, A, B, ...: A (the engine under test) proposes round 3."""
    return (B, C, D, A)[round_ % 4]


def new_engine(me: bytes | None = A, app: SimApp | None = None,
               height: int = 1) -> tuple[Engine, SimApp, list[Output]]:
    app = app or SimApp(me or b"\x00" * 20)
    signer = SimSigner(KEY_OF[me]) if me is not None else None
    engine = Engine(SIM_CHAIN_ID, app, signer, TIMEOUTS)
    return engine, app, engine.start_height(height, VSET, proposer_of)


def block(round_: int, salt: bytes = b"", height: int = 1) -> Block:
    return make_block(height, round_, proposer_of(round_), ZERO_HASH, salt)


def proposal(round_: int, blk: Block, pol_round: int = NO_POL_ROUND, by: bytes | None = None,
             height: int = 1) -> tuple[SignedProposal, Block]:
    proposer = by or proposer_of(round_)
    unsigned = Proposal(height=height, round=round_, pol_round=pol_round,
                        block_hash=block_hash(blk), proposer=proposer)
    return sign_proposal(KEY_OF.get(proposer, OUTSIDER), SIM_CHAIN_ID, unsigned), blk


def vote(by: bytes, vote_type: int, round_: int, target: bytes | Block,
         height: int = 1) -> SignedVote:
    value = block_hash(target) if isinstance(target, Block) else target
    return sign_vote(KEY_OF[by], SIM_CHAIN_ID, Vote(vote_type=vote_type, height=height,
                                                    round=round_, block_hash=value, validator=by))


def prevote(by: bytes, round_: int, target: bytes | Block, height: int = 1) -> SignedVote:
    return vote(by, VOTE_PREVOTE, round_, target, height)


def precommit(by: bytes, round_: int, target: bytes | Block, height: int = 1) -> SignedVote:
    return vote(by, VOTE_PRECOMMIT, round_, target, height)


def feed(engine: Engine, *messages: SignedVote | tuple[SignedProposal, Block]) -> list[Output]:
    out: list[Output] = []
    for message in messages:
        if isinstance(message, SignedVote):
            out.extend(engine.on_vote(message))
        else:
            out.extend(engine.on_proposal(*message))
    return out


def sent_votes(out: list[Output]) -> list[tuple[int, int, bytes]]:
    """(type, round, block hash) of each vote we broadcast."""
    return [(o.vote.vote.vote_type, o.vote.vote.round, o.vote.vote.block_hash)
            for o in out if isinstance(o, BroadcastVote)]


def scheduled(out: list[Output]) -> list[tuple[int, int, int]]:
    """(round, step, duration) of each timeout scheduled."""
    return [(o.timeout.round, o.timeout.step, o.duration_ms)
            for o in out if isinstance(o, ScheduleTimeout)]


def decisions(out: list[Output]) -> list[Decide]:
    return [o for o in out if isinstance(o, Decide)]


def lock_on(engine: Engine, round_: int, blk: Block) -> list[Output]:
    """Drive `engine` (in `round_`, step propose) to lock on `blk`: proposal and polka."""
    return feed(engine, proposal(round_, blk), prevote(B, round_, blk), prevote(C, round_, blk))


def to_next_round(engine: Engine) -> list[Output]:
    """Others precommit nil; the precommit timeout moves `engine` to the next round."""
    r = engine.round
    out = feed(engine, precommit(B, r, NIL), precommit(C, r, NIL), precommit(D, r, NIL))
    assert (r, STEP_PRECOMMIT, TIMEOUTS.duration_ms(STEP_PRECOMMIT, r)) in scheduled(out)
    return out + engine.on_timeout(Timeout(height=engine.height, round=r, step=STEP_PRECOMMIT))


# --- timeouts ---------------------------------------------------------------------------


def test_timeouts_grow_linearly_per_round() -> None:
    t = TimeoutConfig(propose_ms=10, propose_delta_ms=1, prevote_ms=20, prevote_delta_ms=2,
                      precommit_ms=30, precommit_delta_ms=3)
    assert [t.duration_ms(STEP_PROPOSE, r) for r in (0, 1, 5)] == [10, 11, 15]
    assert [t.duration_ms(STEP_PREVOTE, r) for r in (0, 1, 5)] == [20, 22, 30]
    assert [t.duration_ms(STEP_PRECOMMIT, r) for r in (0, 1, 5)] == [30, 33, 45]
    with pytest.raises(ValueError):
        t.duration_ms(4, 0)


# --- the happy path -----------------------------------------------------------------------


def test_single_validator_decides_within_start_height() -> None:
    key = make_key(0)
    vset = make_validator_set([key], [10])
    app = SimApp(vset.validators[0].address)
    engine = Engine(SIM_CHAIN_ID, app, SimSigner(key), TIMEOUTS)
    out = engine.start_height(1, vset, lambda r: vset.validators[0].address)
    kinds = [type(o) for o in out]
    assert kinds == [BroadcastProposal, BroadcastVote, BroadcastVote, Decide]
    decide = out[-1]
    assert isinstance(decide, Decide) and engine.decided
    assert decide.block == out[0].block and decide.commit.round == 0
    validate_commit(SIM_CHAIN_ID, vset, decide.commit, 1, block_hash(decide.block))
    assert app.validations == []  # our own fresh block is not re-validated
    app.head_hash = decide.commit.block_hash
    again = engine.start_height(2, vset, lambda r: vset.validators[0].address)
    assert isinstance(again[-1], Decide) and again[-1].block.header.height == 2


def test_happy_path_prevote_lock_precommit_decide() -> None:
    engine, app, out = new_engine()
    assert out == [ScheduleTimeout(Timeout(1, 0, STEP_PROPOSE), 1000)]
    v = block(0)
    assert sent_votes(feed(engine, proposal(0, v))) == [(VOTE_PREVOTE, 0, block_hash(v))]
    assert engine.step == STEP_PREVOTE
    assert feed(engine, prevote(B, 0, v)) == []
    out = feed(engine, prevote(D, 0, v))
    assert sent_votes(out) == [(VOTE_PRECOMMIT, 0, block_hash(v))]
    assert (engine.locked_round, engine.valid_round, engine.step) == (0, 0, STEP_PRECOMMIT)
    assert feed(engine, precommit(D, 0, v)) == []
    out = feed(engine, precommit(B, 0, v))
    [decide] = decisions(out)
    assert decide.block == v and engine.decided
    commit = decide.commit
    assert (commit.height, commit.round, commit.block_hash) == (1, 0, block_hash(v))
    assert [s.validator for s in commit.signatures] == sorted([A, B, D])
    validate_commit(SIM_CHAIN_ID, VSET, commit, 1, block_hash(v))
    assert app.validations == [block_hash(v)]  # asked once, however often the rules look


def test_full_node_follows_and_decides_without_signing() -> None:
    engine, _, out = new_engine(me=None)
    assert scheduled(out) == [(0, STEP_PROPOSE, 1000)]
    v = block(0)
    out = feed(engine, proposal(0, v), precommit(B, 0, v), precommit(C, 0, v))
    assert sent_votes(out) == [] and not decisions(out)
    [decide] = decisions(feed(engine, precommit(D, 0, v)))
    assert [s.validator for s in decide.commit.signatures] == sorted([B, C, D])
    assert engine.on_timeout(Timeout(1, 0, STEP_PROPOSE)) == []


def test_signer_outside_the_validator_set_only_follows() -> None:
    app = SimApp(b"\x00" * 20)
    engine = Engine(SIM_CHAIN_ID, app, SimSigner(OUTSIDER), TIMEOUTS)
    engine.start_height(1, VSET, lambda r: A if r == 0 else B)
    assert sent_votes(feed(engine, proposal(0, block(0), by=A))) == []
    assert engine.on_timeout(Timeout(1, 0, STEP_PROPOSE)) == [] and engine.step == STEP_PREVOTE


# --- timeouts and nil -------------------------------------------------------------------------


def test_propose_timeout_prevotes_nil_and_stale_timeouts_are_ignored() -> None:
    engine, _, _ = new_engine()
    for stale in (Timeout(2, 0, STEP_PROPOSE), Timeout(1, 1, STEP_PROPOSE),
                  Timeout(1, 0, STEP_PREVOTE), Timeout(1, 0, STEP_PRECOMMIT)):
        assert engine.on_timeout(stale) == []
    out = engine.on_timeout(Timeout(1, 0, STEP_PROPOSE))
    assert sent_votes(out) == [(VOTE_PREVOTE, 0, NIL)] and engine.step == STEP_PREVOTE
    assert engine.on_timeout(Timeout(1, 0, STEP_PROPOSE)) == []  # step moved on


def test_mixed_prevotes_start_the_prevote_timeout_once_then_precommit_nil() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    feed(engine, proposal(0, v))
    out = feed(engine, prevote(B, 0, NIL), prevote(C, 0, block(0, b"other")))
    assert scheduled(out) == [(0, STEP_PREVOTE, 500)]
    assert scheduled(feed(engine, prevote(D, 0, NIL))) == []  # once per round
    out = engine.on_timeout(Timeout(1, 0, STEP_PREVOTE))
    assert sent_votes(out) == [(VOTE_PRECOMMIT, 0, NIL)] and engine.locked_round == -1


def test_nil_polka_precommits_nil() -> None:
    engine, _, _ = new_engine()
    engine.on_timeout(Timeout(1, 0, STEP_PROPOSE))
    out = feed(engine, prevote(B, 0, NIL), prevote(C, 0, NIL))
    assert sent_votes(out) == [(VOTE_PRECOMMIT, 0, NIL)] and engine.step == STEP_PRECOMMIT


def test_precommit_quorum_of_anything_times_out_into_the_next_round() -> None:
    engine, _, _ = new_engine()
    out = feed(engine, precommit(B, 0, NIL), precommit(C, 0, block(0)))
    assert scheduled(out) == []
    out = feed(engine, precommit(D, 0, NIL))  # 3 of 4 precommitted, in any step
    assert scheduled(out) == [(0, STEP_PRECOMMIT, 500)]
    assert scheduled(feed(engine, precommit(A, 0, NIL))) == []
    out = engine.on_timeout(Timeout(1, 0, STEP_PRECOMMIT))
    assert (engine.round, engine.step) == (1, STEP_PROPOSE)
    assert scheduled(out) == [(1, STEP_PROPOSE, 1500)]


def test_unscheduled_precommit_timeout_is_ignored() -> None:
    engine, _, _ = new_engine()
    assert engine.on_timeout(Timeout(1, 0, STEP_PRECOMMIT)) == [] and engine.round == 0


# --- locking and the valid value -------------------------------------------------------------


def test_locked_node_prevotes_nil_for_another_value_until_a_later_polka() -> None:
    engine, _, _ = new_engine()
    v, w = block(0), block(1)
    assert sent_votes(lock_on(engine, 0, v))[-1] == (VOTE_PRECOMMIT, 0, block_hash(v))
    to_next_round(engine)
    # Round 1: a fresh proposal of another value, while we are locked on v.
    assert sent_votes(feed(engine, proposal(1, w))) == [(VOTE_PREVOTE, 1, NIL)]
    assert feed(engine, prevote(B, 1, w), prevote(D, 1, w)) == [  # no polka: 2 of 4 for w
        ScheduleTimeout(Timeout(1, 1, STEP_PREVOTE), 750)]
    assert sent_votes(engine.on_timeout(Timeout(1, 1, STEP_PREVOTE))) == [
        (VOTE_PRECOMMIT, 1, NIL)]
    assert (engine.locked_round, engine.valid_round) == (0, 0)
    to_next_round(engine)
    # Round 2 re-proposes w claiming a round-1 polka we have not seen: we wait.
    assert feed(engine, proposal(2, w, pol_round=1)) == []
    # C's round-1 prevote completes that polka, later than our lock: prevote w.
    assert sent_votes(feed(engine, prevote(C, 1, w))) == [(VOTE_PREVOTE, 2, block_hash(w))]


def test_pol_round_before_the_lock_does_not_unlock() -> None:
    engine, _, _ = new_engine()
    v, w = block(0), block(0, b"w")
    feed(engine, prevote(B, 0, w), prevote(C, 0, w), prevote(D, 0, w))  # old polka for w
    engine.on_timeout(Timeout(1, 0, STEP_PROPOSE))
    to_next_round(engine)
    lock_on(engine, 1, v)  # locked on v in round 1
    to_next_round(engine)
    out = feed(engine, proposal(2, w, pol_round=0))  # polka at 0 < locked round 1
    assert sent_votes(out) == [(VOTE_PREVOTE, 2, NIL)]
    assert (engine.locked_round, engine.valid_round) == (1, 1)


def test_locked_node_prevotes_its_locked_value_again() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    lock_on(engine, 0, v)
    to_next_round(engine)
    out = feed(engine, proposal(1, v))  # same value without pol round
    assert sent_votes(out) == [(VOTE_PREVOTE, 1, block_hash(v))]


def test_proposer_re_proposes_its_valid_value_with_its_round() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    lock_on(engine, 0, v)
    for _ in range(3):  # rounds 1 and 2 fail; A proposes round 3
        if engine.step == STEP_PROPOSE:
            engine.on_timeout(Timeout(1, engine.round, STEP_PROPOSE))
        out = to_next_round(engine)
    [broadcast] = [o for o in out if isinstance(o, BroadcastProposal)]
    assert broadcast.block == v and broadcast.proposal.proposal.pol_round == 0
    assert broadcast.proposal.proposal.round == 3 and scheduled(out) == [
        (2, STEP_PRECOMMIT, 1000)]
    # Our own proposal counts at once: we prevote it (locked on it).
    assert sent_votes(out)[-1] == (VOTE_PREVOTE, 3, block_hash(v))
    assert engine.current_proposal() == (broadcast.proposal, v)


def test_fresh_proposal_when_proposer_has_no_valid_value() -> None:
    engine, app, _ = new_engine()
    for _ in range(3):
        engine.on_timeout(Timeout(1, engine.round, STEP_PROPOSE))
        out = to_next_round(engine)
    [broadcast] = [o for o in out if isinstance(o, BroadcastProposal)]
    assert broadcast.proposal.proposal.pol_round == NO_POL_ROUND
    assert broadcast.block == app.propose_block(1, 3)
    assert scheduled(out) == [(2, STEP_PRECOMMIT, 1000)]  # no propose timeout: we proposed


def test_polka_while_precommitting_updates_valid_value_but_not_the_lock() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    engine.on_timeout(Timeout(1, 0, STEP_PROPOSE))  # no proposal yet: prevote nil
    feed(engine, prevote(B, 0, v), prevote(C, 0, v))
    engine.on_timeout(Timeout(1, 0, STEP_PREVOTE))  # precommit nil
    assert engine.step == STEP_PRECOMMIT
    out = feed(engine, proposal(0, v), prevote(D, 0, v))  # the polka completes now
    assert sent_votes(out) == []
    assert (engine.locked_round, engine.valid_round) == (-1, 0)


def test_invalid_block_gets_a_nil_prevote_and_is_never_decided() -> None:
    v = block(0)
    app = SimApp(A, invalid={block_hash(v)})
    engine, _, _ = new_engine(app=app)
    assert sent_votes(feed(engine, proposal(0, v))) == [(VOTE_PREVOTE, 0, NIL)]
    out = feed(engine, prevote(B, 0, v), prevote(C, 0, v), precommit(B, 0, v),
               precommit(C, 0, v), precommit(D, 0, v))
    assert not decisions(out) and engine.locked_round == -1
    assert app.validations == [block_hash(v)]


# --- deciding -----------------------------------------------------------------------------------


def test_decides_an_earlier_round_while_in_a_later_one() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    feed(engine, proposal(0, v), prevote(B, 0, NIL), prevote(C, 0, NIL))
    engine.on_timeout(Timeout(1, 0, STEP_PREVOTE))
    feed(engine, precommit(B, 1, NIL), precommit(C, 1, NIL))  # f+1 in round 1: go there
    assert engine.round == 1
    out = feed(engine, precommit(B, 0, v), precommit(C, 0, v), precommit(D, 0, v))
    [decide] = decisions(out)
    assert decide.commit.round == 0 and decide.block == v and engine.round == 1
    assert [s.validator for s in decide.commit.signatures] == sorted([B, C, D])


def test_after_deciding_the_engine_waits_and_keeps_counting_precommits() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    lock_on(engine, 0, v)
    [decide] = decisions(feed(engine, precommit(B, 0, v), precommit(C, 0, v)))
    assert len(decide.commit.signatures) == 3
    assert feed(engine, precommit(D, 0, v)) == []
    assert len([s for s in engine.votes_at(0) if s.vote.vote_type == VOTE_PRECOMMIT]) == 4
    assert engine.on_timeout(Timeout(1, 0, STEP_PRECOMMIT)) == []
    assert feed(engine, prevote(B, 5, NIL), prevote(C, 5, NIL)) == [] and engine.round == 0
    assert engine.decided and engine.height == 1


def test_commit_for_an_equivocating_proposers_other_block_is_decided() -> None:
    engine, _, _ = new_engine()
    v, v2 = block(0), block(0, b"evil")
    feed(engine, proposal(0, v))  # we hold v for round 0
    out = feed(engine, precommit(B, 0, v2), precommit(C, 0, v2), precommit(D, 0, v2))
    assert not decisions(out)  # 3/4 precommitted v2, whose block we lack
    [decide] = decisions(feed(engine, proposal(0, v2)))
    assert decide.block == v2
    other, _, _ = new_engine()
    feed(other, proposal(0, v))
    assert feed(other, proposal(0, v2)) == []  # without f+1 precommits: ignored
    assert other.current_proposal()[1] == v


# --- round skip ---------------------------------------------------------------------------------


def test_f_plus_one_messages_from_a_higher_round_start_that_round() -> None:
    engine, _, _ = new_engine()
    assert feed(engine, prevote(B, 5, NIL)) == [] and engine.round == 0
    out = feed(engine, precommit(C, 5, NIL))  # B and C: 2 of 4 > 1/3
    assert engine.round == 5 and scheduled(out) == [(5, STEP_PROPOSE, 3500)]


def test_round_skip_counts_power_and_proposals() -> None:
    keys = [make_key(i) for i in range(4)]
    vset = make_validator_set(keys, [1, 1, 2, 6])  # total 10: f+1 needs 4
    by_power = {v.power: v for v in vset.validators if v.power != 1}
    ones = [v for v in vset.validators if v.power == 1]
    key_of = {v.address: k for v in vset.validators for k in keys if k.public_key == v.public_key}
    me = ones[0].address
    engine = Engine(SIM_CHAIN_ID, SimApp(me), SimSigner(key_of[me]), TIMEOUTS)
    engine.start_height(1, vset, lambda r: by_power[2].address)
    two = by_power[2].address
    signed = sign_vote(key_of[two], SIM_CHAIN_ID, Vote(VOTE_PREVOTE, 1, 3, NIL, two))
    assert engine.on_vote(signed) == [] and engine.round == 0  # 2 of 10
    blk = make_block(1, 3, two, ZERO_HASH)
    prop = sign_proposal(key_of[two], SIM_CHAIN_ID, Proposal(1, 3, NO_POL_ROUND,
                                                             block_hash(blk), two))
    assert engine.on_proposal(prop, blk) == [] and engine.round == 0  # still 2: same sender
    other = ones[1].address
    signed = sign_vote(key_of[other], SIM_CHAIN_ID, Vote(VOTE_PRECOMMIT, 1, 3, NIL, other))
    out = engine.on_vote(signed)  # 3 of 10: not more than 1/3
    assert engine.round == 0 and out == []
    six = by_power[6].address
    out = engine.on_vote(sign_vote(key_of[six], SIM_CHAIN_ID, Vote(VOTE_PREVOTE, 1, 4, NIL, six)))
    assert engine.round == 4  # 6 of 10 in round 4
    assert scheduled(out) == [(4, STEP_PROPOSE, 3000)]


def test_far_rounds_per_validator_are_bounded() -> None:
    engine, _, _ = new_engine()
    for r in range(10, 10 + MAX_CATCHUP_ROUNDS):
        feed(engine, prevote(B, r, NIL))
    assert feed(engine, prevote(B, 100, NIL)) == []  # a third far round: dropped
    assert engine.votes_at(100) == []
    feed(engine, prevote(C, 10, NIL))  # round 10 is open to everyone: skip there
    assert engine.round == 10 and len(engine.votes_at(10)) == 2


# --- validation -----------------------------------------------------------------------------


def test_invalid_messages_raise() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    good = prevote(B, 0, v)
    forged = dataclasses.replace(good, signature=prevote(C, 0, v).signature)
    with pytest.raises(BadMessageSignature):
        engine.on_vote(forged)
    stranger = sign_vote(OUTSIDER, SIM_CHAIN_ID, Vote(VOTE_PREVOTE, 1, 0, NIL,
                                                      OUTSIDER_ADDRESS))
    with pytest.raises(UnknownValidator):
        engine.on_vote(stranger)
    bad_type = sign_vote(KEY_OF[B], SIM_CHAIN_ID, Vote(3, 1, 0, NIL, B))
    with pytest.raises(MalformedVote):
        engine.on_vote(bad_type)
    with pytest.raises(WrongProposer):
        engine.on_proposal(*proposal(0, v, by=C))
    with pytest.raises(UnknownValidator):
        engine.on_proposal(*proposal(0, v, by=OUTSIDER_ADDRESS))
    signed, _ = proposal(0, v)
    with pytest.raises(BadMessageSignature):
        engine.on_proposal(dataclasses.replace(signed, signature=bytes(64)), v)
    with pytest.raises(MalformedProposal):
        engine.on_proposal(signed, block(0, b"swapped"))
    wrong_height = block(0, height=2)
    with pytest.raises(MalformedProposal):
        engine.on_proposal(*proposal(0, wrong_height))
    with pytest.raises(MalformedProposal):
        engine.on_proposal(*proposal(1, block(1), pol_round=1))
    other_chain = Engine("another-chain", SimApp(A), SimSigner(KEY_OF[A]), TIMEOUTS)
    other_chain.start_height(1, VSET, proposer_of)
    with pytest.raises(BadMessageSignature):
        other_chain.on_vote(good)
    assert issubclass(BadMessageSignature, InvalidMessage)
    assert engine.votes_at(0) == [] and engine.current_proposal() is None


def test_duplicate_votes_are_ignored_and_conflicts_become_evidence_once() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    assert feed(engine, prevote(B, 0, v)) == []
    assert feed(engine, prevote(B, 0, v)) == []
    out = feed(engine, prevote(B, 0, NIL))
    [found] = [o for o in out if isinstance(o, FoundEvidence)]
    assert found.evidence.vote_a == prevote(B, 0, NIL)
    assert found.evidence.vote_b == prevote(B, 0, v)
    assert feed(engine, prevote(B, 0, block(0, b"third"))) == []
    assert feed(engine, prevote(B, 0, NIL)) == []
    assert engine.votes_at(0) == [prevote(B, 0, v)]


def test_past_and_far_future_heights_are_ignored_next_height_buffered() -> None:
    engine, app, _ = new_engine()
    v = block(0)
    lock_on(engine, 0, v)
    decide = decisions(feed(engine, precommit(B, 0, v), precommit(C, 0, v)))[0]
    app.head_hash = decide.commit.block_hash
    w = make_block(2, 0, proposer_of(0), app.head_hash)
    ahead = [proposal(0, w, height=2), prevote(B, 0, w, height=2), prevote(C, 0, w, height=2),
             prevote(C, 0, w, height=2), prevote(D, 0, w, height=3)]
    assert feed(engine, *ahead) == []
    forged = dataclasses.replace(prevote(D, 0, w, height=2), signature=bytes(64))
    assert feed(engine, forged) == []  # checked only once its height starts
    out = engine.start_height(2, VSET, proposer_of)
    assert sent_votes(out) == [(VOTE_PREVOTE, 0, block_hash(w)), (VOTE_PRECOMMIT, 0, block_hash(w))]
    assert engine.locked_round == 0 and engine.current_proposal()[1] == w
    assert feed(engine, prevote(B, 0, v)) == []  # height 1 is past
    assert len(engine.votes_at(0)) == 4  # B, C and our prevote, our precommit


def test_next_height_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "MAX_BUFFERED_VOTES", 2)
    monkeypatch.setattr(engine_module, "MAX_BUFFERED_PROPOSALS", 1)
    engine, _, _ = new_engine()
    w = block(0, height=2)
    feed(engine, proposal(0, w, height=2), proposal(1, block(1, height=2), height=2),
         prevote(B, 0, w, height=2), prevote(B, 0, w, height=2), prevote(C, 0, w, height=2),
         prevote(D, 0, w, height=2))
    engine.start_height(2, VSET, proposer_of)
    assert engine.current_proposal() == proposal(0, w, height=2)
    prevoters = [s.vote.validator for s in engine.votes_at(0) if s.vote.vote_type == VOTE_PREVOTE]
    assert prevoters == sorted([A, B, C])  # D's prevote did not fit in the buffer


def test_start_height_drops_buffer_of_other_heights_and_heights_only_grow() -> None:
    engine, _, _ = new_engine()
    assert feed(engine, prevote(B, 0, NIL, height=2)) == []
    engine.start_height(3, VSET, proposer_of)
    assert engine.votes_at(0) == []
    with pytest.raises(ValueError):
        engine.start_height(3, VSET, proposer_of)


def test_double_sign_refusal_sends_nothing_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    engine, _, _ = new_engine()
    engine.signer.sign_vote(Vote(VOTE_PREVOTE, 1, 0, b"\x07" * 32, A))  # signed before a crash
    caplog.set_level(logging.WARNING, logger="gannet.consensus")
    out = feed(engine, proposal(0, block(0)))
    assert out == [] and engine.step == STEP_PREVOTE
    assert "refused" in caplog.text
    assert engine.votes_at(0) == []


# --- read-only views ------------------------------------------------------------------------


def test_round_state_is_json_and_votes_at_is_ordered() -> None:
    engine, _, _ = new_engine()
    v = block(0)
    feed(engine, precommit(D, 0, NIL), prevote(C, 0, v), proposal(0, v), prevote(B, 0, v))
    state = engine.round_state()
    json.dumps(state)
    assert state["height"] == 1 and state["round"] == 0 and state["step_name"] == "precommit"
    assert state["locked_round"] == 0 and state["proposal"] == block_hash(v).hex()
    assert state["rounds"] == [{"round": 0, "prevote_power": 3, "precommit_power": 2}]
    listed = [(s.vote.vote_type, s.vote.validator) for s in engine.votes_at(0)]
    assert listed == [(VOTE_PREVOTE, x) for x in sorted([A, B, C])] + [
        (VOTE_PRECOMMIT, x) for x in sorted([A, D])]


# --- the simulated network ------------------------------------------------------------------

EVIL = Behaviour(equivocate=True, conflicting_votes="split", vote_everything=True)
SAFETY_CASES = {
    "equal": ([1, 1, 1, 1], {3: EVIL}),
    "unequal": ([1, 3, 4, 5], {2: EVIL}),  # byzantine 4 of 13 < 1/3
}


def assert_clean(net: SimNetwork) -> None:
    net.check_safety()
    for node in net.nodes:
        assert node.invalid_messages == []
    for node in net.honest_nodes():
        assert node.signer.refusals == 0


@pytest.mark.parametrize("case", sorted(SAFETY_CASES))
def test_safety_and_liveness_with_one_byzantine_across_seeds(case: str) -> None:
    powers, behaviours = SAFETY_CASES[case]
    for seed in range(60):
        net = SimNetwork(powers, seed, behaviours=behaviours, gst_ms=4000, drop_rate=0.2,
                         max_delay_ms=400, churn_ms=300 if seed % 2 else 0)
        assert net.run_heights(3, deadline_ms=300_000), f"seed {seed}: no progress after GST"
        assert_clean(net)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SAFETY_CASES))
def test_safety_and_liveness_soak(case: str) -> None:
    powers, behaviours = SAFETY_CASES[case]
    for seed in range(1000, 1600):
        net = SimNetwork(powers, seed, behaviours=behaviours, gst_ms=8000, drop_rate=0.3,
                         max_delay_ms=800, churn_ms=200 + seed % 400)
        assert net.run_heights(5, deadline_ms=600_000), f"seed {seed}: no progress after GST"
        assert_clean(net)


@pytest.mark.parametrize("powers", [[1, 1, 1, 1], [2, 3, 4, 5]])
def test_one_silent_validator_does_not_stop_the_chain(powers: list[int]) -> None:
    silent = 0  # a power-1 or power-2 validator: under 1/3
    for seed in range(5):
        net = SimNetwork(powers, seed, behaviours={silent: Behaviour(silent=True)})
        assert net.run_heights(4, deadline_ms=120_000)
        assert_clean(net)


def test_two_silent_of_four_halt_the_chain_until_they_return() -> None:
    net = SimNetwork([1, 1, 1, 1], seed=11)
    net.isolate(2, 3)
    assert not net.run(30_000, lambda: any(n.decisions for n in net.nodes))
    assert all(n.engine.height == 1 and not n.engine.decided for n in net.nodes)
    net.heal()
    assert net.run_heights(3, deadline_ms=net.now_ms + 120_000)
    assert_clean(net)


def test_double_signer_is_reported_with_canonical_evidence() -> None:
    net = SimNetwork([1, 1, 1, 1], seed=3, behaviours={1: Behaviour(conflicting_votes="all")})
    assert net.run_heights(2, deadline_ms=60_000)
    assert_clean(net)
    cheater = net.nodes[1].address
    for node in net.honest_nodes():
        assert node.evidence, f"node {node.index} found no evidence"
        slots = set()
        for evidence in node.evidence:
            a, b = evidence.vote_a.vote, evidence.vote_b.vote
            assert a.validator == b.validator == cheater
            assert (a.height, a.round, a.vote_type) == (b.height, b.round, b.vote_type)
            assert a.block_hash < b.block_hash
            slots.add((a.height, a.round, a.vote_type))
        assert len(slots) == len(node.evidence)  # once per slot


def test_replaying_a_nodes_inputs_reproduces_its_outputs() -> None:
    net = SimNetwork([1, 3, 4, 5], seed=5, behaviours={2: EVIL}, gst_ms=3000, drop_rate=0.2,
                     record=True)
    assert net.run_heights(3, deadline_ms=120_000)
    for node in net.honest_nodes():
        app = SimApp(node.address)
        engine = Engine(SIM_CHAIN_ID, app, SimSigner(node.key), FAST_TIMEOUTS)
        for kind, payload, recorded in node.journal:
            try:
                if kind == "start":
                    outputs = engine.start_height(*payload)
                elif kind == "vote":
                    outputs = engine.on_vote(payload)
                elif kind == "proposal":
                    outputs = engine.on_proposal(*payload)
                else:
                    outputs = engine.on_timeout(payload)
            except InvalidMessage as exc:
                outputs = exc
            if isinstance(recorded, InvalidMessage):
                assert type(outputs) is type(recorded) and str(outputs) == str(recorded)
                continue
            assert outputs == recorded
            for output in outputs:
                if isinstance(output, Decide):
                    app.head_hash = output.commit.block_hash
        assert len(node.journal) > 50 and engine.height == node.engine.height
