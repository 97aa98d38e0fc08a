"""Slashing and liveness: what a validator loses for a double sign or for downtime.

A slash burns a fraction of the stake that was behind the validator when it
offended: its bonded tokens now (every delegator loses pro rata, shares stay),
stake that started unbonding from it at or after the offence, and stake
redelegated away from it at or after the offence (taken from the target
validator). Slashed GPU is burned from the module account holding it.

Double sign: the first committed evidence against a validator slashes it by
`slash_fraction_double_sign` and tombstones it (jailed for good); later
evidence against it changes nothing, as in Cosmos.

Liveness: each active, unjailed validator has a sliding window of its last
`signed_blocks_window` counted heights. Slot `counted % window` holds a mark
when it missed that height. Once a full window is counted and it missed more
than `window - ceil(min_signed_per_window * window)` of it, it is slashed by
`slash_fraction_downtime`, jailed for `downtime_jail_blocks` and its window
restarts empty (marks at or below `reset_height` no longer count, so none
need deleting).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from chain.codec import U64, Record, record
from chain.records import (
    Account,
    Delegation,
    DuplicateVoteEvidence,
    Lock,
    RedelegationEntry,
    RedelegationQueue,
    StakingTotals,
    StakingValidator,
    UnbondingEntry,
    UnbondingQueue,
    Unjail,
)
from chain.state import (
    REDELEGATION_PREFIX,
    STAKING_TOTALS_KEY,
    UNBONDING_PREFIX,
    State,
    delegation_key,
    module_address,
    staking_validator_key,
)
from chain.types import UINT64_MAX
from consensus import staking
from consensus.context import BlockContext, TxFailed
from consensus.evidence import offence_of
from consensus.params import Ratio
from consensus.staking import StakingBookkeepingBroken
from consensus.supply import burn
from consensus.validators import validator_set_at

SIGNING_INFO_PREFIX = b"sg"  # + validator address(20) -> SigningInfo
MISSED_MARK_PREFIX = b"sb"  # + validator address(20) + slot(8) -> MissedMark
JAILED_FOREVER = UINT64_MAX  # jailed_until of a tombstoned validator

# Unjail receipt codes (staking uses 100-149).
CODE_UNJAIL_UNKNOWN_VALIDATOR = 150
CODE_UNJAIL_NOT_OPERATOR = 151
CODE_UNJAIL_TOMBSTONED = 152
CODE_UNJAIL_NOT_JAILED = 153
CODE_UNJAIL_TOO_EARLY = 154
CODE_UNJAIL_STAKE_TOO_LOW = 155


@record
class SigningInfo(Record):
    """A validator's liveness window (state key "sg" + address).

    `start_height` is the first height of the current window, `counted` the
    heights counted since then, `missed_count` the counted heights it missed
    among the last `signed_blocks_window`. A missed mark counts only if its
    height is above `reset_height`.
    """

    start_height: Annotated[int, U64]
    counted: Annotated[int, U64]
    missed_count: Annotated[int, U64]
    reset_height: Annotated[int, U64]


@record
class MissedMark(Record):
    """A window slot's mark (state key "sb" + address + slot): the height the validator missed."""

    height: Annotated[int, U64]


# --- records ---------------------------------------------------------------------


def signing_info_key(address: bytes) -> bytes:
    """State key of a validator's signing info."""
    return SIGNING_INFO_PREFIX + address


def missed_mark_key(address: bytes, slot: int) -> bytes:
    """State key of a validator's missed mark in window slot `slot`."""
    return MISSED_MARK_PREFIX + address + slot.to_bytes(8, "big")


def get_signing_info(state: State, address: bytes) -> SigningInfo | None:
    """A validator's signing info, or None before its first counted height."""
    return state.get(signing_info_key(address), SigningInfo)


def fresh_signing_info(height: int) -> SigningInfo:
    """An empty window whose first height is `height`: no earlier mark counts."""
    return SigningInfo(start_height=height, counted=0, missed_count=0, reset_height=height - 1)


def missed_in_window(state: State, address: bytes, window: int) -> tuple[int, ...]:
    """The heights the validator missed in its current window, ascending (RPC).

    `window` is `params.staking.signed_blocks_window`; there are exactly
    `missed_count` of them.
    """
    info = get_signing_info(state, address)
    if info is None:
        return ()
    heights = []
    for slot in range(min(info.counted, window)):
        mark = state.get(missed_mark_key(address, slot), MissedMark)
        if mark is not None and mark.height > info.reset_height:
            heights.append(mark.height)
    return tuple(sorted(heights))


def _reduce_totals(state: State, bonded: int = 0, unbonding: int = 0) -> None:
    """Lower the staking totals by what a slash burned."""
    totals = staking.get_staking_totals(state)
    if bonded > totals.bonded or unbonding > totals.unbonding:
        raise StakingBookkeepingBroken(
            f"staking totals bonded {totals.bonded} unbonding {totals.unbonding} cannot lose "
            f"bonded {bonded} unbonding {unbonding}")
    state.put(STAKING_TOTALS_KEY, StakingTotals(bonded=totals.bonded - bonded,
                                                unbonding=totals.unbonding - unbonding))


def _put_validator(state: State, validator: StakingValidator) -> None:
    state.put(staking_validator_key(validator.address), validator)


# --- slashing ----------------------------------------------------------------------


def slash(state: State, ctx: BlockContext, validator_address: bytes, infraction_height: int,
          fraction: Ratio) -> int:
    """Burn `fraction` of the stake behind an offence at `infraction_height`; the GPU burned.

    In order: floor(fraction * tokens) of the validator's bonded tokens; of
    each unbonding entry created at or after the offence, floor(fraction *
    initial_balance) (at most its balance); of each redelegation away from it
    created at or after the offence, floor(fraction * initial_balance) taken
    from the delegator's stake at the target.
    """
    burned = slash_tokens(state, validator_address, fraction)
    burned += slash_unbondings(state, validator_address, infraction_height, fraction)
    burned += slash_redelegations(state, ctx, validator_address, infraction_height, fraction)
    return burned


def slash_tokens(state: State, validator_address: bytes, fraction: Ratio) -> int:
    """Burn floor(fraction * tokens) of a validator's bonded tokens (shares unchanged)."""
    validator = staking.get_validator(state, validator_address)
    if validator is None:
        raise StakingBookkeepingBroken(f"no staking record for {validator_address.hex()}")
    amount = min(fraction.floor_mul(validator.tokens), validator.tokens)
    if amount == 0:
        return 0
    _put_validator(state, dataclasses.replace(validator, tokens=validator.tokens - amount))
    _reduce_totals(state, bonded=amount)
    burn(state, module_address("bonded"), amount)
    return amount


def slash_unbondings(state: State, validator_address: bytes, infraction_height: int,
                     fraction: Ratio) -> int:
    """Burn min(floor(fraction * initial_balance), balance) of each entry since the offence."""
    queue = staking.get_unbonding_queue(state, validator_address)
    entries: list[UnbondingEntry] = []
    total = 0
    for entry in queue.entries:
        amount = 0
        if entry.creation_height >= infraction_height:
            amount = min(fraction.floor_mul(entry.initial_balance), entry.balance)
        entries.append(dataclasses.replace(entry, balance=entry.balance - amount))
        total += amount
    if total == 0:
        return 0
    state.put(UNBONDING_PREFIX + validator_address, UnbondingQueue(entries=tuple(entries)))
    _reduce_totals(state, unbonding=total)
    burn(state, module_address("unbonding"), total)
    return total


def slash_redelegations(state: State, ctx: BlockContext, validator_address: bytes,
                        infraction_height: int, fraction: Ratio) -> int:
    """Burn, for each redelegation away since the offence, its slash from the target stake.

    The entry's `shares` shrink by the shares taken, so later slashes never
    take more than the redelegation brought to the target.
    """
    queue = staking.get_redelegation_queue(state, validator_address)
    entries: list[RedelegationEntry] = []
    total = taken = 0
    for entry in queue.entries:
        shares = burned = 0
        if entry.creation_height >= infraction_height:
            amount = fraction.floor_mul(entry.initial_balance)
            shares, burned = _slash_redelegation(state, ctx, entry, amount)
        entries.append(dataclasses.replace(entry, shares=entry.shares - shares))
        total, taken = total + burned, taken + shares
    if taken:
        state.put(REDELEGATION_PREFIX + validator_address,
                  RedelegationQueue(entries=tuple(entries)))
    return total


def _slash_redelegation(state: State, ctx: BlockContext, entry: RedelegationEntry,
                        amount: int) -> tuple[int, int]:
    """Take `amount` GPU from the redelegated stake at the target: (shares removed, GPU burned).

    Shares removed = min(entry shares, delegation shares, ceil(amount * shares /
    tokens) of the target); GPU = shares removed * tokens // shares. The
    delegation's rewards are settled first, so what it earned is not lost.
    """
    target = staking.get_validator(state, entry.target)
    delegation = staking.get_delegation(state, entry.delegator, entry.target)
    if amount == 0 or target is None or delegation is None:
        return 0, 0
    if target.tokens == 0 or target.shares == 0:
        return 0, 0
    delegation = _settle_if_payable(state, ctx, entry.delegator, target, delegation)
    wanted = -(-amount * target.shares // target.tokens)
    shares = min(entry.shares, delegation.shares, wanted)
    tokens = shares * target.tokens // target.shares
    if shares == 0:
        return 0, 0
    _remove_shares(state, ctx, entry.delegator, target, delegation, shares, tokens)
    if tokens:
        _reduce_totals(state, bonded=tokens)
        burn(state, module_address("bonded"), tokens)
    return shares, tokens


def _settle_if_payable(state: State, ctx: BlockContext, delegator: bytes,
                       validator: StakingValidator, delegation: Delegation) -> Delegation:
    """Settle a delegation's rewards before a slash takes shares; the delegation after.

    Rewards are paid locked. A block rule cannot fail, so an account without
    room for one more lock keeps its rewards unsettled (the shares taken then
    lose theirs, which stay in module "rewards").
    """
    owed = staking.compute_delegation_rewards(validator, delegation)
    if owed and not _lock_fits(state.get_account(delegator), ctx):
        return delegation
    staking.settle_delegation(state, ctx, delegator, validator.address)
    settled = staking.get_delegation(state, delegator, validator.address)
    assert settled is not None
    return settled


def _lock_fits(account: Account, ctx: BlockContext) -> bool:
    """Whether a reward paid now can be locked in `account` (as `staking.pay_locked_reward`)."""
    lock = Lock(amount=1, release_height=staking.compute_reward_release(ctx))
    merged = staking.compute_merged_locks((*account.locks, lock), ctx.height)
    return len(merged) <= staking.MAX_LOCKS


def _remove_shares(state: State, ctx: BlockContext, delegator: bytes,
                   target: StakingValidator, delegation: Delegation, shares: int,
                   tokens: int) -> None:
    """Remove `shares` (worth `tokens`) from a delegation and its validator.

    An emptied delegation is deleted; an operator whose own stake falls below
    `min_validator_stake` gets its validator jailed, as when it undelegates.
    """
    left = delegation.shares - shares
    state.put(delegation_key(delegator, target.address),
              dataclasses.replace(delegation, shares=left) if left else None)
    target = dataclasses.replace(target, shares=target.shares - shares,
                                 tokens=target.tokens - tokens)
    minimum = ctx.params.staking.min_validator_stake
    own_too_low = staking.delegation_tokens(target, left) < minimum
    if delegator == target.operator and not target.jailed and own_too_low:
        target = dataclasses.replace(target, jailed=1, jailed_until=ctx.height)
    _put_validator(state, target)


# --- double sign ------------------------------------------------------------------


def handle_evidence(state: State, ctx: BlockContext,
                    evidence: tuple[DuplicateVoteEvidence, ...]) -> None:
    """Slash and tombstone each validator the evidence convicts, once per validator.

    A validator without a staking record, or already tombstoned, is skipped.
    """
    fraction = ctx.params.staking.slash_fraction_double_sign
    for piece in evidence:
        offence = offence_of(piece)
        validator = staking.get_validator(state, offence.validator)
        if validator is None or validator.tombstoned:
            continue
        slash(state, ctx, offence.validator, offence.height, fraction)
        validator = staking.get_validator(state, offence.validator)
        assert validator is not None
        _put_validator(state, dataclasses.replace(
            validator, tombstoned=1, jailed=1, jailed_until=JAILED_FOREVER))


# --- liveness --------------------------------------------------------------------


def compute_max_missed(window: int, min_signed: Ratio) -> int:
    """The most heights of a full window a validator may miss: window - ceil(min_signed*window)."""
    return window - -(-window * min_signed.num // min_signed.den)


def process_liveness(state: State, ctx: BlockContext, signers: frozenset[bytes] | None) -> None:
    """Count the parent height for every unjailed validator of its set, in set order.

    `signers` are the validators in the parent's commit (None at the first
    height, which has no parent to count).
    """
    if signers is None or ctx.height < ctx.first_height + 1:
        return
    parent = ctx.height - 1
    vset = validator_set_at(state, parent)
    if vset is None:
        return
    for member in vset.validators:
        validator = staking.get_validator(state, member.address)
        if validator is None or validator.jailed:
            continue
        count_height(state, ctx, member.address, member.address in signers)


def count_height(state: State, ctx: BlockContext, address: bytes, signed: bool) -> None:
    """Count the parent height in a validator's window; slash and jail it when it is down.

    The slot's old mark stops counting (if above reset_height); a missed
    height writes a new mark, a signed one clears the slot.
    """
    params = ctx.params.staking
    window, parent = params.signed_blocks_window, ctx.height - 1
    info = get_signing_info(state, address) or fresh_signing_info(parent)
    key = missed_mark_key(address, info.counted % window)
    old = state.get(key, MissedMark)
    missed = info.missed_count
    if old is not None and old.height > info.reset_height:
        missed -= 1
    if not signed:
        state.put(key, MissedMark(height=parent))
        missed += 1
    elif old is not None:
        state.put(key, None)
    info = dataclasses.replace(info, counted=info.counted + 1, missed_count=missed)
    if info.counted >= window and missed > compute_max_missed(window, params.min_signed_per_window):
        jail_for_downtime(state, ctx, address)
        info = fresh_signing_info(ctx.height)
    state.put(signing_info_key(address), info)


def jail_for_downtime(state: State, ctx: BlockContext, address: bytes) -> None:
    """Slash a validator for missing the parent height's window and jail it for a while."""
    params = ctx.params.staking
    slash(state, ctx, address, ctx.height - 1, params.slash_fraction_downtime)
    validator = staking.get_validator(state, address)
    assert validator is not None
    until = min(ctx.height + params.downtime_jail_blocks, JAILED_FOREVER)
    _put_validator(state, dataclasses.replace(validator, jailed=1, jailed_until=until))


def begin_block(state: State, ctx: BlockContext, last_commit_signers: frozenset[bytes] | None,
                evidence: tuple[DuplicateVoteEvidence, ...]) -> None:
    """Before the txs: liveness of the parent height, then double-sign evidence."""
    process_liveness(state, ctx, last_commit_signers)
    handle_evidence(state, ctx, evidence)


# --- unjail ------------------------------------------------------------------------


def apply_unjail(state: State, sender: bytes, body: Unjail, ctx: BlockContext) -> None:
    """The operator returns its jailed validator once the jail time is over.

    Fails unless the validator exists, the sender is its operator, it is jailed
    but not tombstoned, `jailed_until` is reached and the operator's own stake
    is worth at least `min_validator_stake`. Its liveness window restarts.
    """
    validator = validate_unjail(state, sender, body, ctx)
    _put_validator(state, dataclasses.replace(validator, jailed=0))
    state.put(signing_info_key(validator.address), fresh_signing_info(ctx.height))


def validate_unjail(state: State, sender: bytes, body: Unjail,
                    ctx: BlockContext) -> StakingValidator:
    """The validator an Unjail may return; raise `TxFailed` naming the first rule it breaks."""
    validator = staking.get_validator(state, body.validator)
    if validator is None:
        raise TxFailed(CODE_UNJAIL_UNKNOWN_VALIDATOR,
                       f"no validator {body.validator.hex()}")
    if sender != validator.operator:
        raise TxFailed(CODE_UNJAIL_NOT_OPERATOR,
                       f"only the operator {validator.operator.hex()} may unjail, "
                       f"not {sender.hex()}")
    if validator.tombstoned:
        raise TxFailed(CODE_UNJAIL_TOMBSTONED, "validator is tombstoned for a double sign")
    if not validator.jailed:
        raise TxFailed(CODE_UNJAIL_NOT_JAILED, "validator is not jailed")
    if ctx.height < validator.jailed_until:
        raise TxFailed(CODE_UNJAIL_TOO_EARLY,
                       f"jailed until height {validator.jailed_until}, now {ctx.height}")
    own = _own_stake(state, validator)
    minimum = ctx.params.staking.min_validator_stake
    if own < minimum:
        raise TxFailed(CODE_UNJAIL_STAKE_TOO_LOW,
                       f"operator's own stake {own} is below the minimum {minimum}")
    return validator


def _own_stake(state: State, validator: StakingValidator) -> int:
    """What the operator's own delegation to its validator is worth in GPU."""
    delegation = staking.get_delegation(state, validator.operator, validator.address)
    if delegation is None:
        return 0
    return staking.delegation_tokens(validator, delegation.shares)
