"""The stable unit and the GPU/stable constant-product pool, with its price oracle.

The pool holds `gpu` and `stable` reserves in module account "pool"; its
record ("xp") tracks them and the LP shares in issue, and every LP's shares
sit under "xl" + address. A swap keeps the product of the reserves from
falling: the fee (`pool_fee_bps` of the input) stays in the pool, so the
product grows. Liquidity enters and leaves pro rata, always rounded in the
pool's favour, so no deposit-and-withdraw cycle takes out more than it put in.

Stable units are created only by the genesis issuer ("xi") through
`supply.issue_stable`. Before each block's txs the oracle ("xo") adds the
pool's spot price (stable per GPU, 2^64 fixed point) to a cumulative sum, so a
time-weighted average over any span of blocks is the difference of two sums
divided by the number of observations between them (Uniswap v2 style).
"""

from __future__ import annotations

import dataclasses
from math import isqrt
from typing import Annotated

from chain.codec import ADDRESS, U64, Record, record
from chain.records import (
    ACC,
    DENOM_GPU,
    DENOM_STABLE,
    ZERO_ACC,
    AddLiquidity,
    IssueStable,
    RemoveLiquidity,
    Swap,
    acc_to_int,
    int_to_acc,
)
from chain.state import EXCHANGE_PREFIX, State, module_address
from chain.types import UINT64_MAX
from consensus import supply
from consensus.context import BlockContext, TxFailed, spendable_gpu

POOL_KEY = EXCHANGE_PREFIX + b"p"  # -> Pool
LP_PREFIX = EXCHANGE_PREFIX + b"l"  # + address(20) -> LpShares
ISSUER_KEY = EXCHANGE_PREFIX + b"i"  # -> StableIssuer (absent: no stable can be issued)
ORACLE_KEY = EXCHANGE_PREFIX + b"o"  # -> PriceOracle

BPS = 10_000
PRICE_SCALE = 2**64  # spot price = stable reserve * PRICE_SCALE // gpu reserve
ACC_MODULUS = 2**256  # the cumulative price wraps like a uint256

# Receipt codes (300-349).
CODE_UNKNOWN_DENOM = 300
CODE_ZERO_AMOUNT = 301
CODE_INSUFFICIENT_BALANCE = 302
CODE_NO_POOL = 303
CODE_ZERO_OUTPUT = 304
CODE_BELOW_MIN_OUT = 305
CODE_ZERO_SHARES = 306
CODE_BELOW_MIN_SHARES = 307
CODE_INSUFFICIENT_SHARES = 308
CODE_BELOW_MIN_AMOUNTS = 309
CODE_NOT_ISSUER = 310
CODE_OVERFLOW = 311

POOL_ACCOUNT = module_address("pool")


# Shares of the first deposit that stay in the pool owned by nobody (Uniswap v2's rule):
# the pool can never be emptied, so nobody can inflate the price of a share to round a
# later depositor's shares down to nothing.
MINIMUM_LIQUIDITY = 1000

@record
class Pool(Record):
    """The pool's reserves and the LP shares in issue (state key "xp")."""

    gpu: Annotated[int, U64]
    stable: Annotated[int, U64]
    shares: Annotated[int, U64]


EMPTY_POOL = Pool(gpu=0, stable=0, shares=0)


@record
class LpShares(Record):
    """One liquidity provider's pool shares (state key "xl" + address)."""

    shares: Annotated[int, U64]


@record
class StableIssuer(Record):
    """The one account allowed to issue stable units (state key "xi")."""

    address: Annotated[bytes, ADDRESS]


@record
class PriceOracle(Record):
    """Σ spot price over every block that began with a live pool (state key "xo").

    `cumulative` is a 256-bit big-endian sum (mod 2^256) of the spot prices
    (PRICE_SCALE fixed point) seen before each block's txs; `observations`
    counts those blocks; `last_height` is the latest of them.
    """

    cumulative: Annotated[bytes, ACC]
    observations: Annotated[int, U64]
    last_height: Annotated[int, U64]


EMPTY_ORACLE = PriceOracle(cumulative=ZERO_ACC, observations=0, last_height=0)


# --- reads --------------------------------------------------------------------


def get_pool(state: State) -> Pool:
    """The pool record (EMPTY_POOL when there is none)."""
    return state.get(POOL_KEY, Pool, EMPTY_POOL)


def set_pool(state: State, pool: Pool) -> None:
    """Store the pool record; an empty pool is deleted."""
    state.put(POOL_KEY, None if pool == EMPTY_POOL else pool)


def is_live(pool: Pool) -> bool:
    """A pool can be traded against when both reserves are positive."""
    return pool.gpu > 0 and pool.stable > 0


def spot_price(pool: Pool) -> int:
    """Stable per GPU in PRICE_SCALE fixed point (0 for a pool that is not live)."""
    return pool.stable * PRICE_SCALE // pool.gpu if is_live(pool) else 0


def lp_key(address: bytes) -> bytes:
    """State key of an address's LP shares."""
    return LP_PREFIX + address


def get_lp_shares(state: State, address: bytes) -> int:
    """The pool shares `address` holds."""
    return state.get(lp_key(address), LpShares, LpShares(shares=0)).shares


def _set_lp_shares(state: State, address: bytes, shares: int) -> None:
    state.put(lp_key(address), LpShares(shares=shares) if shares else None)


def get_issuer(state: State) -> bytes | None:
    """The stable issuer's address, or None when the chain has none."""
    issuer = state.get(ISSUER_KEY, StableIssuer)
    return None if issuer is None else issuer.address


def get_oracle(state: State) -> PriceOracle:
    """The price oracle (EMPTY_ORACLE before the first observation)."""
    return state.get(ORACLE_KEY, PriceOracle, EMPTY_ORACLE)


def compute_twap(before: PriceOracle, after: PriceOracle) -> int | None:
    """The mean spot price over the observations between two oracle readings (None if none)."""
    count = after.observations - before.observations
    if count <= 0:
        return None
    total = (acc_to_int(after.cumulative) - acc_to_int(before.cumulative)) % ACC_MODULUS
    return total // count


# --- pure pool math -----------------------------------------------------------


def quote(pool: Pool, denom_in: int, amount_in: int, fee_bps: int) -> int:
    """What `amount_in` of `denom_in` buys: the constant-product output after the fee.

    in_after_fee = amount_in * (10000 - fee) // 10000;
    out = reserve_out * in_after_fee // (reserve_in + in_after_fee).
    """
    reserve_in, reserve_out = _reserves(pool, denom_in)
    in_after_fee = amount_in * (BPS - fee_bps) // BPS
    if reserve_in + in_after_fee == 0:
        return 0
    return reserve_out * in_after_fee // (reserve_in + in_after_fee)


def compute_swap(pool: Pool, denom_in: int, amount_in: int, amount_out: int) -> Pool:
    """The pool after `amount_in` of `denom_in` enters and `amount_out` of the other leaves."""
    if denom_in == DENOM_GPU:
        return dataclasses.replace(pool, gpu=pool.gpu + amount_in,
                                   stable=pool.stable - amount_out)
    return dataclasses.replace(pool, stable=pool.stable + amount_in, gpu=pool.gpu - amount_out)


def compute_deposit(pool: Pool, gpu: int, stable: int) -> tuple[int, int, int]:
    """(shares, gpu taken, stable taken) for a deposit of at most `gpu` and `stable`.

    Into an empty pool: shares = isqrt(gpu * stable) - MINIMUM_LIQUIDITY (those stay
    locked in the pool, owned by nobody), both amounts taken. Else
    shares = min(gpu * S // Rg, stable * S // Rs) and each side takes
    ceil(shares * R / S), never more than offered.
    """
    if not is_live(pool):
        return isqrt(gpu * stable) - MINIMUM_LIQUIDITY, gpu, stable
    shares = min(gpu * pool.shares // pool.gpu, stable * pool.shares // pool.stable)
    return shares, _ceil_div(shares * pool.gpu, pool.shares), _ceil_div(
        shares * pool.stable, pool.shares)


def compute_withdrawal(pool: Pool, shares: int) -> tuple[int, int]:
    """(gpu, stable) that `shares` redeem: their pro-rata part of each reserve, rounded down."""
    return pool.gpu * shares // pool.shares, pool.stable * shares // pool.shares


def _reserves(pool: Pool, denom_in: int) -> tuple[int, int]:
    return (pool.gpu, pool.stable) if denom_in == DENOM_GPU else (pool.stable, pool.gpu)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- genesis ------------------------------------------------------------------


def init_exchange(state: State, issuer: bytes | None, pool_gpu: int, pool_stable: int,
                  lp_owner: bytes) -> None:
    """Genesis: name the stable issuer and seed the pool (none when either amount is 0).

    The seed is credited to module account "pool" directly; the caller counts
    it in the genesis supply. The initial isqrt(gpu * stable) shares go to
    `lp_owner`, less MINIMUM_LIQUIDITY locked for good.
    """
    if issuer is not None:
        state.put(ISSUER_KEY, StableIssuer(address=issuer))
    if pool_gpu == 0 or pool_stable == 0:
        return
    account = state.get_account(POOL_ACCOUNT)
    state.set_account(POOL_ACCOUNT, dataclasses.replace(
        account, gpu=account.gpu + pool_gpu, stable=account.stable + pool_stable))
    shares = isqrt(pool_gpu * pool_stable)
    if shares <= MINIMUM_LIQUIDITY:
        raise ValueError(f"pool seed too small: isqrt(gpu * stable) must exceed "
                         f"{MINIMUM_LIQUIDITY}, got {shares}")
    set_pool(state, Pool(gpu=pool_gpu, stable=pool_stable, shares=shares))
    _set_lp_shares(state, lp_owner, shares - MINIMUM_LIQUIDITY)


# --- block rule ---------------------------------------------------------------


def begin_block(state: State, ctx: BlockContext) -> None:
    """Before the txs: add the live pool's spot price to the cumulative price."""
    pool = get_pool(state)
    if not is_live(pool):
        return
    oracle = get_oracle(state)
    cumulative = (acc_to_int(oracle.cumulative) + spot_price(pool)) % ACC_MODULUS
    state.put(ORACLE_KEY, PriceOracle(cumulative=int_to_acc(cumulative),
                                      observations=oracle.observations + 1,
                                      last_height=ctx.height))


# --- tx handlers --------------------------------------------------------------


def apply_swap(state: State, sender: bytes, body: Swap, ctx: BlockContext) -> None:
    """Trade `amount_in` of one side for at least `min_out` (and more than 0) of the other."""
    _validate_denom(body.denom_in)
    _validate_positive(body.amount_in, "amount_in")
    _validate_can_spend(state, sender, ctx, body.denom_in, body.amount_in)
    pool = _live_pool(state)
    out = quote(pool, body.denom_in, body.amount_in, ctx.params.tokenomics.pool_fee_bps)
    if out == 0:
        raise TxFailed(CODE_ZERO_OUTPUT, f"swap of {body.amount_in} buys nothing")
    if out < body.min_out:
        raise TxFailed(CODE_BELOW_MIN_OUT, f"swap gives {out}, below min_out {body.min_out}")
    after = compute_swap(pool, body.denom_in, body.amount_in, out)
    _validate_fits(after.gpu, after.stable)
    _move_in(state, sender, body.denom_in, body.amount_in)
    _move_out(state, sender, DENOM_STABLE if body.denom_in == DENOM_GPU else DENOM_GPU, out)
    set_pool(state, after)


def apply_add_liquidity(state: State, sender: bytes, body: AddLiquidity,
                        ctx: BlockContext) -> None:
    """Deposit at most `gpu` and `stable` at the pool's ratio for at least `min_shares`."""
    _validate_positive(body.gpu, "gpu")
    _validate_positive(body.stable, "stable")
    _validate_can_spend(state, sender, ctx, DENOM_GPU, body.gpu)
    _validate_can_spend(state, sender, ctx, DENOM_STABLE, body.stable)
    pool = get_pool(state)
    shares, gpu, stable = compute_deposit(pool, body.gpu, body.stable)
    if shares <= 0:
        raise TxFailed(CODE_ZERO_SHARES, "deposit too small to earn a pool share (a first "
                       f"deposit needs isqrt(gpu * stable) > {MINIMUM_LIQUIDITY})")
    if shares < body.min_shares:
        raise TxFailed(CODE_BELOW_MIN_SHARES,
                       f"deposit earns {shares} shares, below min_shares {body.min_shares}")
    minted = shares if is_live(pool) else shares + MINIMUM_LIQUIDITY
    after = Pool(gpu=pool.gpu + gpu, stable=pool.stable + stable, shares=pool.shares + minted)
    _validate_fits(after.gpu, after.stable, after.shares)
    supply.move(state, sender, POOL_ACCOUNT, gpu=gpu, stable=stable)
    set_pool(state, after)
    _set_lp_shares(state, sender, get_lp_shares(state, sender) + shares)


def apply_remove_liquidity(state: State, sender: bytes, body: RemoveLiquidity,
                           ctx: BlockContext) -> None:
    """Redeem `shares` for their pro-rata reserves (rounded down), at least the minimums."""
    _validate_positive(body.shares, "shares")
    held = get_lp_shares(state, sender)
    if body.shares > held:
        raise TxFailed(CODE_INSUFFICIENT_SHARES,
                       f"cannot redeem {body.shares} shares: holds {held}")
    pool = get_pool(state)
    gpu, stable = compute_withdrawal(pool, body.shares)
    if gpu == 0 and stable == 0:
        raise TxFailed(CODE_ZERO_OUTPUT, f"{body.shares} shares redeem nothing")
    if gpu < body.min_gpu or stable < body.min_stable:
        raise TxFailed(CODE_BELOW_MIN_AMOUNTS,
                       f"redeems gpu {gpu} stable {stable}, below min_gpu {body.min_gpu} "
                       f"or min_stable {body.min_stable}")
    supply.move(state, POOL_ACCOUNT, sender, gpu=gpu, stable=stable)
    set_pool(state, Pool(gpu=pool.gpu - gpu, stable=pool.stable - stable,
                         shares=pool.shares - body.shares))
    _set_lp_shares(state, sender, held - body.shares)


def apply_issue_stable(state: State, sender: bytes, body: IssueStable,
                       ctx: BlockContext) -> None:
    """Only the genesis issuer creates stable units, `amount` of them to `to`."""
    issuer = get_issuer(state)
    if issuer is None or sender != issuer:
        raise TxFailed(CODE_NOT_ISSUER, "only the stable issuer may issue stable units")
    _validate_positive(body.amount, "amount")
    if supply.get_supply(state).stable_issued + body.amount > UINT64_MAX:
        raise TxFailed(CODE_OVERFLOW, "stable issued would exceed uint64")
    supply.issue_stable(state, body.to, body.amount)


# --- checks and moves ---------------------------------------------------------


def _validate_denom(denom: int) -> None:
    if denom not in (DENOM_GPU, DENOM_STABLE):
        raise TxFailed(CODE_UNKNOWN_DENOM, f"unknown denom {denom}: expected 0 (gpu) or 1")


def _validate_positive(amount: int, name: str) -> None:
    if amount == 0:
        raise TxFailed(CODE_ZERO_AMOUNT, f"{name} must be positive")


def _validate_can_spend(state: State, sender: bytes, ctx: BlockContext, denom: int,
                        amount: int) -> None:
    account = state.get_account(sender)
    have = spendable_gpu(account, ctx.height) if denom == DENOM_GPU else account.stable
    if amount > have:
        name = "gpu" if denom == DENOM_GPU else "stable"
        raise TxFailed(CODE_INSUFFICIENT_BALANCE, f"spendable {name} {have}, needs {amount}")


def _validate_fits(*values: int) -> None:
    if max(values) > UINT64_MAX:
        raise TxFailed(CODE_OVERFLOW, "pool amounts would exceed uint64")


def _live_pool(state: State) -> Pool:
    pool = get_pool(state)
    if not is_live(pool):
        raise TxFailed(CODE_NO_POOL, "the pool has no liquidity")
    return pool


def _move_in(state: State, sender: bytes, denom: int, amount: int) -> None:
    if denom == DENOM_GPU:
        supply.move(state, sender, POOL_ACCOUNT, gpu=amount)
    else:
        supply.move(state, sender, POOL_ACCOUNT, stable=amount)


def _move_out(state: State, target: bytes, denom: int, amount: int) -> None:
    if denom == DENOM_GPU:
        supply.move(state, POOL_ACCOUNT, target, gpu=amount)
    else:
        supply.move(state, POOL_ACCOUNT, target, stable=amount)
