"""Revenue, the period budget, TWAP-guarded buyback slices and the burn (consensus/buyback.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.records import DENOM_GPU, DENOM_STABLE, Account, PayRevenue, Swap
from chain.state import State
from consensus import buyback, exchange, supply
from consensus.buyback import (
    REASON_BOUGHT,
    REASON_NO_POOL,
    REASON_SLIPPAGE,
    TREASURY,
    apply_pay_revenue,
    buyback_history,
    compute_slice,
    get_buyback_state,
)
from consensus.context import BlockContext, TxFailed
from consensus.exchange import PRICE_SCALE, apply_swap, get_pool, quote
from consensus.params import NetworkParams, TokenomicsParams
from tests.committed import commit_writes

ALICE = b"\x0a" * 20
TRADER = b"\x7a" * 20
SEEDER = b"\x5e" * 20
DEEP = 10**13
PERIOD, INTERVAL = 40, 4  # ten slices, at heights 4, 8, ..., 40 of the first period
SLICE_HEIGHTS = [INTERVAL * (i + 1) for i in range(PERIOD // INTERVAL)]
Tx = Callable[[State, BlockContext], None]
CTX = BlockContext(chain_id="test", height=1, fee_recipient=bytes(20), min_fee=0)


def params(period: int = PERIOD, interval: int = INTERVAL) -> NetworkParams:
    """Default parameters with a short buyback period."""
    return NetworkParams(tokenomics=TokenomicsParams(buyback_period_blocks=period,
                                                     buyback_interval_blocks=interval))


class Chain:
    """Blocks applied in the economy's order over a committed dict, checking the supply."""

    def __init__(self, accounts: dict[bytes, tuple[int, int]], pool_gpu: int, pool_stable: int,
                 net: NetworkParams | None = None, first_height: int = 1) -> None:
        state = State(lambda _key: None)
        for address, (gpu, stable) in sorted(accounts.items()):
            state.set_account(address, Account(gpu=gpu, stable=stable, nonce=0, licences=0,
                                               locks=()))
        exchange.init_exchange(state, None, pool_gpu, pool_stable, SEEDER)
        supply.init_supply(state, sum(g for g, _ in accounts.values()) + pool_gpu,
                           sum(s for _, s in accounts.values()) + pool_stable)
        self.committed: dict[bytes, bytes] = {}
        self._commit(state)
        self.params = net or params()
        self.first_height = first_height
        self.height = first_height - 1

    def _commit(self, state: State) -> None:
        commit_writes(self.committed, state.write_set())

    def view(self) -> State:
        """The committed state."""
        return State(self.committed.get)

    def block(self, *txs: Tx) -> State:
        """Apply one block: oracle, txs, buyback; check the supply invariant; commit."""
        self.height += 1
        state = self.view()
        ctx = BlockContext(chain_id="test", height=self.height, fee_recipient=bytes(20),
                           min_fee=0, params=self.params, first_height=self.first_height)
        exchange.begin_block(state, ctx)
        for tx in txs:
            tx(state, ctx)
        buyback.end_block(state, ctx)
        supply.track_balances(state)
        supply.check_supply_invariant(state)
        self._commit(state)
        return state

    def run_to(self, height: int) -> None:
        """Apply empty blocks up to and including `height`."""
        while self.height < height:
            self.block()


def pay(sender: bytes, amount: int) -> Tx:
    """A PayRevenue tx."""
    return lambda state, ctx: apply_pay_revenue(state, sender, PayRevenue(amount=amount), ctx)


def swap(sender: bytes, denom_in: int, amount: int) -> Tx:
    """A Swap tx with no minimum."""
    return lambda state, ctx: apply_swap(state, sender, Swap(denom_in=denom_in,
                                                             amount_in=amount, min_out=0), ctx)


def history(chain: Chain) -> list[buyback.BuybackSlice]:
    """Every slice record, by a prefix scan of committed state (as the RPC reads it)."""
    entries = sorted((k, v) for k, v in chain.committed.items()
                     if k.startswith(buyback.HISTORY_PREFIX))
    return buyback.decode_history(entries)


# --- revenue ------------------------------------------------------------------


def test_pay_revenue_moves_stable_to_the_treasury_and_counts_it():
    chain = Chain({ALICE: (0, 500)}, DEEP, DEEP)
    state = chain.block(pay(ALICE, 200), pay(ALICE, 300))
    assert state.get_account(ALICE).stable == 0
    assert state.get_account(TREASURY).stable == 500
    assert get_buyback_state(state).revenue_total == 500


@pytest.mark.parametrize(("amount", "code"), [(0, buyback.CODE_ZERO_REVENUE),
                                              (501, buyback.CODE_INSUFFICIENT_STABLE)])
def test_pay_revenue_failures(amount, code):
    state = Chain({ALICE: (10**6, 500)}, DEEP, DEEP).view()
    with pytest.raises(TxFailed) as info:
        apply_pay_revenue(state, ALICE, PayRevenue(amount=amount), CTX)
    assert info.value.code == code
    assert state.changed() == {}


# --- slices -------------------------------------------------------------------


@given(budget=st.integers(0, 2**64 - 1), slices=st.integers(1, 10_000))
def test_slices_sum_to_the_budget(budget, slices):
    parts = [compute_slice(budget, i, slices) for i in range(slices)]
    assert sum(parts) == budget
    assert max(parts) - min(parts) <= 1


@settings(max_examples=15, deadline=None)
@given(budget=st.integers(10**6, 10**10), first_height=st.integers(1, 1_000),
       shape=st.sampled_from([(40, 4), (30, 7), (12, 1), (9, 9)]))
def test_quiet_market_spends_the_whole_budget_and_burns_what_it_buys(budget, first_height,
                                                                   shape):
    period, interval = shape
    chain = Chain({ALICE: (0, budget)}, DEEP, DEEP, params(period, interval), first_height)
    chain.block(pay(ALICE, budget))  # the first block of period 0: in its budget
    chain.run_to(first_height + period - 1)
    done = get_buyback_state(chain.view())
    slices = history(chain)
    assert [s.height - first_height + 1 for s in slices] == [
        interval * (i + 1) for i in range(period // interval)]
    assert all(s.reason == REASON_BOUGHT and not s.skipped for s in slices)
    assert sum(s.stable_in for s in slices) == done.spent == done.budget == budget
    assert chain.view().get_account(TREASURY).stable == 0
    burned = sum(s.gpu_burned for s in slices)
    assert done.burned_total == burned == supply.get_supply(chain.view()).burned > 0
    assert get_pool(chain.view()).gpu == DEEP - burned
    assert done.slices_skipped == 0 and done.slices_done == period // interval


def test_quiet_market_with_small_trades_executes_every_slice():
    chain = Chain({ALICE: (0, 10**10), TRADER: (10**10, 10**10)}, DEEP, DEEP)
    chain.block(pay(ALICE, 10**10))
    while chain.height < PERIOD:
        denom = DENOM_GPU if chain.height % 2 else DENOM_STABLE
        chain.block(swap(TRADER, denom, 10**8))
    slices = history(chain)
    assert len(slices) == len(SLICE_HEIGHTS)
    assert all(s.reason == REASON_BOUGHT for s in slices)
    assert get_buyback_state(chain.view()).spent == 10**10


@pytest.mark.parametrize("blocks_before_slice", [0, 1])
def test_sandwich_before_a_slice_makes_it_skip_instead_of_overpaying(blocks_before_slice):
    chain = Chain({ALICE: (0, 10**10), TRADER: (0, DEEP // 20)}, DEEP, DEEP)
    chain.block(pay(ALICE, 10**10))
    target = SLICE_HEIGHTS[1]
    chain.run_to(target - blocks_before_slice - 1)
    quiet_pool = get_pool(chain.view())
    attack = swap(TRADER, DENOM_STABLE, DEEP // 20)  # buy GPU: its price jumps ~10 %
    if blocks_before_slice:
        chain.block(attack)
        window = get_buyback_state(chain.view())
        chain.block()
    else:  # the attack shares the slice's block
        window = get_buyback_state(chain.view())
        chain.block(attack)
    after = chain.view()
    record = buyback_history(after, [target])[0]
    assert (record.skipped, record.reason, record.stable_in, record.gpu_burned) == (
        1, REASON_SLIPPAGE, 0, 0)
    assert get_buyback_state(after).slices_skipped == 1
    assert after.get_account(TREASURY).stable == 10**10 - compute_slice(10**10, 0, 10)
    assert supply.get_supply(after).burned == history(chain)[0].gpu_burned
    # Executing would have paid more than the TWAP plus 1 %; before the attack it would not.
    twap = exchange.compute_twap(exchange.PriceOracle(
        cumulative=window.last_cumulative, observations=window.last_observations,
        last_height=window.last_height), exchange.get_oracle(after))
    amount = compute_slice(10**10, 1, len(SLICE_HEIGHTS))
    fee = chain.params.tokenomics.pool_fee_bps
    assert not buyback.is_within_slippage(amount, quote(get_pool(after), DENOM_STABLE, amount,
                                                        fee), twap, 100)
    assert buyback.is_within_slippage(amount, quote(quiet_pool, DENOM_STABLE, amount, fee),
                                      twap, 100)


def test_skipped_stable_and_new_revenue_form_the_next_budget():
    chain = Chain({ALICE: (0, 10**10), TRADER: (0, DEEP // 20)}, DEEP, DEEP)
    chain.block(pay(ALICE, 10**10 - 1_000))
    chain.run_to(SLICE_HEIGHTS[1] - 1)
    chain.block(swap(TRADER, DENOM_STABLE, DEEP // 20))  # skipped slice 2
    chain.block(pay(ALICE, 1_000))  # revenue during period 0 waits for period 1
    chain.run_to(PERIOD)
    state = chain.view()
    skipped = [s for s in history(chain) if s.skipped]
    assert [s.height for s in skipped] == [SLICE_HEIGHTS[1]]
    left = compute_slice(10**10 - 1_000, 1, len(SLICE_HEIGHTS)) + 1_000
    assert state.get_account(TREASURY).stable == left
    chain.block()  # the first block of period 1
    current = get_buyback_state(chain.view())
    assert (current.period, current.budget, current.spent, current.slices_done) == (1, left, 0,
                                                                                     0)
    assert current.revenue_total == 10**10


def test_no_pool_skips_and_keeps_the_stable():
    chain = Chain({ALICE: (0, 1_000)}, 0, 0)
    chain.block(pay(ALICE, 1_000))
    chain.run_to(PERIOD)
    slices = history(chain)
    assert [s.reason for s in slices] == [REASON_NO_POOL] * len(SLICE_HEIGHTS)
    assert chain.view().get_account(TREASURY).stable == 1_000
    assert supply.get_supply(chain.view()).burned == 0


def test_empty_budget_writes_no_history():
    chain = Chain({}, DEEP, DEEP)
    chain.run_to(PERIOD)
    current = get_buyback_state(chain.view())
    assert history(chain) == []
    assert (current.budget, current.slices_done, current.slices_skipped) == (0, 10, 0)


def test_history_query_by_heights():
    chain = Chain({ALICE: (0, 10**9)}, DEEP, DEEP)
    chain.block(pay(ALICE, 10**9))
    chain.run_to(SLICE_HEIGHTS[2])
    found = buyback_history(chain.view(), [SLICE_HEIGHTS[1], 5, SLICE_HEIGHTS[0]])
    assert [s.height for s in found] == SLICE_HEIGHTS[:2]
    assert found == history(chain)[:2]


def test_slippage_bound_is_exact():
    twap = 3 * PRICE_SCALE  # 3 stable per GPU
    assert buyback.is_within_slippage(303, 100, twap, 100)
    assert not buyback.is_within_slippage(304, 100, twap, 100)
    assert not buyback.is_within_slippage(301, 100, twap, 0)


def test_period_budget_is_the_treasury_when_the_period_changes():
    net = dataclasses.replace(params(), tokenomics=dataclasses.replace(
        params().tokenomics, buyback_period_blocks=10, buyback_interval_blocks=5))
    chain = Chain({ALICE: (0, 900)}, 0, 0, net)
    chain.block()
    assert get_buyback_state(chain.view()).budget == 0
    chain.block(pay(ALICE, 900))
    chain.run_to(10)
    assert get_buyback_state(chain.view()).budget == 0
    chain.block()
    assert get_buyback_state(chain.view()).budget == 900
