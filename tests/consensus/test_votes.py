"""Vote sets: quorum math, duplicates, conflicts and evidence, power sums."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.records import (
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    SignedVote,
    Validator,
    ValidatorSet,
    Vote,
)
from consensus.errors import MalformedVote, UnknownValidator
from consensus.votes import (
    MAX_EXTRA_VOTES,
    NIL,
    HeightVotes,
    VoteSet,
    canonical_evidence,
    has_one_third,
)

H1, H2, H3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def address(i: int) -> bytes:
    return bytes([i + 1]) * 20


def vset(powers: list[int]) -> ValidatorSet:
    return ValidatorSet(validators=tuple(
        Validator(address=address(i), public_key=bytes([i + 1]) * 32, power=p,
                  operator=address(i)) for i, p in enumerate(powers)))


def vote(i: int, block_hash: bytes, round_: int = 0, vote_type: int = VOTE_PREVOTE,
         height: int = 1) -> SignedVote:
    # Vote sets count, they do not verify: a recognisable fake signature will do.
    return SignedVote(vote=Vote(vote_type=vote_type, height=height, round=round_,
                                block_hash=block_hash, validator=address(i)),
                      signature=bytes([i + 1]) * 32 + block_hash[:1].ljust(32, b"\x00"))


def vote_set(powers: list[int]) -> VoteSet:
    return VoteSet(1, 0, VOTE_PREVOTE, vset(powers))


@pytest.mark.parametrize(("power", "total", "quorum", "one_third"), [
    (2, 4, False, True), (3, 4, True, True), (1, 4, False, False),
    (8, 13, False, True), (9, 13, True, True), (4, 13, False, False), (5, 13, False, True),
    (2, 3, False, True), (3, 3, True, True), (1, 3, False, False),
    (67, 100, True, True), (66, 100, False, True), (33, 100, False, False),
    (34, 100, False, True),
])
def test_quorum_and_one_third_thresholds(power: int, total: int, quorum: bool,
                                         one_third: bool) -> None:
    powers = [power, total - power] if total > power else [power]
    s = vote_set(powers)
    s.add(vote(0, H1))
    assert s.has_quorum_for(H1) is quorum
    assert s.has_quorum_any() is quorum
    assert has_one_third(power, total) is one_third


def test_equal_powers_need_three_of_four() -> None:
    s = vote_set([1, 1, 1, 1])
    s.add(vote(0, H1))
    s.add(vote(1, H1))
    assert not s.has_quorum_for(H1)
    s.add(vote(2, NIL))
    assert s.has_quorum_any() and not s.has_quorum_for(H1) and s.quorum_hash() is None
    s.add(vote(3, H1))
    assert s.has_quorum_for(H1) and s.quorum_hash() == H1
    assert (s.power_for(H1), s.power_for(NIL), s.voted_power) == (3, 1, 4)


def test_unequal_powers_sum_by_power_not_by_count() -> None:
    s = vote_set([1, 3, 4, 5])  # total 13: quorum needs 9
    s.add(vote(3, H1))
    s.add(vote(2, H1))
    assert s.power_for(H1) == 9 and s.has_quorum_for(H1)
    t = vote_set([1, 3, 4, 5])
    for i in (0, 1, 2):  # three of four validators, 8 of 13 power
        t.add(vote(i, H1))
    assert t.power_for(H1) == 8 and not t.has_quorum_for(H1)


def test_nil_quorum_is_a_quorum_hash() -> None:
    s = vote_set([1, 1, 1])
    for i in range(3):
        s.add(vote(i, NIL))
    assert s.quorum_hash() == NIL and s.has_quorum_for(NIL)


def test_duplicate_vote_is_ignored() -> None:
    s = vote_set([1, 1, 1, 1])
    assert s.add(vote(0, H1)).added
    again = s.add(vote(0, H1))
    assert not again.added and again.evidence is None
    assert s.voted_power == 1 and s.power_for(H1) == 1


def test_conflicting_vote_becomes_canonical_evidence_once_and_does_not_count() -> None:
    s = vote_set([1, 1, 1, 1])
    s.add(vote(0, H2))
    result = s.add(vote(0, H1))
    assert not result.added
    assert result.evidence is not None
    assert result.evidence.vote_a == vote(0, H1) and result.evidence.vote_b == vote(0, H2)
    assert s.add(vote(0, H3)).evidence is None  # once per validator and slot
    assert s.add(vote(0, NIL)).evidence is None
    assert (s.voted_power, s.power_for(H1), s.power_for(H2)) == (1, 0, 1)
    assert s.get(address(0)) == vote(0, H2)


def test_nil_sorts_first_in_evidence() -> None:
    evidence = canonical_evidence(vote(0, H1), vote(0, NIL))
    assert evidence.vote_a.vote.block_hash == NIL
    assert canonical_evidence(vote(0, NIL), vote(0, H1)) == evidence


def test_conflicting_vote_for_a_backed_value_counts_for_that_value_only() -> None:
    s = vote_set([1, 1, 1, 1])
    s.add(vote(0, H1))
    s.add(vote(1, H1))  # H1 has 2/4 > 1/3 of first-vote backing
    s.add(vote(3, NIL))
    result = s.add(vote(3, H1))
    assert result.added and result.evidence is not None
    assert s.power_for(H1) == 3 and s.has_quorum_for(H1)
    assert s.power_for(NIL) == 1
    assert s.voted_power == 3  # "any value" totals still count validator 3 once
    assert [sig.validator for sig in s.commit_signatures(H1)] == [address(0), address(1),
                                                                  address(3)]


def test_conflicting_vote_for_an_unbacked_value_does_not_count() -> None:
    s = vote_set([1, 1, 1, 1])
    s.add(vote(0, H1))
    s.add(vote(3, NIL))
    result = s.add(vote(3, H1))  # H1 has 1/4: not more than 1/3
    assert not result.added and result.evidence is not None
    assert s.power_for(H1) == 1


def test_counted_conflicting_votes_per_validator_are_bounded() -> None:
    # With first votes at most two values can each hold more than 1/3 of the power,
    # so a validator's counted conflicting votes never exceed MAX_EXTRA_VOTES.
    assert MAX_EXTRA_VOTES == 2
    s = vote_set([1] * 7)
    for i in (0, 1, 2):
        s.add(vote(i, H1))
    for i in (3, 4, 5):
        s.add(vote(i, H2))
    s.add(vote(6, NIL))
    assert [s.add(vote(6, h)).added for h in (H1, H2, H3, H1)] == [True, True, False, False]
    assert (s.power_for(H1), s.power_for(H2), s.power_for(H3), s.voted_power) == (4, 4, 0, 7)


def test_unknown_validator_and_wrong_slot_are_rejected() -> None:
    s = vote_set([1, 1])
    with pytest.raises(UnknownValidator):
        s.add(vote(5, H1))
    with pytest.raises(ValueError):
        s.add(vote(0, H1, round_=1))
    with pytest.raises(ValueError):
        s.add(vote(0, H1, vote_type=VOTE_PRECOMMIT))


def test_votes_and_commit_signatures_are_sorted_by_address() -> None:
    s = VoteSet(1, 0, VOTE_PRECOMMIT, vset([1, 1, 1, 1]))
    for i in (3, 1, 0, 2):
        s.add(vote(i, H1 if i != 2 else NIL, vote_type=VOTE_PRECOMMIT))
    assert [v.vote.validator for v in s.votes()] == [address(i) for i in range(4)]
    sigs = s.commit_signatures(H1)
    assert [c.validator for c in sigs] == [address(0), address(1), address(3)]
    assert sigs[0].signature == vote(0, H1, vote_type=VOTE_PRECOMMIT).signature


def test_height_votes_track_senders_by_round() -> None:
    hv = HeightVotes(1, vset([1, 3, 4, 5]))
    hv.add(vote(0, H1, round_=2))
    hv.add(vote(0, H1, round_=2, vote_type=VOTE_PRECOMMIT))  # same sender, counted once
    hv.note_sender(2, address(1))  # e.g. its proposal
    assert hv.sender_power(2) == 4 and not has_one_third(hv.sender_power(2), hv.total)
    hv.add(vote(2, NIL, round_=2))
    assert hv.sender_power(2) == 8 and has_one_third(8, hv.total)
    hv.add(vote(3, H2, round_=0, vote_type=VOTE_PRECOMMIT))
    assert hv.rounds() == [0, 2] and hv.has_round(2) and not hv.has_round(1)
    listed = hv.votes_at(2)
    assert [(v.vote.vote_type, v.vote.validator) for v in listed] == [
        (VOTE_PREVOTE, address(0)), (VOTE_PREVOTE, address(2)), (VOTE_PRECOMMIT, address(0))]
    with pytest.raises(UnknownValidator):
        hv.note_sender(0, address(9))
    with pytest.raises(MalformedVote):
        hv.vote_set(0, 3)
    with pytest.raises(ValueError):
        hv.add(vote(0, H1, height=2))


VALUES = [NIL, H1, H2]


@settings(max_examples=150, deadline=None)
@given(powers=st.lists(st.integers(1, 10), min_size=1, max_size=7),
       votes=st.lists(st.tuples(st.integers(0, 6), st.sampled_from(VALUES)), max_size=30))
def test_power_sums_and_evidence_match_a_simple_model(
        powers: list[int], votes: list[tuple[int, bytes]]) -> None:
    s = vote_set(powers)
    first: dict[int, bytes] = {}
    seen: dict[int, set[bytes]] = {}
    evidence = []
    for i, value in votes:
        i %= len(powers)
        result = s.add(vote(i, value))
        first.setdefault(i, value)
        seen.setdefault(i, set()).add(value)
        if result.evidence is not None:
            evidence.append(result.evidence)
            assert result.evidence.vote_a.vote.block_hash < result.evidence.vote_b.vote.block_hash
    total = sum(powers)
    assert s.voted_power == sum(powers[i] for i in first)
    for value in VALUES:
        first_power = sum(powers[i] for i, v in first.items() if v == value)
        assert first_power <= s.power_for(value) <= sum(
            powers[i] for i, vs in seen.items() if value in vs)
    assert sorted(e.vote_a.vote.validator for e in evidence) == sorted(
        address(i) for i, vs in seen.items() if len(vs) > 1)
    assert s.has_quorum_any() == (3 * s.voted_power > 2 * total)
    # Without byzantine power over 1/3 no two values reach a quorum at once.
    conflicted = sum(powers[i] for i, vs in seen.items() if len(vs) > 1)
    if 3 * conflicted < total:
        assert sum(s.has_quorum_for(v) for v in VALUES) <= 1
