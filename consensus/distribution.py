"""Emission distribution, node licences, queens and epochs.

Every block mints its emission (`consensus.emission.block_emission`) into the
module account "rewards" and shares it, plus what earlier blocks carried,
among the validators of the current set:

- the provider part (`tokenomics.provider_share` of the total, rounded down):
  while any GPU provider qualifies this epoch (passed its availability
  challenge and has verified work, `compute_providers.provider_reward_weights`)
  it goes to those providers in proportion to their verified work, accrued
  for them and paid locked at the next epoch start; otherwise to the
  operators of the validators whose node licences are bound, in proportion
  to the plain licence count n (operator income); with neither it joins the
  validator part;
- the validator part (the rest): in proportion to each validator's weight
  stake share x n*factor(n) x queen_bonus (queens only), split among its
  delegators and operator by `consensus.staking.allocate_validator_reward`;
  if every weight is 0 it splits by stake.

Each payout is rounded down; what the floors leave carries to the next block,
so minted == distributed + carry to the base unit.

Licence counts and the queens come from the epoch snapshot taken at the first
block of each epoch (`block.epoch_blocks` heights from the first height), so
licences bound mid-epoch earn nothing before the next epoch.

State keys: "de" the epoch snapshot, "dc" the carry, "dt" the figures of the
last block and the running total distributed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, NamedTuple

from chain.codec import ADDRESS, U32, U64, ListOf, Record, record
from chain.records import MAX_VALIDATORS, LicenceTransfer, StakingValidator
from chain.state import State, is_module_address, module_address
from consensus.compute_providers import accrue_provider_reward, provider_reward_weights
from consensus.context import BlockContext, TxFailed
from consensus.emission import block_emission
from consensus.params import NetworkParams, TokenomicsParams, compute_licence_factor
from consensus.staking import (
    allocate_operator_income,
    allocate_validator_reward,
    get_validator,
    list_validators,
)
from consensus.supply import get_supply, mint

EPOCH_SNAPSHOT_KEY = b"de"
CARRY_KEY = b"dc"
DISTRIBUTION_STATS_KEY = b"dt"

CODE_LICENCE_ZERO_COUNT = 200
CODE_LICENCE_INSUFFICIENT = 201
CODE_LICENCE_OVERFLOW = 202
CODE_LICENCE_TO_MODULE = 203
MAX_LICENCES = 2**32 - 1  # an account holds at most a uint32 of licences


# --- records ------------------------------------------------------------------


@record
class LicenceCount(Record):
    """`licences` node licences bound to `validator` when the epoch began."""

    validator: Annotated[bytes, ADDRESS]
    licences: Annotated[int, U32]


@record
class EpochSnapshot(Record):
    """What the epoch's rules read (state key "de"), taken at the epoch's first block.

    `queens`: the proof-of-compute committee, sorted by address. `licences`:
    the bound licences of every validator neither jailed nor tombstoned that
    has any, sorted by address.
    """

    epoch: Annotated[int, U64]
    queens: Annotated[tuple[bytes, ...], ListOf(ADDRESS, MAX_VALIDATORS)]
    licences: Annotated[tuple[LicenceCount, ...], ListOf(LicenceCount, MAX_VALIDATORS)]


@record
class RewardCarry(Record):
    """Emission in module "rewards" that no payout has taken yet (state key "dc")."""

    amount: Annotated[int, U64]


@record
class DistributionStats(Record):
    """The last block's emission figures and the total ever distributed (state key "dt")."""

    height: Annotated[int, U64]
    emission: Annotated[int, U64]
    provider_paid: Annotated[int, U64]
    validators_paid: Annotated[int, U64]
    carry: Annotated[int, U64]
    total_distributed: Annotated[int, U64]


EMPTY_STATS = DistributionStats(height=0, emission=0, provider_paid=0, validators_paid=0,
                                carry=0, total_distributed=0)


class RewardEntry(NamedTuple):
    """One validator as the reward weights see it."""

    tokens: int
    licences: int
    queen: bool


class Recipient(NamedTuple):
    """A validator of the current set that can receive rewards."""

    address: bytes
    tokens: int
    licences: int
    queen: bool


@dataclass(frozen=True, slots=True)
class BlockPayouts:
    """How one block's emission plus carry splits: (address, amount) payouts and the carry.

    `to_providers`: the provider payouts go to GPU providers (addresses are
    providers), else to validators' operators (addresses are validators).
    """

    provider: tuple[tuple[bytes, int], ...]
    validators: tuple[tuple[bytes, int], ...]
    carry: int
    to_providers: bool = False


# --- pure rules ---------------------------------------------------------------


def compute_epoch(first_height: int, height: int, epoch_blocks: int) -> int:
    """The epoch `height` falls in: runs of `epoch_blocks` heights from the first height."""
    return max(height - first_height, 0) // epoch_blocks


def reward_weights(entries: Sequence[RewardEntry], tokenomics: TokenomicsParams) -> list[int]:
    """Each validator's weight, stake share x n*factor(n) x queen_bonus (queens), as integers.

    The weights share one denominator (see `reward_weight_denominator`), so
    weight_i = tokens_i * n_i * factor(n_i) * (queen_bonus if queen) times
    the lcm of the tier denominators times the queen bonus denominator.
    """
    scale = _tier_scale(tokenomics)
    bonus = tokenomics.queen_bonus
    out = []
    for entry in entries:
        factor = compute_licence_factor(entry.licences, tokenomics.licence_tiers)
        queen = bonus.num if entry.queen else bonus.den
        out.append(entry.tokens * entry.licences * factor.num * (scale // factor.den) * queen)
    return out


def reward_weight_denominator(total_tokens: int, tokenomics: TokenomicsParams) -> int:
    """The common denominator of `reward_weights`: Σ tokens x tier lcm x queen bonus den."""
    return max(total_tokens, 1) * _tier_scale(tokenomics) * tokenomics.queen_bonus.den


def _tier_scale(tokenomics: TokenomicsParams) -> int:
    """The least common multiple of the licence tiers' factor denominators."""
    return math.lcm(*(tier.factor.den for tier in tokenomics.licence_tiers))


def effective_weights(entries: Sequence[RewardEntry],
                      tokenomics: TokenomicsParams) -> tuple[list[int], int]:
    """The weights the validator part splits by and their denominator.

    The reward weights when any is positive, else the stake shares
    (tokens over Σ tokens).
    """
    weights = reward_weights(entries, tokenomics)
    total_tokens = sum(entry.tokens for entry in entries)
    if any(weights):
        return weights, reward_weight_denominator(total_tokens, tokenomics)
    return [entry.tokens for entry in entries], max(total_tokens, 1)


def split_by_weight(amount: int, weights: Sequence[int]) -> list[int]:
    """floor(amount * w_i / Σw) for each weight (all 0 when Σw is 0)."""
    total = sum(weights)
    if total == 0:
        return [0 for _ in weights]
    return [amount * weight // total for weight in weights]


def compute_block_payouts(total: int, recipients: Sequence[Recipient],
                          tokenomics: TokenomicsParams,
                          providers: Sequence[tuple[bytes, int]] = ()) -> BlockPayouts:
    """Split `total` (emission + carry) between providers and validators; the rest carries.

    Provider part = provider_share of the total: by verified work among
    `providers` ((address, work) of the qualifying GPU providers) when any has
    work, else by plain licence count among validators; with neither it joins
    the validator part. Validator part by `effective_weights`. Zero payouts
    are left out.
    """
    to_providers = any(work for _, work in providers)
    shares = ([work for _, work in providers] if to_providers
              else [r.licences for r in recipients])
    provider_part = tokenomics.provider_share.floor_mul(total) if any(shares) else 0
    provider = split_by_weight(provider_part, shares)
    entries = [RewardEntry(r.tokens, r.licences, r.queen) for r in recipients]
    weights, _ = effective_weights(entries, tokenomics)
    validators = split_by_weight(total - provider_part, weights)
    carry = total - sum(provider) - sum(validators)
    addresses = [a for a, _ in providers] if to_providers else [r.address for r in recipients]
    return BlockPayouts(provider=_nonzero(addresses, provider),
                        validators=_nonzero([r.address for r in recipients], validators),
                        carry=carry, to_providers=to_providers)


def _nonzero(addresses: Sequence[bytes],
             amounts: Sequence[int]) -> tuple[tuple[bytes, int], ...]:
    """(address, amount) for every positive amount, in the addresses' order."""
    return tuple((r, a) for r, a in zip(addresses, amounts, strict=True) if a > 0)


def select_queens(validators: Sequence[StakingValidator], current: frozenset[bytes],
                  tokenomics: TokenomicsParams) -> tuple[bytes, ...]:
    """The queens: opted-in, unjailed, untombstoned members of `current` with at least
    `queen_min_stake`; the top `max_queens` by (tokens desc, address asc), sorted by address.
    """
    eligible = [v for v in validators
                if v.queen == 1 and v.tokens >= tokenomics.queen_min_stake
                and v.jailed == 0 and v.tombstoned == 0 and v.address in current]
    eligible.sort(key=lambda v: (-v.tokens, v.address))
    return tuple(sorted(v.address for v in eligible[:tokenomics.max_queens]))


def compute_licence_counts(validators: Sequence[StakingValidator]) -> tuple[LicenceCount, ...]:
    """Bound licences of every validator neither jailed nor tombstoned that has any, by address."""
    counts = [LicenceCount(validator=v.address, licences=v.bound_licences) for v in validators
              if v.bound_licences > 0 and v.jailed == 0 and v.tombstoned == 0]
    return tuple(sorted(counts, key=lambda c: c.validator))


# --- state --------------------------------------------------------------------


def get_epoch_snapshot(state: State) -> EpochSnapshot | None:
    """The current epoch's snapshot (None before the first block)."""
    return state.get(EPOCH_SNAPSHOT_KEY, EpochSnapshot)


def get_carry(state: State) -> int:
    """Emission carried to the next block (held in module "rewards", owed to nobody yet)."""
    carry = state.get(CARRY_KEY, RewardCarry)
    return 0 if carry is None else carry.amount


def get_distribution_stats(state: State) -> DistributionStats:
    """The last block's emission figures and the total distributed so far."""
    return state.get(DISTRIBUTION_STATS_KEY, DistributionStats, EMPTY_STATS)


def queens(state: State) -> tuple[bytes, ...]:
    """The current epoch's queens (the proof-of-compute committee), sorted by address."""
    snapshot = get_epoch_snapshot(state)
    return () if snapshot is None else snapshot.queens


def snapshot_licences(snapshot: EpochSnapshot | None) -> dict[bytes, int]:
    """Validator address -> licences counted this epoch (absent: none)."""
    return {} if snapshot is None else {c.validator: c.licences for c in snapshot.licences}


def take_epoch_snapshot(state: State, epoch: int, tokenomics: TokenomicsParams) -> EpochSnapshot:
    """The snapshot of `epoch` from the staking records and the current validator set."""
    validators = list_validators(state)
    current = frozenset(v.address for v in state.get_validator_set().validators)
    return EpochSnapshot(epoch=epoch, queens=select_queens(validators, current, tokenomics),
                         licences=compute_licence_counts(validators))


def get_recipients(state: State) -> list[Recipient]:
    """The current set's validators that have a staking record, by address, as rewards see them."""
    snapshot = get_epoch_snapshot(state)
    licences = snapshot_licences(snapshot)
    queen_set = frozenset(() if snapshot is None else snapshot.queens)
    out = []
    for member in sorted(state.get_validator_set().validators, key=lambda v: v.address):
        validator = get_validator(state, member.address)
        if validator is not None:
            out.append(Recipient(address=member.address, tokens=validator.tokens,
                                 licences=licences.get(member.address, 0),
                                 queen=member.address in queen_set))
    return out


def validator_weights(state: State, params: NetworkParams) -> list[tuple[bytes, int, int]]:
    """(address, weight numerator, denominator) of each reward recipient, as the split uses them."""
    recipients = get_recipients(state)
    entries = [RewardEntry(r.tokens, r.licences, r.queen) for r in recipients]
    weights, den = effective_weights(entries, params.tokenomics)
    return [(r.address, w, den) for r, w in zip(recipients, weights, strict=True)]


# --- block rules --------------------------------------------------------------


def begin_block(state: State, ctx: BlockContext) -> None:
    """At the first block of an epoch (or with no snapshot yet) take the epoch snapshot."""
    epoch = compute_epoch(ctx.first_height, ctx.height, ctx.params.block.epoch_blocks)
    snapshot = get_epoch_snapshot(state)
    if snapshot is None or snapshot.epoch != epoch:
        state.put(EPOCH_SNAPSHOT_KEY, take_epoch_snapshot(state, epoch, ctx.params.tokenomics))


def end_block(state: State, ctx: BlockContext) -> None:
    """Mint the block's emission into "rewards" and distribute it with the carry.

    Provider part to qualifying GPU providers (accrued) or to operators as
    income, validator part by weight to delegators and operators; the floors'
    remainder carries to the next block.
    """
    tokenomics = ctx.params.tokenomics
    emission = block_emission(tokenomics, ctx.first_height, ctx.height,
                              minted_before=get_supply(state).minted)
    if emission > 0:
        mint(state, module_address("rewards"), emission)
    payouts = compute_block_payouts(emission + get_carry(state), get_recipients(state),
                                    tokenomics, provider_reward_weights(state, ctx))
    credit = accrue_provider_reward if payouts.to_providers else allocate_operator_income
    for address, amount in payouts.provider:
        credit(state, address, amount)
    for address, amount in payouts.validators:
        allocate_validator_reward(state, address, amount)
    record_block_figures(state, ctx.height, emission, payouts)


def record_block_figures(state: State, height: int, emission: int,
                         payouts: BlockPayouts) -> None:
    """Store the carry and the block's figures; the running total grows by what was paid."""
    provider_paid = sum(amount for _, amount in payouts.provider)
    validators_paid = sum(amount for _, amount in payouts.validators)
    before = get_distribution_stats(state)
    state.put(CARRY_KEY, RewardCarry(amount=payouts.carry))
    state.put(DISTRIBUTION_STATS_KEY, DistributionStats(
        height=height, emission=emission, provider_paid=provider_paid,
        validators_paid=validators_paid, carry=payouts.carry,
        total_distributed=before.total_distributed + provider_paid + validators_paid))


# --- transactions -------------------------------------------------------------


def apply_licence_transfer(state: State, sender: bytes, body: LicenceTransfer,
                           ctx: BlockContext) -> None:
    """Move `count` of the sender's unbound licences to `to` (0 < count <= held)."""
    if body.count == 0:
        raise TxFailed(CODE_LICENCE_ZERO_COUNT, "licence transfer count must be positive")
    source = state.get_account(sender)
    if body.count > source.licences:
        raise TxFailed(CODE_LICENCE_INSUFFICIENT,
                       f"sender holds {source.licences} unbound licences, cannot transfer "
                       f"{body.count}")
    if is_module_address(body.to):
        raise TxFailed(CODE_LICENCE_TO_MODULE,
                       "cannot transfer licences to a protocol module account")
    if body.to == sender:
        return
    target = state.get_account(body.to)
    if target.licences + body.count > MAX_LICENCES:
        raise TxFailed(CODE_LICENCE_OVERFLOW,
                       f"recipient would hold {target.licences + body.count} licences, "
                       f"more than {MAX_LICENCES}")
    state.set_account(sender, replace(source, licences=source.licences - body.count))
    state.set_account(body.to, replace(target, licences=target.licences + body.count))
