"""Proof-of-compute providers: registration, collateral, credit and their emission share.

A provider posts `collateral` GPU (at least `compute.provider_min_collateral`,
held in module "collateral") and binds node licences out of its account.
Deregistering stops new assignments at once; collateral and licences return
once `staking.unbonding_period_blocks` have passed AND no job of the provider
is open (the release waits for the last open job to settle).

A provider is eligible for client jobs while it is active, holds at least the
minimum collateral and has room for another open job. Each epoch every
eligible provider also gets an availability challenge (`consensus.compute`).

Emission share: `EpochEarnings` (state key "ce") lists, for the current epoch,
each provider's verified work (tile count of its passed jobs, client and
challenge) and whether it passed an availability challenge issued this epoch.
While at least one provider qualifies (passed this epoch's challenge, work >
0), the provider part of each block's emission goes to the qualifying
providers in proportion to their work (`provider_reward_weights`); it is
accrued in the earnings record (the GPU stays in module "rewards") and paid,
locked like validator rewards, at the first block of the next epoch.

State keys: "cp" + provider(20) Provider, "ci" ProviderIndex, "cm" + height(8)
providers whose release matures there, "ce" EpochEarnings.
"""

from __future__ import annotations

import dataclasses
from bisect import insort
from typing import Annotated

from chain.codec import ADDRESS, U8, U32, U64, Bytes, ListOf, Record, record
from chain.records import DeregisterProvider, Lock, RegisterProvider
from chain.state import State, module_address
from chain.types import UINT64_MAX
from consensus import staking
from consensus.context import BlockContext, TxFailed, spendable_gpu
from consensus.errors import InvalidBlock
from consensus.supply import burn, move

PROVIDER_PREFIX = b"cp"  # + provider(20) -> Provider
PROVIDER_INDEX_KEY = b"ci"  # -> ProviderIndex
RELEASE_PREFIX = b"cm"  # + height(8) -> ProviderReleases
EARNINGS_KEY = b"ce"  # -> EpochEarnings

COLLATERAL = module_address("collateral")
MAX_PROVIDERS = 1024
MAX_PROVIDER_OPEN_JOBS = 256
UINT32_MAX = 2**32 - 1

PROVIDER_ACTIVE, PROVIDER_DEREGISTERING, PROVIDER_RELEASED = 0, 1, 2

# Receipt codes (providers 400-409).
CODE_PROVIDER_EXISTS = 400
CODE_COLLATERAL_TOO_LOW = 401
CODE_INSUFFICIENT_GPU = 402
CODE_TOO_FEW_LICENCES = 403
CODE_UNKNOWN_PROVIDER = 404
CODE_NOT_PROVIDER = 405
CODE_ALREADY_DEREGISTERING = 406
CODE_TOO_MANY_PROVIDERS = 407


class ComputeBookkeepingBroken(InvalidBlock):
    """Proof-of-compute records disagree with what a block rule needs (a broken rule)."""


@record
class Provider(Record):
    """A GPU provider (state key "cp" + address).

    `collateral` GPU sits in module "collateral"; `licences` are bound out of
    the account. `status`: PROVIDER_ACTIVE, _DEREGISTERING (no new jobs; the
    release is due at `release_height` once `open_jobs` is empty) or _RELEASED.
    Credit is verified work, the tile count of passed jobs: `credit_epoch` in
    epoch `credit_epoch_number`, `credit_total` ever.
    """

    address: Annotated[bytes, ADDRESS]
    collateral: Annotated[int, U64]
    licences: Annotated[int, U32]
    gpu: Annotated[bytes, Bytes(0, 64)]
    status: Annotated[int, U8]
    registered_height: Annotated[int, U64]
    release_height: Annotated[int, U64]
    open_jobs: Annotated[tuple[int, ...], ListOf(U64, MAX_PROVIDER_OPEN_JOBS)]
    credit_epoch: Annotated[int, U64]
    credit_epoch_number: Annotated[int, U64]
    credit_total: Annotated[int, U64]
    jobs_passed: Annotated[int, U64]
    jobs_failed: Annotated[int, U64]
    challenges_passed: Annotated[int, U64]
    challenges_failed: Annotated[int, U64]
    slashed_total: Annotated[int, U64]
    rewards_total: Annotated[int, U64]


@record
class ProviderIndex(Record):
    """Every address that ever registered as a provider, sorted (state key "ci")."""

    addresses: Annotated[tuple[bytes, ...], ListOf(ADDRESS, MAX_PROVIDERS)]


@record
class ProviderReleases(Record):
    """Providers whose deregistration wait ends at a height (state key "cm" + height)."""

    addresses: Annotated[tuple[bytes, ...], ListOf(ADDRESS, MAX_PROVIDERS)]


@record
class EpochEarning(Record):
    """One provider's standing in the epoch: work verified, challenge passed, reward accrued."""

    provider: Annotated[bytes, ADDRESS]
    work: Annotated[int, U64]
    qualified: Annotated[int, U8]
    accrued: Annotated[int, U64]


@record
class EpochEarnings(Record):
    """The providers' emission bookkeeping of `epoch` (state key "ce"), sorted by provider."""

    epoch: Annotated[int, U64]
    entries: Annotated[tuple[EpochEarning, ...], ListOf(EpochEarning, MAX_PROVIDERS)]


# --- keys and queries ------------------------------------------------------------------


def provider_key(address: bytes) -> bytes:
    """State key of a provider record."""
    return PROVIDER_PREFIX + address


def release_key(height: int) -> bytes:
    """State key of the providers whose release matures at `height`."""
    return RELEASE_PREFIX + height.to_bytes(8, "big")


def get_provider(state: State, address: bytes) -> Provider | None:
    """The provider record of `address`, or None."""
    return state.get(provider_key(address), Provider)


def put_provider(state: State, provider: Provider) -> None:
    """Store a provider record."""
    state.put(provider_key(provider.address), provider)


def provider_addresses(state: State) -> tuple[bytes, ...]:
    """Every address that ever registered, sorted."""
    index = state.get(PROVIDER_INDEX_KEY, ProviderIndex)
    return () if index is None else index.addresses


def list_providers(state: State) -> list[Provider]:
    """Every provider record (released ones included), in address order."""
    return [get_provider(state, address) for address in provider_addresses(state)]


def is_eligible(provider: Provider, min_collateral: int) -> bool:
    """A provider takes new jobs while active, collateralised and not at its open-job limit."""
    return (provider.status == PROVIDER_ACTIVE and provider.collateral >= min_collateral
            and len(provider.open_jobs) < MAX_PROVIDER_OPEN_JOBS)


def eligible_providers(state: State, ctx: BlockContext) -> list[Provider]:
    """The providers that may be assigned a job now, in address order."""
    minimum = ctx.params.compute.provider_min_collateral
    return [p for p in list_providers(state) if is_eligible(p, minimum)]


def compute_epoch_of(ctx: BlockContext) -> int:
    """The epoch of the block: runs of `block.epoch_blocks` heights from the first height."""
    return max(ctx.height - ctx.first_height, 0) // ctx.params.block.epoch_blocks


def is_epoch_start(ctx: BlockContext) -> bool:
    """Whether the block is the first of an epoch."""
    return ctx.height >= ctx.first_height and (
        (ctx.height - ctx.first_height) % ctx.params.block.epoch_blocks == 0)


# --- registration ----------------------------------------------------------------------


def apply_register_provider(state: State, sender: bytes, body: RegisterProvider,
                            ctx: BlockContext) -> None:
    """The sender becomes a provider: `collateral` GPU to module "collateral", licences bound.

    Fails if the sender is a provider not yet released, the collateral is
    under `provider_min_collateral` or over the spendable GPU, the sender
    holds fewer licences, or the index is full. A released provider may
    register again; its lifetime figures carry over.
    """
    before = validate_register_provider(state, sender, body, ctx)
    move(state, sender, COLLATERAL, gpu=body.collateral)
    account = state.get_account(sender)
    state.set_account(sender, dataclasses.replace(account,
                                                  licences=account.licences - body.licences))
    if before is None:
        _index_provider(state, sender)
        before = _new_provider(sender)
    put_provider(state, dataclasses.replace(
        before, collateral=body.collateral, licences=body.licences, gpu=body.gpu,
        status=PROVIDER_ACTIVE, registered_height=ctx.height, release_height=0))


def validate_register_provider(state: State, sender: bytes, body: RegisterProvider,
                               ctx: BlockContext) -> Provider | None:
    """The sender's released provider record (None if new); TxFailed names the broken rule."""
    before = get_provider(state, sender)
    if before is not None and before.status != PROVIDER_RELEASED:
        raise TxFailed(CODE_PROVIDER_EXISTS, f"{sender.hex()} is already a provider")
    minimum = ctx.params.compute.provider_min_collateral
    if body.collateral < minimum:
        raise TxFailed(CODE_COLLATERAL_TOO_LOW,
                       f"collateral {body.collateral} is below the minimum {minimum}")
    account = state.get_account(sender)
    have = spendable_gpu(account, ctx.height)
    if body.collateral > have:
        raise TxFailed(CODE_INSUFFICIENT_GPU,
                       f"insufficient spendable GPU: have {have}, need {body.collateral}")
    if body.licences > account.licences:
        raise TxFailed(CODE_TOO_FEW_LICENCES,
                       f"binding {body.licences} licences; the sender holds {account.licences}")
    if before is None and len(provider_addresses(state)) >= MAX_PROVIDERS:
        raise TxFailed(CODE_TOO_MANY_PROVIDERS, f"the provider index is full ({MAX_PROVIDERS})")
    return before


def _new_provider(address: bytes) -> Provider:
    return Provider(address=address, collateral=0, licences=0, gpu=b"", status=PROVIDER_ACTIVE,
                    registered_height=0, release_height=0, open_jobs=(), credit_epoch=0,
                    credit_epoch_number=0, credit_total=0, jobs_passed=0, jobs_failed=0,
                    challenges_passed=0, challenges_failed=0, slashed_total=0,
                    rewards_total=0)


def _index_provider(state: State, address: bytes) -> None:
    addresses = list(provider_addresses(state))
    insort(addresses, address)
    state.put(PROVIDER_INDEX_KEY, ProviderIndex(addresses=tuple(addresses)))


def apply_deregister_provider(state: State, sender: bytes, body: DeregisterProvider,
                              ctx: BlockContext) -> None:
    """The provider stops taking jobs; its release is due after the unbonding period.

    `body.provider` must be the sender, an active provider.
    """
    if body.provider != sender:
        raise TxFailed(CODE_NOT_PROVIDER,
                       f"only {body.provider.hex()} itself may deregister it")
    provider = get_provider(state, sender)
    if provider is None or provider.status == PROVIDER_RELEASED:
        raise TxFailed(CODE_UNKNOWN_PROVIDER, f"{sender.hex()} is not a provider")
    if provider.status == PROVIDER_DEREGISTERING:
        raise TxFailed(CODE_ALREADY_DEREGISTERING,
                       f"already deregistering; release due at {provider.release_height}")
    due = ctx.height + ctx.params.staking.unbonding_period_blocks
    put_provider(state, dataclasses.replace(provider, status=PROVIDER_DEREGISTERING,
                                            release_height=due))
    listed = state.get(release_key(due), ProviderReleases, ProviderReleases(addresses=()))
    state.put(release_key(due), ProviderReleases(addresses=(*listed.addresses, sender)))


def release_matured(state: State, ctx: BlockContext) -> None:
    """Begin of block: release providers whose wait ends here and that have no open job.

    A provider with open jobs is released when its last one settles
    (`maybe_release`).
    """
    key = release_key(ctx.height)
    listed = state.get(key, ProviderReleases)
    if listed is None:
        return
    for address in listed.addresses:
        maybe_release(state, address, ctx.height)
    state.put(key, None)


def maybe_release(state: State, address: bytes, height: int) -> None:
    """Return collateral and licences of a deregistering provider that is due and idle."""
    provider = get_provider(state, address)
    if (provider is None or provider.status != PROVIDER_DEREGISTERING
            or provider.release_height > height or provider.open_jobs):
        return
    if provider.collateral:
        move(state, COLLATERAL, address, gpu=provider.collateral)
    account = state.get_account(address)
    licences = account.licences + provider.licences
    if licences > UINT32_MAX:
        raise ComputeBookkeepingBroken(f"licences of {address.hex()} would overflow")
    state.set_account(address, dataclasses.replace(account, licences=licences))
    put_provider(state, dataclasses.replace(provider, status=PROVIDER_RELEASED, collateral=0,
                                            licences=0))


# --- jobs as the provider sees them -------------------------------------------------------


def add_open_job(state: State, address: bytes, job_id: int) -> None:
    """Record a job as open for its provider (the caller checked there is room)."""
    provider = _require(state, address)
    put_provider(state, dataclasses.replace(provider, open_jobs=(*provider.open_jobs, job_id)))


def close_job(state: State, address: bytes, job_id: int, height: int) -> None:
    """A job of the provider has an outcome: it is no longer open (a due release follows)."""
    provider = _require(state, address)
    put_provider(state, dataclasses.replace(
        provider, open_jobs=tuple(j for j in provider.open_jobs if j != job_id)))
    maybe_release(state, address, height)


def slash_provider(state: State, address: bytes, fraction_num: int, fraction_den: int,
                   challenge: bool) -> int:
    """Burn floor(collateral * fraction) from module "collateral"; count the failure.

    Returns the GPU burned.
    """
    provider = _require(state, address)
    amount = provider.collateral * fraction_num // fraction_den
    if amount:
        burn(state, COLLATERAL, amount)
    counted = ({"challenges_failed": provider.challenges_failed + 1} if challenge
               else {"jobs_failed": provider.jobs_failed + 1})
    put_provider(state, dataclasses.replace(
        provider, collateral=provider.collateral - amount,
        slashed_total=_u64(provider.slashed_total + amount), **counted))
    return amount


def credit_provider(state: State, ctx: BlockContext, address: bytes, work: int,
                    challenge: bool) -> None:
    """A job of the provider passed: `work` tiles of credit, and a passed challenge if one."""
    provider = _require(state, address)
    epoch = compute_epoch_of(ctx)
    this_epoch = provider.credit_epoch if provider.credit_epoch_number == epoch else 0
    counted = ({"challenges_passed": provider.challenges_passed + 1} if challenge
               else {"jobs_passed": provider.jobs_passed + 1})
    put_provider(state, dataclasses.replace(
        provider, credit_epoch=_u64(this_epoch + work), credit_epoch_number=epoch,
        credit_total=_u64(provider.credit_total + work), **counted))
    _add_earning(state, epoch, address, work, challenge)


def _require(state: State, address: bytes) -> Provider:
    provider = get_provider(state, address)
    if provider is None:
        raise ComputeBookkeepingBroken(f"no provider record for {address.hex()}")
    return provider


def _u64(value: int) -> int:
    return min(value, UINT64_MAX)  # lifetime statistics saturate


# --- emission share ----------------------------------------------------------------------


def get_epoch_earnings(state: State) -> EpochEarnings | None:
    """The providers' earnings record of the current epoch (None before the first block)."""
    return state.get(EARNINGS_KEY, EpochEarnings)


def _add_earning(state: State, epoch: int, address: bytes, work: int, challenge: bool) -> None:
    """Add work (and a passed challenge) to the provider's entry of the epoch's earnings."""
    earnings = get_epoch_earnings(state) or EpochEarnings(epoch=epoch, entries=())
    if earnings.epoch != epoch:
        raise ComputeBookkeepingBroken(f"earnings of epoch {earnings.epoch} in epoch {epoch}")
    entries = {e.provider: e for e in earnings.entries}
    entry = entries.get(address, EpochEarning(provider=address, work=0, qualified=0, accrued=0))
    entries[address] = dataclasses.replace(entry, work=_u64(entry.work + work),
                                           qualified=entry.qualified or int(challenge))
    state.put(EARNINGS_KEY, EpochEarnings(
        epoch=epoch, entries=tuple(entries[a] for a in sorted(entries))))


def provider_reward_weights(state: State, ctx: BlockContext) -> list[tuple[bytes, int]]:
    """(provider, work) of every provider that passed this epoch's challenge and has work.

    Empty when none qualifies: the provider part of emission then follows the
    licence rule of `consensus.distribution`.
    """
    earnings = get_epoch_earnings(state)
    if earnings is None or earnings.epoch != compute_epoch_of(ctx):
        return []
    return [(e.provider, e.work) for e in earnings.entries if e.qualified and e.work > 0]


def accrue_provider_reward(state: State, address: bytes, amount: int) -> None:
    """Owe `amount` GPU of emission (already in module "rewards") to a provider."""
    earnings = get_epoch_earnings(state)
    entries = {} if earnings is None else {e.provider: e for e in earnings.entries}
    if address not in entries:
        raise ComputeBookkeepingBroken(f"reward for {address.hex()} without earnings")
    entry = entries[address]
    if entry.accrued + amount > UINT64_MAX:
        raise ComputeBookkeepingBroken(f"accrued reward of {address.hex()} overflows")
    entries[address] = dataclasses.replace(entry, accrued=entry.accrued + amount)
    state.put(EARNINGS_KEY, dataclasses.replace(
        earnings, entries=tuple(entries[a] for a in sorted(entries))))


def roll_epoch_earnings(state: State, ctx: BlockContext) -> None:
    """A new epoch: pay what providers accrued in the last, start afresh (no record while
    nobody is owed anything).

    Each payment is locked like validator rewards (`staking.pay_locked_reward`);
    a provider whose account has no room for another lock keeps its reward
    owed in the new record and is paid at a later epoch start.
    """
    earnings = get_epoch_earnings(state)
    if earnings is None or earnings.epoch == compute_epoch_of(ctx):
        return
    carried = []
    for entry in earnings.entries:
        if entry.accrued and not _pay_provider_reward(state, ctx, entry.provider, entry.accrued):
            carried.append(EpochEarning(provider=entry.provider, work=0, qualified=0,
                                        accrued=entry.accrued))
    state.put(EARNINGS_KEY, EpochEarnings(epoch=compute_epoch_of(ctx), entries=tuple(carried))
              if carried else None)


def _pay_provider_reward(state: State, ctx: BlockContext, address: bytes, amount: int) -> bool:
    """Pay a provider's reward locked if its account has room for the lock; say whether."""
    release = staking.compute_reward_release(ctx)
    locks = staking.compute_merged_locks(
        (*state.get_account(address).locks, Lock(amount=amount, release_height=release)),
        ctx.height)
    if len(locks) > staking.MAX_LOCKS:
        return False
    staking.pay_locked_reward(state, ctx, address, amount)
    provider = get_provider(state, address)
    if provider is not None:
        put_provider(state, dataclasses.replace(
            provider, rewards_total=_u64(provider.rewards_total + amount)))
    return True
