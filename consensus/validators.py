"""Validator sets by height: a change queued in block H takes effect at height H + 2.

State holds three sets, as CometBFT's state does: the current set (signs the
next height), the next set (signs the height after) and the updates txs queue
during the block being applied. At the end of block H:

    current(H+1) := next(H+1)          (decided at the end of H-1)
    next(H+2)    := next(H+1) + updates queued during H (power 0 removes)

so the header of H+1 carries `next_validators_hash` of the changed set and the
change signs from H+2. Every set is sorted by address.

History answers "which set signs height h" for any past height with two point
reads, as CometBFT's state store does: the set is written at the height it
takes effect (only when it changes), and every height records the height its
set took effect at. Both are written as soon as they are decided (two heights
ahead), so after block H the history covers heights 1..H+2.

Proposer priorities follow the current set: after each block they are carried
over to the new current set (a joining validator starts at CometBFT's -1.125 x
total power, a leaving one is dropped) and advanced one round-robin step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from chain.address import address_from_public_key
from chain.codec import U64, ListOf, Record, record
from chain.records import MAX_VALIDATORS, Validator, ValidatorSet
from chain.state import (
    VALIDATOR_UPDATES_KEY,
    State,
    validator_history_key,
    validators_since_key,
)
from consensus.errors import InvalidValidatorUpdate
from consensus.proposer import (
    MAX_TOTAL_VOTING_POWER,
    carry_priorities,
    get_proposer_priorities,
    initial_priorities,
    next_priorities,
    set_proposer_priorities,
)

FIRST_HEIGHT = 1


@record
class ValidatorSetSince(Record):
    """The set in effect at a height is the one that took effect at `height`."""

    height: Annotated[int, U64]


@record
class ValidatorUpdates(Record):
    """Validator updates queued during the block being applied, sorted by address.

    An update replaces the validator with its address (or adds it); power 0
    removes it. The resulting set holds at most MAX_VALIDATORS, so removals and
    additions together stay under twice that.
    """

    updates: Annotated[tuple[Validator, ...], ListOf(Validator, 2 * MAX_VALIDATORS)]


# --- genesis -----------------------------------------------------------------------


def init_validator_state(state: State, vset: ValidatorSet) -> None:
    """Write the genesis validator state: `vset` signs heights 1 and 2.

    Current and next set, zero start priorities, the history entry for height 1
    and the since-pointers of heights 1 and 2.
    """
    vset = sorted_set(vset.validators)
    validate_validator_set(vset)
    state.set_validator_set(vset)
    state.set_next_validator_set(vset)
    set_proposer_priorities(state, initial_priorities(vset))
    state.put(validator_history_key(FIRST_HEIGHT), vset)
    state.put(validators_since_key(FIRST_HEIGHT), ValidatorSetSince(height=FIRST_HEIGHT))
    state.put(validators_since_key(FIRST_HEIGHT + 1), ValidatorSetSince(height=FIRST_HEIGHT))


# --- queueing updates (called by txs) ----------------------------------------------


def queue_validator_updates(state: State, updates: Iterable[Validator]) -> None:
    """Queue updates to take effect two heights after the current block.

    A later update of one address replaces an earlier one of the same block.
    Raises `InvalidValidatorUpdate` (and queues nothing) if an update's address
    is not its key's, removes a validator that is not in the next set, or the
    resulting set would be empty, too large or too powerful. Call it inside a
    tx: a failed tx's rollback drops what it queued.
    """
    upcoming = state.get_next_validator_set()
    members = {v.address for v in upcoming.validators}
    queued = {u.address: u for u in get_queued_updates(state)}
    for update in updates:
        if update.address != address_from_public_key(update.public_key):
            raise InvalidValidatorUpdate(
                f"validator address {update.address.hex()} is not derived from its key")
        if update.power == 0 and update.address not in members:
            # Removing a validator this block added cancels the addition.
            if queued.pop(update.address, None) is None:
                raise InvalidValidatorUpdate(
                    f"cannot remove {update.address.hex()}: not in the next validator set")
            continue
        queued[update.address] = update
    ordered = tuple(queued[a] for a in sorted(queued))
    validate_validator_set(apply_updates(upcoming, ordered))
    if ordered or get_queued_updates(state):
        state.put(VALIDATOR_UPDATES_KEY, ValidatorUpdates(updates=ordered) if ordered else None)


def get_queued_updates(state: State) -> tuple[Validator, ...]:
    """Updates queued so far in the block being applied."""
    queued = state.get(VALIDATOR_UPDATES_KEY, ValidatorUpdates)
    return () if queued is None else queued.updates


def apply_updates(vset: ValidatorSet, updates: tuple[Validator, ...]) -> ValidatorSet:
    """`vset` with `updates` applied (power 0 removes), sorted by address.

    Raises `InvalidValidatorUpdate` when an update removes an absent validator.
    """
    members = {v.address: v for v in vset.validators}
    for update in updates:
        if update.power > 0:
            members[update.address] = update
        elif members.pop(update.address, None) is None:
            raise InvalidValidatorUpdate(
                f"cannot remove {update.address.hex()}: not in the next validator set")
    return sorted_set(members.values())


def validate_validator_set(vset: ValidatorSet) -> None:
    """Raise `InvalidValidatorUpdate` unless `vset` can run consensus."""
    if not vset.validators:
        raise InvalidValidatorUpdate("the validator set would be empty")
    if len(vset.validators) > MAX_VALIDATORS:
        raise InvalidValidatorUpdate(
            f"{len(vset.validators)} validators exceed the limit of {MAX_VALIDATORS}")
    total = sum(v.power for v in vset.validators)
    if total > MAX_TOTAL_VOTING_POWER:
        raise InvalidValidatorUpdate(
            f"total power {total} exceeds the limit of {MAX_TOTAL_VOTING_POWER}")


def sorted_set(validators: Iterable[Validator]) -> ValidatorSet:
    """A validator set of `validators`, sorted by address."""
    return ValidatorSet(validators=tuple(sorted(validators, key=lambda v: v.address)))


# --- end of block -------------------------------------------------------------------


def process_validator_updates(state: State, height: int) -> None:
    """End of block `height`: promote next to current, queue the updates into next.

    Steps: current(height+1) := next; next(height+2) := next + queued updates;
    carry the priorities over to the new current set and advance them one step;
    record which set signs height + 2; drop the queue.
    """
    current, upcoming = state.get_validator_set(), state.get_next_validator_set()
    before = get_proposer_priorities(state)
    priorities = next_priorities(upcoming, carry_priorities(current, before, upcoming))
    if upcoming != current:
        state.set_validator_set(upcoming)
    if priorities != before:
        set_proposer_priorities(state, priorities)
    queued = get_queued_updates(state)
    after = apply_updates(upcoming, queued) if queued else upcoming
    if queued:
        state.put(VALIDATOR_UPDATES_KEY, None)
    if after != upcoming:
        state.set_next_validator_set(after)
    record_history(state, height + 2, after, upcoming)


def record_history(state: State, height: int, vset: ValidatorSet,
                   previous: ValidatorSet) -> None:
    """Record that `vset` signs `height`, where `previous` signs `height - 1`.

    The set itself is written only when it differs from the previous height's.
    """
    if vset == previous:
        since = get_set_since(state, height - 1)
    else:
        since = height
        state.put(validator_history_key(height), vset)
    state.put(validators_since_key(height), ValidatorSetSince(height=since))


# --- history ------------------------------------------------------------------------


def get_set_since(state: State, height: int) -> int:
    """The height at which the set signing `height` took effect."""
    since = state.get(validators_since_key(height), ValidatorSetSince)
    if since is None:
        raise ValueError(f"no validator history for height {height}")
    return since.height


def validator_set_at(state: State, height: int) -> ValidatorSet | None:
    """The validator set that signs `height`, or None where history does not reach.

    History covers heights 1 through the last committed height + 2. Two point
    reads: the height its set took effect at, then the set written there.
    """
    since = state.get(validators_since_key(height), ValidatorSetSince)
    if since is None:
        return None
    vset = state.get(validator_history_key(since.height), ValidatorSet)
    if vset is None:
        raise ValueError(f"validator history names height {since.height}, which has no set")
    return vset
