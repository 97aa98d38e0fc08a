"""Staking: validators, delegations, unbonding, redelegation and delegators' rewards.

A validator holds `tokens` GPU bonded to it (in module "bonded"), owned by its
delegators in proportion to their `shares`; the operator's own stake is a
delegation like any other. Slashing lowers tokens, never shares, so every
delegator loses pro rata. Stake leaving a validator waits out
`unbonding_period_blocks` in module "unbonding" (still slashable for offences
before it left); a redelegation moves stake to another validator at once but is
remembered for as long, so an earlier offence of the source still slashes it.

Rewards use a per-share accumulator (Cosmos F1 in its simplest form): the
validator's `reward_acc` grows by reward * REWARD_ACC_SCALE // shares, and a
delegation is owed shares * (acc - its snapshot) // REWARD_ACC_SCALE. Every
change of a delegation's shares settles it first. Settled rewards are paid
from module "rewards" as a locked amount, released `reward_lock_blocks` later
rounded up to a whole epoch.

Invariants at every block end: module "bonded" = StakingTotals.bonded = Σ
tokens; module "unbonding" = StakingTotals.unbonding = Σ unbonding balances.
"""

from __future__ import annotations

import dataclasses
from bisect import insort
from typing import Annotated

import nacl.bindings

from chain.address import address_from_public_key
from chain.codec import ADDRESS, U64, ListOf, Record, record
from chain.records import (
    KEEP_U8,
    KEEP_U32,
    MAX_QUEUE_ENTRIES,
    MAX_VALIDATORS,
    QUEEN_IN,
    QUEEN_OUT,
    REWARD_ACC_SCALE,
    ZERO_ACC,
    Account,
    CreateValidator,
    Delegate,
    Delegation,
    EditValidator,
    Lock,
    Redelegate,
    RedelegationEntry,
    RedelegationQueue,
    StakingTotals,
    StakingValidator,
    UnbondingEntry,
    UnbondingQueue,
    Undelegate,
    Validator,
    ValidatorIndex,
    WithdrawRewards,
    acc_to_int,
    int_to_acc,
)
from chain.state import (
    REDELEGATION_PREFIX,
    STAKING_TOTALS_KEY,
    STAKING_VALIDATOR_PREFIX,
    UNBONDING_PREFIX,
    VALIDATOR_INDEX_KEY,
    State,
    delegation_key,
    module_address,
    staking_validator_key,
)
from chain.types import UINT64_MAX
from consensus.context import BlockContext, TxFailed, spendable_gpu
from consensus.errors import InvalidBlock
from consensus.supply import move
from consensus.validators import apply_updates, get_queued_updates, queue_validator_updates

OPERATOR_PREFIX = b"so"  # + operator(20) -> OperatedValidator
MATURITY_PREFIX = b"sm"  # + completion height(8) -> MaturingValidators
INCOMING_REDELEGATION_PREFIX = b"sn"  # + delegator(20) + target(20) -> IncomingRedelegation

BPS = 10_000
MAX_LOCKS = 256
UINT32_MAX = 2**32 - 1
UINT256_LIMIT = 2**256

BONDED = module_address("bonded")
UNBONDING = module_address("unbonding")
REWARDS = module_address("rewards")

# Receipt codes (staking 100-149; slashing's unjail uses 150-159).
CODE_UNKNOWN_VALIDATOR = 100
CODE_NOT_OPERATOR = 101
CODE_INVALID_PUBLIC_KEY = 102
CODE_VALIDATOR_EXISTS = 103
CODE_ALREADY_OPERATOR = 104
CODE_BAD_COMMISSION = 105
CODE_BAD_QUEEN = 106
CODE_SELF_STAKE_TOO_LOW = 107
CODE_INSUFFICIENT_FUNDS = 108
CODE_TOO_MANY_VALIDATORS = 109
CODE_TOO_FEW_LICENCES = 110
CODE_LICENCE_OVERFLOW = 111
CODE_TOMBSTONED = 112
CODE_ZERO_AMOUNT = 113
CODE_NO_DELEGATION = 114
CODE_EXCEEDS_DELEGATION = 115
CODE_NO_TOKENS = 116
CODE_ZERO_SHARES = 117
CODE_STAKE_OVERFLOW = 118
CODE_QUEUE_FULL = 119
CODE_SAME_VALIDATOR = 120
CODE_REDELEGATION_IN_PROGRESS = 121
CODE_NOTHING_TO_WITHDRAW = 122
CODE_TOO_MANY_LOCKS = 123


class StakingBookkeepingBroken(InvalidBlock):
    """Staking records disagree with what a block rule needs (a broken rule, not bad input)."""


@record
class OperatedValidator(Record):
    """The validator an account operates (state key "so" + operator): one per operator."""

    validator: Annotated[bytes, ADDRESS]


@record
class MaturingValidators(Record):
    """Validators with unbonding or redelegation entries completing at a height (key "sm" + h)."""

    addresses: Annotated[tuple[bytes, ...], ListOf(ADDRESS, MAX_VALIDATORS)]


@record
class IncomingRedelegation(Record):
    """Stake a delegator redelegated to a validator is immature until `completion_height`.

    State key "sn" + delegator + target. Until then the delegator may not
    redelegate away from the target (Cosmos' no-transitive-redelegation rule),
    so an offence of the original source can still slash the stake.
    """

    completion_height: Annotated[int, U64]


EMPTY_TOTALS = StakingTotals(bonded=0, unbonding=0)


# --- keys and queries ---------------------------------------------------------------


def operator_key(operator: bytes) -> bytes:
    """State key naming the validator an account operates."""
    return OPERATOR_PREFIX + operator


def maturity_key(height: int) -> bytes:
    """State key of the validators whose entries complete at `height`."""
    return MATURITY_PREFIX + height.to_bytes(8, "big")


def incoming_redelegation_key(delegator: bytes, target: bytes) -> bytes:
    """State key of a delegator's immature redelegation into `target`."""
    return INCOMING_REDELEGATION_PREFIX + delegator + target


def get_validator(state: State, address: bytes) -> StakingValidator | None:
    """The staking record of a validator, or None."""
    return state.get(staking_validator_key(address), StakingValidator)


def list_validators(state: State) -> list[StakingValidator]:
    """Every validator with a staking record, in address order."""
    return [get_validator(state, address) for address in _index(state)]


def get_delegation(state: State, delegator: bytes, validator: bytes) -> Delegation | None:
    """A delegator's delegation to a validator, or None."""
    return state.get(delegation_key(delegator, validator), Delegation)


def get_unbonding_queue(state: State, validator: bytes) -> UnbondingQueue:
    """A validator's unbonding entries, oldest first (empty if none)."""
    return state.get(UNBONDING_PREFIX + validator, UnbondingQueue, UnbondingQueue(entries=()))


def get_redelegation_queue(state: State, source: bytes) -> RedelegationQueue:
    """A source validator's live redelegations, oldest first (empty if none)."""
    return state.get(REDELEGATION_PREFIX + source, RedelegationQueue,
                     RedelegationQueue(entries=()))


def get_staking_totals(state: State) -> StakingTotals:
    """GPU bonded and GPU unbonding (zero before genesis)."""
    return state.get(STAKING_TOTALS_KEY, StakingTotals, EMPTY_TOTALS)


def operator_of(state: State, operator: bytes) -> bytes | None:
    """The address of the validator `operator` operates, or None."""
    found = state.get(operator_key(operator), OperatedValidator)
    return None if found is None else found.validator


def delegation_tokens(validator: StakingValidator, shares: int) -> int:
    """What `shares` of a validator are worth in GPU: shares * tokens // total shares."""
    if validator.shares == 0:
        return 0
    return shares * validator.tokens // validator.shares


def _index(state: State) -> tuple[bytes, ...]:
    index = state.get(VALIDATOR_INDEX_KEY, ValidatorIndex)
    return () if index is None else index.addresses


def _put_validator(state: State, validator: StakingValidator) -> None:
    state.put(staking_validator_key(validator.address), validator)


def _put_totals(state: State, bonded: int = 0, unbonding: int = 0) -> None:
    """Add (signed) amounts to the staking totals."""
    totals = get_staking_totals(state)
    new = StakingTotals(bonded=totals.bonded + bonded, unbonding=totals.unbonding + unbonding)
    if not (0 <= new.bonded <= UINT64_MAX and 0 <= new.unbonding <= UINT64_MAX):
        raise StakingBookkeepingBroken(f"staking totals out of range: {new}")
    state.put(STAKING_TOTALS_KEY, new)


def _require_validator(state: State, address: bytes) -> StakingValidator:
    validator = get_validator(state, address)
    if validator is None:
        raise TxFailed(CODE_UNKNOWN_VALIDATOR, f"no validator {address.hex()}")
    return validator


# --- creating and editing validators ------------------------------------------------


def apply_create_validator(state: State, sender: bytes, body: CreateValidator,
                           ctx: BlockContext) -> None:
    """The sender becomes the operator of a new validator with `self_stake` bonded.

    Fails on an invalid key, an existing validator at the key's address, a
    sender that already operates one, commission over 100 %, a queen flag not
    0/1, a self-stake under `min_validator_stake` or over the spendable GPU,
    or a full validator index. It joins the active set at the block's end if
    its stake ranks among the top `max_validators`.
    """
    address = validate_create_validator(state, sender, body, ctx)
    _insert_validator(state, StakingValidator(
        address=address, public_key=body.public_key, operator=sender,
        commission_bps=body.commission_bps, tokens=0, shares=0, queen=body.queen,
        bound_licences=0, jailed=0, tombstoned=0, jailed_until=0, reward_acc=ZERO_ACC,
        operator_rewards=0, created_height=ctx.height))
    _add_stake(state, sender, address, body.self_stake)
    move(state, sender, BONDED, gpu=body.self_stake)
    _put_totals(state, bonded=body.self_stake)


def validate_create_validator(state: State, sender: bytes, body: CreateValidator,
                              ctx: BlockContext) -> bytes:
    """The new validator's address; raise `TxFailed` naming the first rule the tx breaks."""
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(body.public_key):
        raise TxFailed(CODE_INVALID_PUBLIC_KEY, "public key is not a valid Ed25519 point")
    address = address_from_public_key(body.public_key)
    if get_validator(state, address) is not None:
        raise TxFailed(CODE_VALIDATOR_EXISTS, f"validator {address.hex()} already exists")
    if operator_of(state, sender) is not None:
        raise TxFailed(CODE_ALREADY_OPERATOR,
                       f"{sender.hex()} already operates validator "
                       f"{operator_of(state, sender).hex()}")
    _validate_commission(body.commission_bps)
    _validate_queen(body.queen)
    minimum = ctx.params.staking.min_validator_stake
    if body.self_stake < minimum:
        raise TxFailed(CODE_SELF_STAKE_TOO_LOW,
                       f"self-stake {body.self_stake} is below the minimum {minimum}")
    _require_spendable(state, sender, body.self_stake, ctx)
    if len(_index(state)) >= MAX_VALIDATORS:
        raise TxFailed(CODE_TOO_MANY_VALIDATORS,
                       f"the validator index is full ({MAX_VALIDATORS})")
    return address


def _validate_commission(commission_bps: int) -> None:
    if commission_bps > BPS:
        raise TxFailed(CODE_BAD_COMMISSION,
                       f"commission {commission_bps} bps exceeds {BPS} bps")


def _validate_queen(queen: int) -> None:
    if queen not in (QUEEN_OUT, QUEEN_IN):
        raise TxFailed(CODE_BAD_QUEEN, f"queen must be {QUEEN_OUT} or {QUEEN_IN}, got {queen}")


def _require_spendable(state: State, sender: bytes, amount: int, ctx: BlockContext) -> None:
    have = spendable_gpu(state.get_account(sender), ctx.height)
    if amount > have:
        raise TxFailed(CODE_INSUFFICIENT_FUNDS,
                       f"insufficient spendable GPU: have {have}, need {amount}")


def _insert_validator(state: State, validator: StakingValidator) -> None:
    """Write a new validator record, its operator entry and its place in the index."""
    addresses = list(_index(state))
    insort(addresses, validator.address)
    state.put(VALIDATOR_INDEX_KEY, ValidatorIndex(addresses=tuple(addresses)))
    state.put(operator_key(validator.operator), OperatedValidator(validator=validator.address))
    _put_validator(state, validator)


def apply_edit_validator(state: State, sender: bytes, body: EditValidator,
                         ctx: BlockContext) -> None:
    """The operator changes commission, queen opt-in or the number of bound licences.

    KEEP_U32 / KEEP_U8 leave a field as it is. Binding more licences moves them
    out of the operator's account (it must hold them); binding fewer moves them back.
    """
    validator = _require_validator(state, body.validator)
    if sender != validator.operator:
        raise TxFailed(CODE_NOT_OPERATOR,
                       f"only the operator {validator.operator.hex()} may edit the validator")
    if body.commission_bps != KEEP_U32:
        _validate_commission(body.commission_bps)
        validator = dataclasses.replace(validator, commission_bps=body.commission_bps)
    if body.queen != KEEP_U8:
        _validate_queen(body.queen)
        validator = dataclasses.replace(validator, queen=body.queen)
    if body.bound_licences != KEEP_U32:
        _rebind_licences(state, sender, validator.bound_licences, body.bound_licences)
        validator = dataclasses.replace(validator, bound_licences=body.bound_licences)
    _put_validator(state, validator)


def _rebind_licences(state: State, operator: bytes, bound: int, wanted: int) -> None:
    """Move licences between the operator's account and its validator: bound -> wanted."""
    account = state.get_account(operator)
    free = account.licences - (wanted - bound)
    if free < 0:
        raise TxFailed(CODE_TOO_FEW_LICENCES,
                       f"binding {wanted} licences needs {wanted - bound} more; "
                       f"the operator holds {account.licences}")
    if free > UINT32_MAX:
        raise TxFailed(CODE_LICENCE_OVERFLOW, "the operator's licence count would overflow")
    state.set_account(operator, dataclasses.replace(account, licences=free))


# --- shares ----------------------------------------------------------------------------


def _add_stake(state: State, delegator: bytes, address: bytes, amount: int) -> int:
    """Give `amount` GPU of stake to a settled (or new) delegation; return the new shares.

    New shares = amount when the validator has no shares, else amount * shares
    // tokens. The caller moves the GPU and the totals.
    """
    validator = _require_validator(state, address)
    if validator.shares == 0:
        shares = amount
    elif validator.tokens == 0:
        raise TxFailed(CODE_NO_TOKENS, "validator has shares but no tokens (fully slashed)")
    else:
        shares = amount * validator.shares // validator.tokens
    if shares == 0:
        raise TxFailed(CODE_ZERO_SHARES, f"{amount} GPU buys no share of this validator")
    if validator.shares + shares > UINT64_MAX or validator.tokens + amount > UINT64_MAX:
        raise TxFailed(CODE_STAKE_OVERFLOW, "validator shares or tokens would overflow uint64")
    _put_validator(state, dataclasses.replace(
        validator, shares=validator.shares + shares, tokens=validator.tokens + amount))
    held = get_delegation(state, delegator, address)
    before = 0 if held is None else held.shares
    state.put(delegation_key(delegator, address),
              Delegation(shares=before + shares, reward_acc=validator.reward_acc))
    return shares


def _remove_stake(state: State, ctx: BlockContext, delegator: bytes, address: bytes,
                  amount: int) -> None:
    """Take `amount` GPU of stake out of a delegation, settling its rewards first.

    Shares removed = ceil(amount * shares / tokens), at most the delegation's
    (all of them when `amount` is its whole value), so rounding favours the
    delegators who stay. An emptied delegation is deleted. The operator whose
    own stake falls below `min_validator_stake` gets its validator jailed.
    The caller moves the GPU and the totals.
    """
    validator = _require_validator(state, address)
    held = _require_amount(state, delegator, validator, amount)
    settle_delegation(state, ctx, delegator, address)
    value = delegation_tokens(validator, held.shares)
    if amount == value:
        shares = held.shares
    else:
        shares = min(-(-amount * validator.shares // validator.tokens), held.shares)
    left = held.shares - shares
    state.put(delegation_key(delegator, address),
              Delegation(shares=left, reward_acc=validator.reward_acc) if left else None)
    validator = dataclasses.replace(validator, shares=validator.shares - shares,
                                    tokens=validator.tokens - amount)
    if delegator == validator.operator and not validator.jailed:
        own = delegation_tokens(validator, left)
        if own < ctx.params.staking.min_validator_stake:
            validator = dataclasses.replace(validator, jailed=1, jailed_until=ctx.height)
    _put_validator(state, validator)


def _require_amount(state: State, delegator: bytes, validator: StakingValidator,
                    amount: int) -> Delegation:
    """The delegation `amount` may leave; raise `TxFailed` unless 0 < amount <= its value."""
    if amount == 0:
        raise TxFailed(CODE_ZERO_AMOUNT, "amount must be positive")
    held = get_delegation(state, delegator, validator.address)
    if held is None:
        raise TxFailed(CODE_NO_DELEGATION,
                       f"{delegator.hex()} has no delegation to {validator.address.hex()}")
    value = delegation_tokens(validator, held.shares)
    if amount > value:
        raise TxFailed(CODE_EXCEEDS_DELEGATION,
                       f"amount {amount} exceeds the delegation's value {value}")
    return held


# --- delegating, undelegating, redelegating -------------------------------------------


def apply_delegate(state: State, sender: bytes, body: Delegate, ctx: BlockContext) -> None:
    """Bond `amount` spendable GPU to a validator that is not tombstoned.

    The delegation's pending rewards are paid (locked) first.
    """
    validator = _require_validator(state, body.validator)
    if validator.tombstoned:
        raise TxFailed(CODE_TOMBSTONED, f"validator {body.validator.hex()} is tombstoned")
    if body.amount == 0:
        raise TxFailed(CODE_ZERO_AMOUNT, "amount must be positive")
    _require_spendable(state, sender, body.amount, ctx)
    settle_delegation(state, ctx, sender, body.validator)
    _add_stake(state, sender, body.validator, body.amount)
    move(state, sender, BONDED, gpu=body.amount)
    _put_totals(state, bonded=body.amount)


def apply_undelegate(state: State, sender: bytes, body: Undelegate, ctx: BlockContext) -> None:
    """Start unbonding `amount` GPU; it is paid out `unbonding_period_blocks` later.

    The GPU moves from "bonded" to "unbonding" now and stays slashable for
    offences of the validator committed before it left.
    """
    _remove_stake(state, ctx, sender, body.validator, body.amount)
    completion = ctx.height + ctx.params.staking.unbonding_period_blocks
    _append_unbonding(state, body.validator, UnbondingEntry(
        delegator=sender, creation_height=ctx.height, completion_height=completion,
        initial_balance=body.amount, balance=body.amount))
    _mark_maturity(state, completion, body.validator)
    move(state, BONDED, UNBONDING, gpu=body.amount)
    _put_totals(state, bonded=-body.amount, unbonding=body.amount)


def _append_unbonding(state: State, validator: bytes, entry: UnbondingEntry) -> None:
    """Append an entry to a validator's queue, merging one of the same delegator and height."""
    entries = list(get_unbonding_queue(state, validator).entries)
    last = entries[-1] if entries else None
    if (last is not None and last.delegator == entry.delegator
            and last.creation_height == entry.creation_height):
        entries[-1] = dataclasses.replace(
            last, initial_balance=last.initial_balance + entry.initial_balance,
            balance=last.balance + entry.balance)
    elif len(entries) >= MAX_QUEUE_ENTRIES:
        raise TxFailed(CODE_QUEUE_FULL,
                       f"validator {validator.hex()} has {MAX_QUEUE_ENTRIES} unbonding entries")
    else:
        entries.append(entry)
    state.put(UNBONDING_PREFIX + validator, UnbondingQueue(entries=tuple(entries)))


def _mark_maturity(state: State, height: int, validator: bytes) -> None:
    """Record that `validator` has entries completing at `height`."""
    key = maturity_key(height)
    listed = state.get(key, MaturingValidators)
    addresses = [] if listed is None else list(listed.addresses)
    if validator not in addresses:
        insort(addresses, validator)
        state.put(key, MaturingValidators(addresses=tuple(addresses)))


def apply_redelegate(state: State, sender: bytes, body: Redelegate, ctx: BlockContext) -> None:
    """Move `amount` GPU of stake from `source` to `target` at once (no GPU leaves "bonded").

    Fails if source == target, either is unknown, the target is tombstoned, or
    stake the sender redelegated into `source` is still immature. The move is
    remembered by the source for `unbonding_period_blocks`.
    """
    validate_redelegate(state, sender, body, ctx)
    _remove_stake(state, ctx, sender, body.source, body.amount)
    settle_delegation(state, ctx, sender, body.target)
    shares = _add_stake(state, sender, body.target, body.amount)
    completion = ctx.height + ctx.params.staking.unbonding_period_blocks
    queue = get_redelegation_queue(state, body.source)
    if len(queue.entries) >= MAX_QUEUE_ENTRIES:
        raise TxFailed(CODE_QUEUE_FULL,
                       f"validator {body.source.hex()} has {MAX_QUEUE_ENTRIES} redelegations")
    entry = RedelegationEntry(delegator=sender, target=body.target, creation_height=ctx.height,
                              completion_height=completion, initial_balance=body.amount,
                              shares=shares)
    state.put(REDELEGATION_PREFIX + body.source,
              RedelegationQueue(entries=(*queue.entries, entry)))
    state.put(incoming_redelegation_key(sender, body.target),
              IncomingRedelegation(completion_height=completion))
    _mark_maturity(state, completion, body.source)


def validate_redelegate(state: State, sender: bytes, body: Redelegate,
                        ctx: BlockContext) -> None:
    """Raise `TxFailed` for a redelegation the rules forbid before any stake moves."""
    if body.source == body.target:
        raise TxFailed(CODE_SAME_VALIDATOR, "source and target are the same validator")
    _require_validator(state, body.source)
    target = _require_validator(state, body.target)
    if target.tombstoned:
        raise TxFailed(CODE_TOMBSTONED, f"validator {body.target.hex()} is tombstoned")
    incoming = state.get(incoming_redelegation_key(sender, body.source), IncomingRedelegation)
    if incoming is not None and incoming.completion_height > ctx.height:
        raise TxFailed(CODE_REDELEGATION_IN_PROGRESS,
                       f"stake redelegated into {body.source.hex()} matures at height "
                       f"{incoming.completion_height}")


# --- rewards ---------------------------------------------------------------------------


def allocate_validator_reward(state: State, validator_address: bytes, amount: int) -> None:
    """Credit a validator's reward (already in module "rewards") to operator and delegators.

    The operator gets commission_bps of `amount` (floor), plus everything when
    the validator has no shares, plus what the per-share floor leaves over; the
    rest raises `reward_acc` by rest * REWARD_ACC_SCALE // shares. Delegators
    can never claim more than the part not given to the operator.
    """
    validator = _get_or_broken(state, validator_address)
    commission = amount * validator.commission_bps // BPS
    rest = amount - commission
    acc = acc_to_int(validator.reward_acc)
    if validator.shares == 0:
        to_operator, increment = amount, 0
    else:
        increment = rest * REWARD_ACC_SCALE // validator.shares
        reserved = -(-increment * validator.shares // REWARD_ACC_SCALE)
        to_operator = commission + rest - reserved
    if acc + increment >= UINT256_LIMIT:
        raise StakingBookkeepingBroken(f"reward accumulator of {validator_address.hex()} full")
    _put_validator(state, dataclasses.replace(
        validator, reward_acc=int_to_acc(acc + increment),
        operator_rewards=_checked_u64(validator.operator_rewards + to_operator)))


def allocate_operator_income(state: State, validator_address: bytes, amount: int) -> None:
    """Credit `amount` (already in module "rewards") to the validator's operator."""
    validator = _get_or_broken(state, validator_address)
    _put_validator(state, dataclasses.replace(
        validator, operator_rewards=_checked_u64(validator.operator_rewards + amount)))


def _get_or_broken(state: State, address: bytes) -> StakingValidator:
    validator = get_validator(state, address)
    if validator is None:
        raise StakingBookkeepingBroken(f"reward for unknown validator {address.hex()}")
    return validator


def _checked_u64(value: int) -> int:
    if value > UINT64_MAX:
        raise StakingBookkeepingBroken(f"operator rewards would overflow uint64: {value}")
    return value


def compute_delegation_rewards(validator: StakingValidator, delegation: Delegation) -> int:
    """A delegation's unsettled rewards: shares * (acc - snapshot) // REWARD_ACC_SCALE."""
    growth = acc_to_int(validator.reward_acc) - acc_to_int(delegation.reward_acc)
    return delegation.shares * growth // REWARD_ACC_SCALE


def pending_rewards(state: State, delegator: bytes, validator_address: bytes) -> int:
    """What `delegator` could withdraw from a validator now (plus operator rewards if operator)."""
    validator = get_validator(state, validator_address)
    if validator is None:
        return 0
    delegation = get_delegation(state, delegator, validator_address)
    owed = 0 if delegation is None else compute_delegation_rewards(validator, delegation)
    if delegator == validator.operator:
        owed += validator.operator_rewards
    return owed


def settle_delegation(state: State, ctx: BlockContext, delegator: bytes,
                      validator_address: bytes) -> int:
    """Pay a delegation's pending rewards (locked) and move its snapshot to the accumulator.

    Returns the GPU paid. Raises `TxFailed(CODE_TOO_MANY_LOCKS)` when the
    delegator's account has no room for another lock.
    """
    validator = get_validator(state, validator_address)
    delegation = get_delegation(state, delegator, validator_address)
    if validator is None or delegation is None:
        return 0
    owed = compute_delegation_rewards(validator, delegation)
    if delegation.reward_acc != validator.reward_acc:
        state.put(delegation_key(delegator, validator_address),
                  dataclasses.replace(delegation, reward_acc=validator.reward_acc))
    if owed:
        pay_locked_reward(state, ctx, delegator, owed)
    return owed


def apply_withdraw_rewards(state: State, sender: bytes, body: WithdrawRewards,
                           ctx: BlockContext) -> None:
    """Withdraw the sender's delegation rewards and, for the operator, its operator rewards.

    Paid from module "rewards" as locked GPU; fails if there is nothing to withdraw.
    """
    validator = _require_validator(state, body.validator)
    paid = settle_delegation(state, ctx, sender, body.validator)
    if sender == validator.operator and validator.operator_rewards:
        validator = _require_validator(state, body.validator)
        pay_locked_reward(state, ctx, sender, validator.operator_rewards)
        paid += validator.operator_rewards
        _put_validator(state, dataclasses.replace(validator, operator_rewards=0))
    if paid == 0:
        raise TxFailed(CODE_NOTHING_TO_WITHDRAW,
                       f"no rewards to withdraw from {body.validator.hex()}")


def compute_reward_release(ctx: BlockContext) -> int:
    """When a reward paid now unlocks: height + reward_lock_blocks, rounded up to an epoch."""
    epoch = ctx.params.block.epoch_blocks
    unlock = ctx.height + ctx.params.tokenomics.reward_lock_blocks
    return -(-unlock // epoch) * epoch


def pay_locked_reward(state: State, ctx: BlockContext, to: bytes, amount: int) -> None:
    """Move `amount` GPU from module "rewards" to `to`, locked until `compute_reward_release`.

    Released locks are dropped and equal release heights merged first; fails
    with `CODE_TOO_MANY_LOCKS` if MAX_LOCKS other locks remain.
    """
    release = compute_reward_release(ctx)
    move(state, REWARDS, to, gpu=amount)
    account = state.get_account(to)
    locks = compute_merged_locks((*account.locks, Lock(amount=amount, release_height=release)),
                                 ctx.height)
    if len(locks) > MAX_LOCKS:
        raise TxFailed(CODE_TOO_MANY_LOCKS,
                       f"account {to.hex()} already has {MAX_LOCKS} locks; "
                       f"wait for some to release")
    state.set_account(to, _with_locks(account, locks))


def compute_merged_locks(locks: tuple[Lock, ...], height: int) -> tuple[Lock, ...]:
    """Locks still binding after `height`, one per release height, sorted by release height."""
    merged: dict[int, int] = {}
    for lock in locks:
        if lock.release_height > height:
            merged[lock.release_height] = merged.get(lock.release_height, 0) + lock.amount
    return tuple(Lock(amount=merged[h], release_height=h) for h in sorted(merged))


def _with_locks(account: Account, locks: tuple[Lock, ...]) -> Account:
    return dataclasses.replace(account, locks=locks)


# --- block rules -------------------------------------------------------------------------


def release_matured(state: State, ctx: BlockContext) -> None:
    """Begin of block: pay out unbondings and forget redelegations completing by this height.

    Only validators listed under this height's maturity key are visited; each
    unbonding entry with completion <= height pays its (possibly slashed)
    balance from "unbonding" to the delegator, spendable at once.
    """
    key = maturity_key(ctx.height)
    listed = state.get(key, MaturingValidators)
    if listed is None:
        return
    for address in listed.addresses:
        _release_unbondings(state, address, ctx.height)
        _release_redelegations(state, address, ctx.height)
    state.put(key, None)


def _release_unbondings(state: State, validator: bytes, height: int) -> None:
    queue = get_unbonding_queue(state, validator)
    due = [e for e in queue.entries if e.completion_height <= height]
    if not due:
        return
    kept = tuple(e for e in queue.entries if e.completion_height > height)
    state.put(UNBONDING_PREFIX + validator, UnbondingQueue(entries=kept) if kept else None)
    for entry in due:
        if entry.balance:
            move(state, UNBONDING, entry.delegator, gpu=entry.balance)
    _put_totals(state, unbonding=-sum(e.balance for e in due))


def _release_redelegations(state: State, source: bytes, height: int) -> None:
    queue = get_redelegation_queue(state, source)
    due = [e for e in queue.entries if e.completion_height <= height]
    if not due:
        return
    kept = tuple(e for e in queue.entries if e.completion_height > height)
    state.put(REDELEGATION_PREFIX + source, RedelegationQueue(entries=kept) if kept else None)
    for entry in due:
        key = incoming_redelegation_key(entry.delegator, entry.target)
        incoming = state.get(key, IncomingRedelegation)
        if incoming is not None and incoming.completion_height <= height:
            state.put(key, None)


def is_candidate(validator: StakingValidator) -> bool:
    """A validator may sign when it is neither jailed nor tombstoned and has tokens."""
    return not validator.jailed and not validator.tombstoned and validator.tokens > 0


def compute_active_set(validators: list[StakingValidator], size: int) -> list[StakingValidator]:
    """The top `size` candidates by tokens (descending), ties by address (ascending)."""
    candidates = [v for v in validators if is_candidate(v)]
    candidates.sort(key=lambda v: (-v.tokens, v.address))
    return candidates[:size]


def update_active_set(state: State, ctx: BlockContext) -> None:
    """End of block: queue the updates that make the next set the top staked candidates.

    Power is the validator's tokens; a member no longer among the top
    `max_validators` candidates leaves with power 0. When no validator is a
    candidate nothing changes: the chain must keep a set to produce blocks,
    so the last one stays until some validator can take over. Nothing is done
    when no staking record changed this block.
    """
    if not any(key[:2] == STAKING_VALIDATOR_PREFIX for key in state.changed()):
        return
    desired = compute_active_set(list_validators(state), ctx.params.staking.max_validators)
    if not desired:
        return
    upcoming = apply_updates(state.get_next_validator_set(), get_queued_updates(state))
    updates = compute_set_updates(upcoming.validators, desired)
    if updates:
        queue_validator_updates(state, updates)


def compute_set_updates(upcoming: tuple[Validator, ...],
                        desired: list[StakingValidator]) -> list[Validator]:
    """Updates turning `upcoming` into `desired`, sorted by address (power 0 removes)."""
    wanted = {v.address: Validator(address=v.address, public_key=v.public_key, power=v.tokens,
                                   operator=v.operator) for v in desired}
    members = {v.address: v for v in upcoming}
    updates = [v for a, v in wanted.items() if members.get(a) != v]
    updates += [dataclasses.replace(v, power=0) for a, v in members.items() if a not in wanted]
    return sorted(updates, key=lambda v: v.address)


# --- genesis -----------------------------------------------------------------------------


def genesis_bond(state: State, validator: Validator, commission_bps: int, queen: int,
                 height: int) -> None:
    """Genesis: bond a validator's power as its operator's stake.

    Writes the staking record (tokens = shares = power), the operator's
    delegation, the index, operator entry and totals, and credits module
    "bonded" with the power directly (genesis creates the GPU; no other rule may).
    Raises ValueError for a duplicate validator or operator or a bad field.
    """
    if get_validator(state, validator.address) is not None:
        raise ValueError(f"validator {validator.address.hex()} is bonded twice")
    if operator_of(state, validator.operator) is not None:
        raise ValueError(f"operator {validator.operator.hex()} runs two validators")
    if commission_bps > BPS or queen not in (QUEEN_OUT, QUEEN_IN) or validator.power == 0:
        raise ValueError(f"bad genesis validator {validator.address.hex()}: commission "
                         f"{commission_bps}, queen {queen}, power {validator.power}")
    _insert_validator(state, StakingValidator(
        address=validator.address, public_key=validator.public_key,
        operator=validator.operator, commission_bps=commission_bps, tokens=validator.power,
        shares=validator.power, queen=queen, bound_licences=0, jailed=0, tombstoned=0,
        jailed_until=0, reward_acc=ZERO_ACC, operator_rewards=0, created_height=height))
    state.put(delegation_key(validator.operator, validator.address),
              Delegation(shares=validator.power, reward_acc=ZERO_ACC))
    _put_totals(state, bonded=validator.power)
    bonded = state.get_account(BONDED)
    state.set_account(BONDED, dataclasses.replace(bonded, gpu=bonded.gpu + validator.power))
