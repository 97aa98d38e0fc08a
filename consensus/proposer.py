"""Proposer selection: CometBFT's weighted round robin over voting power.

Every validator carries a proposer priority (consensus state, aligned with the
validator set sorted by address). One step of the round robin adds each
validator's power to its priority, elects the validator with the highest
priority (a tie goes to the lowest address) and lowers the elected one's
priority by the total power. Over any run of steps each validator proposes in
proportion to its power, and a validator of equal power proposes in turn.

Before a run of steps the priorities are normalised as CometBFT's
`IncrementProposerPriority` does: rescaled so that the highest and the lowest
differ by at most `PRIORITY_WINDOW_FACTOR` x total power, then shifted so that
their average is zero. Rounding is pinned so every node computes the same:
the rescale divides by `ceil(diff / window)` truncating toward zero (Go's `/`),
and the average is the floor of sum / n (Go's `big.Int.Div` with n > 0).

A validator that joins gets CometBFT's initial priority, -1.125 x the total
power after the update counted before removals (`-(t + t >> 3)`), so it does
not jump the queue. The total power is bounded by `MAX_TOTAL_VOTING_POWER`
(int64 max / 8), which keeps every priority inside int64: the clipping
CometBFT performs never fires under that bound, so none is done here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from chain.codec import U64, ListOf, Record, record
from chain.records import MAX_VALIDATORS, ValidatorSet
from chain.state import PROPOSER_PRIORITIES_KEY, State

MAX_TOTAL_VOTING_POWER = (2**63 - 1) // 8  # CometBFT's bound; genesis enforces it too
PRIORITY_WINDOW_FACTOR = 2
PRIORITY_BIAS = 2**63  # stored priority = priority + 2**63: the codec has only unsigned ints
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@record
class ProposerPriorities(Record):
    """Proposer priorities of the current validator set, in its (address) order.

    Each entry is the signed int64 priority plus `PRIORITY_BIAS` (2**63), so the
    state entry stays an unsigned canonical integer.
    """

    biased: Annotated[tuple[int, ...], ListOf(U64, MAX_VALIDATORS)]


# --- the round robin ---------------------------------------------------------


def proposer_at(vset: ValidatorSet, priorities: tuple[int, ...], round_: int) -> bytes:
    """Address of the proposer of round `round_` at a height whose start priorities these are.

    The round robin runs `round_ + 1` steps from the normalised priorities; the
    validator elected by the last step proposes.
    """
    if round_ < 0:
        raise ValueError(f"round must not be negative, got {round_}")
    current = normalise_priorities(vset, priorities)
    for _ in range(round_):
        current, _elected = step_priorities(vset, current)
    _, elected = step_priorities(vset, current)
    return vset.validators[elected].address


def next_priorities(vset: ValidatorSet, priorities: tuple[int, ...]) -> tuple[int, ...]:
    """Priorities after a block: normalise, then one round-robin step.

    The step elects exactly the round-0 proposer (`proposer_at(vset, priorities, 0)`),
    so round-0 proposers of successive heights follow the round robin.
    """
    current, _elected = step_priorities(vset, normalise_priorities(vset, priorities))
    return current


def step_priorities(vset: ValidatorSet, priorities: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """One step: every priority += power; the highest (ties: lowest address) -= total power.

    Returns the new priorities and the index of the elected validator.
    """
    total = checked_total_power(vset, priorities)
    raised = [p + v.power for p, v in zip(priorities, vset.validators, strict=True)]
    elected = 0
    for i in range(1, len(raised)):
        if raised[i] > raised[elected] or (
                raised[i] == raised[elected]
                and vset.validators[i].address < vset.validators[elected].address):
            elected = i
    raised[elected] -= total
    return tuple(raised), elected


def normalise_priorities(vset: ValidatorSet, priorities: tuple[int, ...]) -> tuple[int, ...]:
    """Rescale into the priority window, then centre on the average (CometBFT's order)."""
    total = checked_total_power(vset, priorities)
    return centre_priorities(rescale_priorities(priorities, PRIORITY_WINDOW_FACTOR * total))


def rescale_priorities(priorities: tuple[int, ...], window: int) -> tuple[int, ...]:
    """Divide every priority by ceil(diff / window) when max - min exceeds `window`.

    Division truncates toward zero, as Go's integer division does.
    """
    if not priorities or window <= 0:
        return priorities
    diff = max(priorities) - min(priorities)
    if diff <= window:
        return priorities
    ratio = (diff + window - 1) // window
    return tuple(_div_toward_zero(p, ratio) for p in priorities)


def centre_priorities(priorities: tuple[int, ...]) -> tuple[int, ...]:
    """Subtract the average priority, rounded down (floor of sum / n)."""
    if not priorities:
        return priorities
    average = sum(priorities) // len(priorities)
    return tuple(p - average for p in priorities)


def _div_toward_zero(a: int, b: int) -> int:
    quotient = abs(a) // b
    return quotient if a >= 0 else -quotient


def checked_total_power(vset: ValidatorSet, priorities: tuple[int, ...]) -> int:
    """Total power of `vset`, after checking it can elect with these priorities.

    Raises ValueError for an empty set, priorities not aligned with the set, a
    total power above `MAX_TOTAL_VOTING_POWER` or a priority outside int64: all
    of them mean corrupt state or a caller's bug, never a peer's input.
    """
    if not vset.validators:
        raise ValueError("an empty validator set has no proposer")
    if len(priorities) != len(vset.validators):
        raise ValueError(f"{len(priorities)} priorities for {len(vset.validators)} validators")
    total = sum(v.power for v in vset.validators)
    if not 0 < total <= MAX_TOTAL_VOTING_POWER:
        raise ValueError(f"total power {total} is outside 1..{MAX_TOTAL_VOTING_POWER}")
    if min(priorities) < INT64_MIN or max(priorities) > INT64_MAX:
        raise ValueError("a proposer priority is outside int64")
    return total


# --- joining and leaving -------------------------------------------------------


def carry_priorities(old: ValidatorSet, old_priorities: tuple[int, ...],
                     new: ValidatorSet) -> tuple[int, ...]:
    """Priorities for `new` when the set changes from `old` (CometBFT's change rules).

    A validator in both sets keeps its priority (also when its power changed); a
    validator that joins starts at -1.125 x the total power counted after the
    update but before removals; a validator that left is dropped. The result is
    rescaled and centred again, as CometBFT does after applying a change set.
    """
    if len(old_priorities) != len(old.validators):
        raise ValueError(f"{len(old_priorities)} priorities for {len(old.validators)} validators")
    kept = {v.address: p for v, p in zip(old.validators, old_priorities, strict=True)}
    staying = {v.address for v in new.validators}
    removed_power = sum(v.power for v in old.validators if v.address not in staying)
    before_removals = sum(v.power for v in new.validators) + removed_power
    joining = -(before_removals + (before_removals >> 3))
    carried = tuple(kept.get(v.address, joining) for v in new.validators)
    return normalise_priorities(new, carried)


def initial_priorities(vset: ValidatorSet) -> tuple[int, ...]:
    """Start priorities of a genesis set: every validator joins an empty set (all zero)."""
    return carry_priorities(ValidatorSet(validators=()), (), vset)


# --- state ---------------------------------------------------------------------


def get_proposer_priorities(state: State) -> tuple[int, ...]:
    """The current set's start priorities for the next height (signed ints)."""
    stored = state.get(PROPOSER_PRIORITIES_KEY, ProposerPriorities)
    if stored is None:
        raise ValueError("state holds no proposer priorities (not initialised from genesis)")
    return tuple(b - PRIORITY_BIAS for b in stored.biased)


def set_proposer_priorities(state: State, priorities: tuple[int, ...]) -> None:
    """Store the current set's start priorities (biased by 2**63)."""
    state.put(PROPOSER_PRIORITIES_KEY,
              ProposerPriorities(biased=tuple(p + PRIORITY_BIAS for p in priorities)))


def proposer_of_height(state: State) -> Callable[[int], bytes]:
    """`round -> proposer address` for the next height, from the current set and priorities."""
    vset = state.get_validator_set()
    start = get_proposer_priorities(state)
    checked_total_power(vset, start)  # fail here, not in the first round's lookup
    return lambda round_: proposer_at(vset, start, round_)
