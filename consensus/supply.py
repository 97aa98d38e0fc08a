"""The supply ledger: what exists, what was minted and burned, and the invariant.

Every GPU base unit lives in an account: a wallet's balance (locked or not) or
a module account (`chain.state.module_address`: bonded stake, unbonding stake,
undistributed rewards, treasury, pool reserves, unallocated reserve, job
escrow, collateral). Only two rules change the amount in existence: `mint`
(block emission) and `burn` (slashing and the buyback). So at the end of
every block

    Σ account GPU = genesis + minted - burned,    Σ account stable = issued

`SupplyTotals.balances_gpu` follows Σ account GPU by diffing each block's
changed accounts against the committed state, independently of the rules that
moved the money; `check_supply_invariant` compares the two sides and raises
`SupplyInvariantBroken` (the block is invalid, loudly) if they differ.
"""

from __future__ import annotations

from typing import Annotated

from chain.codec import U64, Record, record
from chain.records import Account
from chain.state import ACCOUNT_PREFIX, SUPPLY_KEY, State
from chain.types import UINT64_MAX
from consensus.errors import InvalidBlock


class SupplyInvariantBroken(InvalidBlock):
    """The accounts do not add up to genesis + minted - burned: a rule created or lost money."""


@record
class SupplyTotals(Record):
    """Supply bookkeeping (state key "t").

    GPU: `genesis_gpu` existed at genesis; `minted` and `burned` since. Stable:
    `stable_issued` by the issuer (including any genesis stable).
    `balances_gpu` / `balances_stable` are Σ over all accounts, maintained
    by diffing changed accounts at the end of each block.
    """

    genesis_gpu: Annotated[int, U64]
    minted: Annotated[int, U64]
    burned: Annotated[int, U64]
    stable_issued: Annotated[int, U64]
    balances_gpu: Annotated[int, U64]
    balances_stable: Annotated[int, U64]


EMPTY_TOTALS = SupplyTotals(genesis_gpu=0, minted=0, burned=0, stable_issued=0,
                            balances_gpu=0, balances_stable=0)


def get_supply(state: State) -> SupplyTotals:
    """The supply totals (all zero before genesis writes them)."""
    return state.get(SUPPLY_KEY, SupplyTotals, EMPTY_TOTALS)


def total_supply(totals: SupplyTotals) -> int:
    """GPU in existence: genesis + minted - burned."""
    return totals.genesis_gpu + totals.minted - totals.burned


def _set(state: State, totals: SupplyTotals, **changes: int) -> None:
    values = {name: getattr(totals, name) for name in SupplyTotals.__dataclass_fields__}
    values.update(changes)
    for name, value in values.items():
        if not 0 <= value <= UINT64_MAX:
            raise SupplyInvariantBroken(f"supply field {name} out of range: {value}")
    state.put(SUPPLY_KEY, SupplyTotals(**values))


def _credit(state: State, address: bytes, gpu: int = 0, stable: int = 0) -> None:
    account = state.get_account(address)
    new_gpu, new_stable = account.gpu + gpu, account.stable + stable
    if new_gpu > UINT64_MAX or new_stable > UINT64_MAX:
        raise SupplyInvariantBroken(f"account {address.hex()} balance would overflow uint64")
    state.set_account(address, Account(gpu=new_gpu, stable=new_stable, nonce=account.nonce,
                                       licences=account.licences, locks=account.locks))


def _debit(state: State, address: bytes, gpu: int = 0, stable: int = 0) -> None:
    account = state.get_account(address)
    if gpu > account.gpu or stable > account.stable:
        raise SupplyInvariantBroken(
            f"account {address.hex()} cannot give gpu {gpu} stable {stable}: "
            f"holds gpu {account.gpu} stable {account.stable}")
    state.set_account(address, Account(gpu=account.gpu - gpu, stable=account.stable - stable,
                                       nonce=account.nonce, licences=account.licences,
                                       locks=account.locks))


def mint(state: State, to: bytes, amount: int) -> None:
    """Create `amount` GPU in account `to` (block emission is the only caller)."""
    totals = get_supply(state)
    _credit(state, to, gpu=amount)
    _set(state, totals, minted=totals.minted + amount)


def burn(state: State, source: bytes, amount: int) -> None:
    """Destroy `amount` GPU held by account `source` (slashing, buyback)."""
    totals = get_supply(state)
    _debit(state, source, gpu=amount)
    _set(state, totals, burned=totals.burned + amount)


def issue_stable(state: State, to: bytes, amount: int) -> None:
    """Create `amount` stable units in account `to` (the issuer's rails in)."""
    totals = get_supply(state)
    _credit(state, to, stable=amount)
    _set(state, totals, stable_issued=totals.stable_issued + amount)


def move(state: State, source: bytes, target: bytes, gpu: int = 0, stable: int = 0) -> None:
    """Move GPU and/or stable between accounts, ignoring locks (modules' own moves).

    Raises `SupplyInvariantBroken` if `source` holds less: callers check what a
    user may spend first, so a shortfall here is a broken rule, not bad input.
    """
    _debit(state, source, gpu=gpu, stable=stable)
    _credit(state, target, gpu=gpu, stable=stable)


def init_supply(state: State, genesis_gpu: int, genesis_stable: int) -> None:
    """Genesis: record what exists (callers have written the accounts holding it)."""
    state.put(SUPPLY_KEY, SupplyTotals(
        genesis_gpu=genesis_gpu, minted=0, burned=0, stable_issued=genesis_stable,
        balances_gpu=genesis_gpu, balances_stable=genesis_stable))


def track_balances(state: State) -> None:
    """End of block: move `balances_*` by every changed account's difference to committed state."""
    changed = [k for k in state.changed() if k[:1] == ACCOUNT_PREFIX and len(k) == 21]
    if not changed:
        return
    delta_gpu = delta_stable = 0
    for key in changed:
        before = state.get_committed(key, Account)
        after = state.get(key, Account)
        delta_gpu += (after.gpu if after else 0) - (before.gpu if before else 0)
        delta_stable += (after.stable if after else 0) - (before.stable if before else 0)
    totals = get_supply(state)
    _set(state, totals, balances_gpu=totals.balances_gpu + delta_gpu,
         balances_stable=totals.balances_stable + delta_stable)


def check_supply_invariant(state: State) -> None:
    """Raise `SupplyInvariantBroken` unless Σ accounts = genesis + minted - burned (GPU, stable)."""
    t = get_supply(state)
    if t.balances_gpu != total_supply(t):
        raise SupplyInvariantBroken(
            f"GPU supply broken: accounts hold {t.balances_gpu}, but genesis {t.genesis_gpu} "
            f"+ minted {t.minted} - burned {t.burned} = {total_supply(t)}")
    if t.balances_stable != t.stable_issued:
        raise SupplyInvariantBroken(
            f"stable supply broken: accounts hold {t.balances_stable}, issued {t.stable_issued}")
