"""Revenue in, GPU bought back from the pool and burned, in TWAP-guarded slices.

GPU-rental revenue arrives in stable units in module account "treasury"
(`pay_revenue`). Time is cut into periods of `buyback_period_blocks`, counted
from the chain's first height. When a period begins, its budget is the
treasury's stable balance at that moment (last period's revenue plus anything
left unspent). The period has S = period // interval slices, one at the last
block of each interval; slice i spends budget*(i+1)//S - budget*i//S, so the
slices add up to the budget exactly.

A slice buys GPU from the pool only if its execution price (stable in / GPU
out) is at most the oracle's time-weighted average price since the previous
slice plus `buyback_max_slippage_bps`; otherwise it is skipped and its stable
stays in the treasury for the next period. A swap that pushes the price up
just before a slice moves the spot price but hardly the average, so the slice
is skipped instead of paying the inflated price. Bought GPU is burned.

State: "xb" the BuybackState, "xh" + height(8) one BuybackSlice per slice that
had stable to spend.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Annotated

from chain.codec import U8, U64, Record, decode, record
from chain.records import ACC, DENOM_STABLE, ZERO_ACC, PayRevenue
from chain.state import EXCHANGE_PREFIX, State, module_address
from chain.types import UINT64_MAX
from consensus import supply
from consensus.context import BlockContext, TxFailed
from consensus.exchange import (
    BPS,
    POOL_ACCOUNT,
    PRICE_SCALE,
    PriceOracle,
    compute_swap,
    compute_twap,
    get_oracle,
    get_pool,
    is_live,
    quote,
    set_pool,
)

STATE_KEY = EXCHANGE_PREFIX + b"b"  # -> BuybackState
HISTORY_PREFIX = EXCHANGE_PREFIX + b"h"  # + height(8) -> BuybackSlice

TREASURY = module_address("treasury")

# Receipt codes (350-399).
CODE_ZERO_REVENUE = 350
CODE_INSUFFICIENT_STABLE = 351

# Why a slice did not buy (BuybackSlice.reason; 0 = it bought).
REASON_BOUGHT = 0
REASON_NO_POOL = 1  # the pool has no liquidity
REASON_NO_PRICE = 2  # the oracle saw no block with a live pool since the last slice
REASON_ZERO_OUTPUT = 3  # the slice is too small to buy one base unit
REASON_SLIPPAGE = 4  # the price is above the TWAP plus the allowed slippage
REASON_TREASURY_SHORT = 5  # the treasury holds less than the slice


@record
class BuybackState(Record):
    """The buyback's bookkeeping (state key "xb").

    `begun` is 0 until the first period starts. In the current `period`:
    `budget` stable to spend in `slices_done` of the period's slices so far,
    `spent` of it spent. Lifetime: `revenue_total` stable received,
    `burned_total` GPU bought and burned, `slices_skipped`. The oracle reading
    at the last slice (`last_cumulative`, `last_observations`, `last_height`)
    starts the next slice's TWAP window; the first window starts at the
    oracle's first observation.
    """

    begun: Annotated[int, U8]
    period: Annotated[int, U64]
    budget: Annotated[int, U64]
    slices_done: Annotated[int, U64]
    spent: Annotated[int, U64]
    revenue_total: Annotated[int, U64]
    burned_total: Annotated[int, U64]
    slices_skipped: Annotated[int, U64]
    last_cumulative: Annotated[bytes, ACC]
    last_observations: Annotated[int, U64]
    last_height: Annotated[int, U64]


EMPTY_STATE = BuybackState(begun=0, period=0, budget=0, slices_done=0, spent=0,
                           revenue_total=0, burned_total=0, slices_skipped=0,
                           last_cumulative=ZERO_ACC, last_observations=0, last_height=0)


@record
class BuybackSlice(Record):
    """One slice (state key "xh" + height): stable spent, GPU burned, or why it was skipped."""

    height: Annotated[int, U64]
    stable_in: Annotated[int, U64]
    gpu_burned: Annotated[int, U64]
    skipped: Annotated[int, U8]
    reason: Annotated[int, U8]


# --- queries ------------------------------------------------------------------


def get_buyback_state(state: State) -> BuybackState:
    """The buyback's bookkeeping (EMPTY_STATE before anything happened)."""
    return state.get(STATE_KEY, BuybackState, EMPTY_STATE)


def history_key(height: int) -> bytes:
    """State key of the slice taken at `height`."""
    return HISTORY_PREFIX + height.to_bytes(8, "big")


def buyback_history(state: State, heights: Iterable[int]) -> list[BuybackSlice]:
    """The slices taken at any of `heights`, in height order (heights without one are left out)."""
    found = (state.get(history_key(h), BuybackSlice) for h in sorted(set(heights)))
    return [entry for entry in found if entry is not None]


def decode_history(entries: Iterable[tuple[bytes, bytes]]) -> list[BuybackSlice]:
    """Decode committed (key, value) pairs under HISTORY_PREFIX (a store prefix scan)."""
    return [decode(BuybackSlice, raw) for key, raw in entries
            if key.startswith(HISTORY_PREFIX) and raw]


# --- revenue ------------------------------------------------------------------


def pay_revenue(state: State, payer: bytes, amount: int) -> None:
    """Move `amount` stable from `payer` (who holds it) to the treasury, counted as revenue."""
    supply.move(state, payer, TREASURY, stable=amount)
    current = get_buyback_state(state)
    total = min(current.revenue_total + amount, UINT64_MAX)  # a lifetime statistic: saturates
    state.put(STATE_KEY, replace(current, revenue_total=total))


def apply_pay_revenue(state: State, sender: bytes, body: PayRevenue, ctx: BlockContext) -> None:
    """The sender pays `amount` (0 < amount <= its stable) of rental revenue to the treasury."""
    if body.amount == 0:
        raise TxFailed(CODE_ZERO_REVENUE, "amount must be positive")
    have = state.get_account(sender).stable
    if body.amount > have:
        raise TxFailed(CODE_INSUFFICIENT_STABLE, f"stable {have}, needs {body.amount}")
    pay_revenue(state, sender, body.amount)


# --- block rule ---------------------------------------------------------------


def end_block(state: State, ctx: BlockContext) -> None:
    """After the txs: a new period takes the treasury as its budget; the last block of each
    interval takes that interval's slice."""
    tokenomics = ctx.params.tokenomics
    offset = ctx.height - ctx.first_height
    period, in_period = divmod(offset, tokenomics.buyback_period_blocks)
    before = current = get_buyback_state(state)
    if not current.begun or current.period != period:
        current = _begin_period(state, current, period)
    interval = tokenomics.buyback_interval_blocks
    slice_index, at = divmod(in_period, interval)
    slices = tokenomics.buyback_period_blocks // interval
    if at == interval - 1 and slice_index < slices:
        current = _take_slice(state, ctx, current, compute_slice(current.budget, slice_index,
                                                                 slices))
    if current != before:
        state.put(STATE_KEY, current)


def compute_slice(budget: int, index: int, slices: int) -> int:
    """Slice `index` of `slices` equal slices of `budget`: they sum to `budget` exactly."""
    return budget * (index + 1) // slices - budget * index // slices


def _begin_period(state: State, current: BuybackState, period: int) -> BuybackState:
    """A new period: its budget is what the treasury holds now."""
    budget = state.get_account(TREASURY).stable
    return replace(current, begun=1, period=period, budget=budget, slices_done=0, spent=0)


def _take_slice(state: State, ctx: BlockContext, current: BuybackState,
                amount: int) -> BuybackState:
    """Buy and burn GPU for `amount` stable if the price allows; close the TWAP window."""
    oracle = get_oracle(state)
    window_start = PriceOracle(cumulative=current.last_cumulative,
                               observations=current.last_observations,
                               last_height=current.last_height)
    after = replace(current, slices_done=current.slices_done + 1,
                    last_cumulative=oracle.cumulative, last_observations=oracle.observations,
                    last_height=ctx.height)
    if amount == 0:
        return after
    reason, burned = _try_buy(state, ctx, amount, compute_twap(window_start, oracle))
    state.put(history_key(ctx.height), BuybackSlice(
        height=ctx.height, stable_in=amount if reason == REASON_BOUGHT else 0,
        gpu_burned=burned, skipped=int(reason != REASON_BOUGHT), reason=reason))
    if reason != REASON_BOUGHT:
        return replace(after, slices_skipped=after.slices_skipped + 1)
    return replace(after, spent=after.spent + amount,
                   burned_total=after.burned_total + burned)


def _try_buy(state: State, ctx: BlockContext, amount: int,
             twap: int | None) -> tuple[int, int]:
    """(reason, GPU burned): swap `amount` treasury stable for GPU and burn it, or say why not."""
    pool = get_pool(state)
    if not is_live(pool):
        return REASON_NO_POOL, 0
    if twap is None:
        return REASON_NO_PRICE, 0
    if state.get_account(TREASURY).stable < amount:
        return REASON_TREASURY_SHORT, 0
    tokenomics = ctx.params.tokenomics
    out = quote(pool, DENOM_STABLE, amount, tokenomics.pool_fee_bps)
    if out == 0:
        return REASON_ZERO_OUTPUT, 0
    if not is_within_slippage(amount, out, twap, tokenomics.buyback_max_slippage_bps):
        return REASON_SLIPPAGE, 0
    supply.move(state, TREASURY, POOL_ACCOUNT, stable=amount)
    set_pool(state, compute_swap(pool, DENOM_STABLE, amount, out))
    supply.burn(state, POOL_ACCOUNT, out)
    return REASON_BOUGHT, out


def is_within_slippage(stable_in: int, gpu_out: int, twap: int, max_slippage_bps: int) -> bool:
    """stable_in / gpu_out <= twap / PRICE_SCALE * (10000 + slippage) / 10000, cross-multiplied."""
    return stable_in * PRICE_SCALE * BPS <= twap * gpu_out * (BPS + max_slippage_bps)


