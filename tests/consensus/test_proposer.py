"""Proposer selection: CometBFT's weighted round robin, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.codec import decode, encode
from chain.records import Validator, ValidatorSet
from chain.state import PROPOSER_PRIORITIES_KEY, State
from consensus.proposer import (
    INT64_MAX,
    INT64_MIN,
    MAX_TOTAL_VOTING_POWER,
    PRIORITY_BIAS,
    ProposerPriorities,
    carry_priorities,
    centre_priorities,
    get_proposer_priorities,
    initial_priorities,
    next_priorities,
    normalise_priorities,
    proposer_at,
    proposer_of_height,
    rescale_priorities,
    set_proposer_priorities,
    step_priorities,
)
from consensus.validators import init_validator_state


def address(i: int) -> bytes:
    return bytes([i]) * 20


def validator(i: int, power: int) -> Validator:
    return Validator(address=address(i), public_key=bytes([i]) * 32, power=power,
                     operator=address(i))


def vset_of(*powers: int) -> ValidatorSet:
    """Validators 1, 2, ... (addresses in that order) with these powers."""
    return ValidatorSet(validators=tuple(validator(i + 1, p) for i, p in enumerate(powers)))


A, B, C = address(1), address(2), address(3)
ABC = vset_of(1, 2, 3)  # total power 6

# Hand-computed from zero: +power each, the highest (ties: lowest address) -= 6.
# step  raised        elected  after
#  1    ( 1,  2, 3)   C        ( 1,  2, -3)
#  2    ( 2,  4, 0)   B        ( 2, -2,  0)
#  3    ( 3,  0, 3)   A (tie)  (-3,  0,  3)
#  4    (-2,  2, 6)   C        (-2,  2,  0)
#  5    (-1,  4, 3)   B        (-1, -2,  3)
#  6    ( 0,  0, 6)   C        ( 0,  0,  0)
ABC_STEPS = [
    (C, (1, 2, -3)),
    (B, (2, -2, 0)),
    (A, (-3, 0, 3)),
    (C, (-2, 2, 0)),
    (B, (-1, -2, 3)),
    (C, (0, 0, 0)),
]


def test_hand_computed_sequence_by_round() -> None:
    start = (0, 0, 0)
    assert [proposer_at(ABC, start, r) for r in range(6)] == [p for p, _ in ABC_STEPS]


def test_hand_computed_sequence_by_height() -> None:
    """Round-0 proposers of successive heights follow the same sequence."""
    priorities = (0, 0, 0)
    for want_proposer, want_after in ABC_STEPS:
        assert proposer_at(ABC, priorities, 0) == want_proposer
        priorities = next_priorities(ABC, priorities)
        assert priorities == want_after


def test_round_r_continues_from_the_height_start() -> None:
    """Round r at a height whose start is step k's result is step k + r + 1's proposer."""
    _, after_two = ABC_STEPS[1]
    assert [proposer_at(ABC, after_two, r) for r in range(4)] == [A, C, B, C]


RESCALE_TABLE = [
    # (priorities, window, expected): divide by ceil(diff / window), truncating toward 0
    ((-100, 100), 20, (-10, 10)),
    ((-15, 16), 20, (-7, 8)),  # ratio 2: -7.5 truncates to -7 (floor would be -8)
    ((-20, 0, 20), 40, (-20, 0, 20)),  # diff == window: unchanged
    ((-41, 0, 0), 40, (-20, 0, 0)),
    ((5, 5, 5), 2, (5, 5, 5)),
]


@pytest.mark.parametrize(("priorities", "window", "expected"), RESCALE_TABLE)
def test_rescale_table(priorities: tuple, window: int, expected: tuple) -> None:
    assert rescale_priorities(priorities, window) == expected


CENTRE_TABLE = [
    ((-3, 0, 0), (-2, 1, 1)),  # average -1
    ((-4, 0, 0), (-2, 2, 2)),  # floor(-4/3) = -2 (truncation would be -1)
    ((4, 0, 0), (3, -1, -1)),  # floor(4/3) = 1
    ((7, -7), (7, -7)),
]


@pytest.mark.parametrize(("priorities", "expected"), CENTRE_TABLE)
def test_centre_table(priorities: tuple, expected: tuple) -> None:
    assert centre_priorities(priorities) == expected


def test_joining_and_leaving_validators() -> None:
    """A (10) stays, B (10) leaves, C (20) joins: C starts at -1.125 x 40 (total after the
    update, before B's removal) = -45; then centring on the average -20."""
    old = ValidatorSet(validators=(validator(1, 10), validator(2, 10)))
    new = ValidatorSet(validators=(validator(1, 10), validator(3, 20)))
    assert carry_priorities(old, (5, -5), new) == (25, -25)


def test_a_validator_keeps_its_priority_when_its_power_changes() -> None:
    old = ValidatorSet(validators=(validator(1, 10), validator(2, 10)))
    new = ValidatorSet(validators=(validator(1, 30), validator(2, 10)))
    assert carry_priorities(old, (6, -6), new) == (6, -6)


def test_genesis_priorities_are_zero() -> None:
    assert initial_priorities(vset_of(5, 1, 9, 9)) == (0, 0, 0, 0)


@pytest.mark.parametrize(("vset", "priorities", "message"), [
    (ValidatorSet(validators=()), (), "empty validator set"),
    (ABC, (0, 0), "2 priorities for 3 validators"),
    (vset_of(MAX_TOTAL_VOTING_POWER, 1), (0, 0), "total power"),
    (ABC, (INT64_MAX + 1, 0, 0), "outside int64"),
])
def test_refuses_what_cannot_elect(vset: ValidatorSet, priorities: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        proposer_at(vset, priorities, 0)
    with pytest.raises(ValueError, match=message):
        next_priorities(vset, priorities)


def test_negative_round_is_refused() -> None:
    with pytest.raises(ValueError, match="round"):
        proposer_at(ABC, (0, 0, 0), -1)


def test_priorities_round_trip_through_state_biased() -> None:
    state = State(lambda _key: None)
    values = (INT64_MIN, -1, 0, 1, INT64_MAX)
    set_proposer_priorities(state, values)
    stored = decode(ProposerPriorities, state.write_set()[PROPOSER_PRIORITIES_KEY])
    assert stored.biased == (0, PRIORITY_BIAS - 1, PRIORITY_BIAS, PRIORITY_BIAS + 1, 2**64 - 1)
    assert get_proposer_priorities(State(state.write_set().get)) == values


def test_state_without_priorities_is_refused() -> None:
    with pytest.raises(ValueError, match="no proposer priorities"):
        get_proposer_priorities(State(lambda _key: None))


def test_proposer_of_height_reads_the_current_set() -> None:
    state = State(lambda _key: None)
    init_validator_state(state, ABC)
    set_proposer_priorities(state, ABC_STEPS[1][1])
    committed = State(state.write_set().get)
    proposer_of = proposer_of_height(committed)
    assert [proposer_of(r) for r in range(4)] == [A, C, B, C]


# --- properties --------------------------------------------------------------------------

small_powers = st.lists(st.integers(1, 12), min_size=1, max_size=7)
any_powers = st.lists(st.one_of(st.integers(1, 10), st.integers(1, 10**12)),
                      min_size=1, max_size=10)


def run(vset: ValidatorSet, steps: int) -> list[tuple[bytes, tuple[int, ...]]]:
    """(round-0 proposer, priorities after) over `steps` heights from genesis."""
    priorities, out = initial_priorities(vset), []
    for _ in range(steps):
        proposer = proposer_at(vset, priorities, 0)
        priorities = next_priorities(vset, priorities)
        out.append((proposer, priorities))
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), power=st.integers(1, 10**15))
def test_equal_powers_rotate_strictly_in_address_order(n: int, power: int) -> None:
    vset = vset_of(*([power] * n))
    order = [v.address for v in vset.validators]
    assert [p for p, _ in run(vset, 3 * n)] == order * 3
    assert [proposer_at(vset, initial_priorities(vset), r) for r in range(2 * n)] == order * 2


@settings(max_examples=80, deadline=None)
@given(powers=small_powers)
def test_each_cycle_of_total_power_rounds_is_exactly_proportional(powers: list[int]) -> None:
    """From genesis, every run of T = total power heights elects each validator exactly
    `power` times, and the priorities come back to zero."""
    vset = vset_of(*powers)
    total = sum(powers)
    history = run(vset, 2 * total)
    for cycle in (history[:total], history[total:]):
        counts = [sum(1 for p, _ in cycle if p == v.address) for v in vset.validators]
        assert counts == powers
        assert cycle[-1][1] == (0,) * len(powers)


@settings(max_examples=80, deadline=None)
@given(powers=any_powers, steps=st.integers(1, 300))
def test_proposals_stay_within_two_of_the_fair_share(powers: list[int], steps: int) -> None:
    """CometBFT's bound: priorities stay centred and inside the 2 x total window, so the
    rescale never fires and after t heights |count_i x T - t x power_i| < 2T."""
    vset = vset_of(*powers)
    total = sum(powers)
    counts = dict.fromkeys((v.address for v in vset.validators), 0)
    for t, (proposer, priorities) in enumerate(run(vset, steps), start=1):
        counts[proposer] += 1
        assert max(priorities) - min(priorities) <= 2 * total
        assert sum(priorities) == 0
        for v in vset.validators:
            assert abs(counts[v.address] * total - t * v.power) < 2 * total


int64s = st.integers(INT64_MIN // 4, INT64_MAX // 4)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), powers=any_powers)
def test_normalising_bounds_any_priorities(data: st.DataObject, powers: list[int]) -> None:
    """Whatever the priorities, normalising puts them inside the window, centred (average
    in [0, 1)), is idempotent, and a step from there stays inside int64."""
    vset = vset_of(*powers)
    total = sum(powers)
    priorities = tuple(data.draw(st.lists(int64s, min_size=len(powers), max_size=len(powers))))
    normal = normalise_priorities(vset, priorities)
    assert max(normal) - min(normal) <= 2 * total
    assert 0 <= sum(normal) < len(normal)
    assert normalise_priorities(vset, normal) == normal
    after, _ = step_priorities(vset, normal)
    assert min(after) >= INT64_MIN and max(after) <= INT64_MAX


@settings(max_examples=60, deadline=None)
@given(data=st.data(), powers=any_powers, round_=st.integers(0, 30))
def test_deterministic_and_independent_of_list_order(data: st.DataObject, powers: list[int],
                                                     round_: int) -> None:
    """The proposer depends on addresses, powers and priorities, not on list positions."""
    vset = vset_of(*powers)
    priorities = tuple(data.draw(st.lists(st.integers(-10**6, 10**6), min_size=len(powers),
                                          max_size=len(powers))))
    chosen = proposer_at(vset, priorities, round_)
    assert proposer_at(vset, priorities, round_) == chosen
    order = data.draw(st.permutations(range(len(powers))))
    shuffled = ValidatorSet(validators=tuple(vset.validators[i] for i in order))
    assert proposer_at(shuffled, tuple(priorities[i] for i in order), round_) == chosen


def test_priorities_record_encodes_as_unsigned() -> None:
    record = ProposerPriorities(biased=(0, 2**64 - 1))
    assert decode(ProposerPriorities, encode(record)) == record
