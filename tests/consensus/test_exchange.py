"""The GPU/stable pool, the stable issuer and the price oracle (consensus/exchange.py)."""

from __future__ import annotations

import contextlib
from math import isqrt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.records import (
    DENOM_GPU,
    DENOM_STABLE,
    Account,
    AddLiquidity,
    IssueStable,
    Lock,
    RemoveLiquidity,
    Swap,
    acc_to_int,
)
from chain.state import State
from chain.types import UINT64_MAX
from consensus import exchange, supply
from consensus.context import BlockContext, TxFailed
from consensus.exchange import (
    EMPTY_POOL,
    POOL_ACCOUNT,
    PRICE_SCALE,
    Pool,
    apply_add_liquidity,
    apply_issue_stable,
    apply_remove_liquidity,
    apply_swap,
    get_lp_shares,
    get_oracle,
    get_pool,
    quote,
)
from consensus.params import NetworkParams

ALICE = b"\x0a" * 20
BOB = b"\x0b" * 20
ISSUER = b"\x11" * 20
SEEDER = b"\x5e" * 20
HEIGHT = 10
CTX = BlockContext(chain_id="test", height=HEIGHT, fee_recipient=b"\xfe" * 20, min_fee=0,
                   params=NetworkParams())
FEE = CTX.params.tokenomics.pool_fee_bps


def committed_state(writes: dict[bytes, bytes]) -> State:
    """A fresh overlay over `writes` as committed state."""
    return State(lambda key: writes.get(key) or None)


def make_state(accounts: dict[bytes, tuple[int, int]], pool_gpu: int = 0, pool_stable: int = 0,
               issuer: bytes | None = ISSUER) -> State:
    """Genesis with `accounts` (gpu, stable) and a seeded pool, committed, as a new overlay."""
    state = State(lambda _key: None)
    for address, (gpu, stable) in sorted(accounts.items()):
        state.set_account(address, Account(gpu=gpu, stable=stable, nonce=0, licences=0,
                                           locks=()))
    exchange.init_exchange(state, issuer, pool_gpu, pool_stable, SEEDER)
    supply.init_supply(state, sum(g for g, _ in accounts.values()) + pool_gpu,
                       sum(s for _, s in accounts.values()) + pool_stable)
    return committed_state(state.write_set())


def check_books(state: State) -> None:
    """The supply invariant holds and the pool account holds exactly the reserves."""
    supply.track_balances(state)
    supply.check_supply_invariant(state)
    pool, account = get_pool(state), state.get_account(POOL_ACCOUNT)
    assert (account.gpu, account.stable) == (pool.gpu, pool.stable)


def fails(code: int, state: State, handler, sender: bytes, body) -> None:
    """`handler` raises TxFailed(code) and changes nothing."""
    before = state.changed()
    with pytest.raises(TxFailed) as info:
        handler(state, sender, body, CTX)
    assert info.value.code == code
    assert state.changed() == before


# --- genesis ------------------------------------------------------------------


def test_init_exchange_seeds_pool_and_issuer():
    state = make_state({}, pool_gpu=9_000, pool_stable=4_000)
    assert get_pool(state) == Pool(gpu=9_000, stable=4_000, shares=6_000)
    assert get_lp_shares(state, SEEDER) == 6_000 - exchange.MINIMUM_LIQUIDITY
    assert exchange.get_issuer(state) == ISSUER
    assert state.get_account(POOL_ACCOUNT).gpu == 9_000
    check_books(state)


@pytest.mark.parametrize(("gpu", "stable"), [(0, 5), (5, 0), (0, 0)])
def test_init_exchange_without_one_side_makes_no_pool(gpu, stable):
    state = make_state({}, pool_gpu=gpu, pool_stable=stable, issuer=None)
    assert get_pool(state) == EMPTY_POOL
    assert get_lp_shares(state, SEEDER) == 0
    assert exchange.get_issuer(state) is None
    assert state.get_account(POOL_ACCOUNT).gpu == 0


# --- swaps --------------------------------------------------------------------


def test_quote_is_the_constant_product_after_fee():
    pool = Pool(gpu=1_000_000, stable=2_000_000, shares=1)
    in_after_fee = 10_000 * (10_000 - 30) // 10_000
    assert quote(pool, DENOM_GPU, 10_000, 30) == 2_000_000 * in_after_fee // (
        1_000_000 + in_after_fee)
    assert quote(pool, DENOM_STABLE, 10_000, 0) == 1_000_000 * 10_000 // 2_010_000


def test_swap_moves_both_sides_and_keeps_the_fee_in_the_pool():
    state = make_state({ALICE: (10_000, 0)}, pool_gpu=1_000_000, pool_stable=1_000_000)
    out = quote(get_pool(state), DENOM_GPU, 10_000, FEE)
    apply_swap(state, ALICE, Swap(denom_in=DENOM_GPU, amount_in=10_000, min_out=out), CTX)
    alice = state.get_account(ALICE)
    assert (alice.gpu, alice.stable) == (0, out)
    after = get_pool(state)
    assert after == Pool(gpu=1_010_000, stable=1_000_000 - out, shares=1_000_000)
    assert after.gpu * after.stable > 1_000_000 * 1_000_000
    # Without the fee the product would be kept (up to rounding); with it, it grows.
    assert out < quote(Pool(gpu=1_000_000, stable=1_000_000, shares=1), DENOM_GPU, 10_000, 0)
    check_books(state)


@settings(max_examples=60, deadline=None)
@given(reserves=st.tuples(st.integers(1002, 10**15), st.integers(1002, 10**15)),
       swaps=st.lists(st.tuples(st.sampled_from([DENOM_GPU, DENOM_STABLE]),
                                st.integers(1, 10**14)), min_size=1, max_size=12),
       fee=st.integers(0, 9_999))
def test_constant_product_never_decreases(reserves, swaps, fee):
    params = NetworkParams()
    tokenomics = type(params.tokenomics)(pool_fee_bps=fee)
    ctx = BlockContext(chain_id="test", height=HEIGHT, fee_recipient=bytes(20), min_fee=0,
                       params=type(params)(tokenomics=tokenomics))
    state = make_state({ALICE: (10**15, 10**15)}, pool_gpu=reserves[0], pool_stable=reserves[1])
    for denom, amount in swaps:
        before = get_pool(state)
        try:
            apply_swap(state, ALICE, Swap(denom_in=denom, amount_in=amount, min_out=0), ctx)
        except TxFailed as failed:
            assert failed.code == exchange.CODE_ZERO_OUTPUT
            continue
        after = get_pool(state)
        assert after.gpu * after.stable >= before.gpu * before.stable
        assert after.gpu > 0 and after.stable > 0
    check_books(state)


def test_swap_min_out_is_honoured():
    state = make_state({ALICE: (0, 50_000)}, pool_gpu=1_000_000, pool_stable=1_000_000)
    out = quote(get_pool(state), DENOM_STABLE, 50_000, FEE)
    fails(exchange.CODE_BELOW_MIN_OUT, state, apply_swap, ALICE,
          Swap(denom_in=DENOM_STABLE, amount_in=50_000, min_out=out + 1))
    apply_swap(state, ALICE, Swap(denom_in=DENOM_STABLE, amount_in=50_000, min_out=out), CTX)
    assert state.get_account(ALICE).gpu == out


def test_swap_failures():
    locked = Account(gpu=100, stable=0, nonce=0, licences=0,
                     locks=(Lock(amount=60, release_height=HEIGHT + 1),))
    state = make_state({BOB: (0, 100)}, pool_gpu=1_000_000, pool_stable=1_000_000)
    state.set_account(ALICE, locked)
    fails(exchange.CODE_UNKNOWN_DENOM, state, apply_swap, ALICE,
          Swap(denom_in=2, amount_in=10, min_out=0))
    fails(exchange.CODE_ZERO_AMOUNT, state, apply_swap, ALICE,
          Swap(denom_in=DENOM_GPU, amount_in=0, min_out=0))
    fails(exchange.CODE_INSUFFICIENT_BALANCE, state, apply_swap, ALICE,
          Swap(denom_in=DENOM_GPU, amount_in=41, min_out=0))
    fails(exchange.CODE_INSUFFICIENT_BALANCE, state, apply_swap, BOB,
          Swap(denom_in=DENOM_STABLE, amount_in=101, min_out=0))
    fails(exchange.CODE_ZERO_OUTPUT, state, apply_swap, BOB,
          Swap(denom_in=DENOM_STABLE, amount_in=1, min_out=0))
    apply_swap(state, ALICE, Swap(denom_in=DENOM_GPU, amount_in=40, min_out=1), CTX)
    empty = make_state({ALICE: (100, 100)})
    fails(exchange.CODE_NO_POOL, empty, apply_swap, ALICE,
          Swap(denom_in=DENOM_GPU, amount_in=10, min_out=0))


# --- liquidity ----------------------------------------------------------------


def test_first_deposit_locks_minimum_liquidity_and_exit_leaves_it():
    """The first deposit's MINIMUM_LIQUIDITY shares belong to nobody: the pool never empties."""
    state = make_state({ALICE: (4_000, 9_000)})
    fails(exchange.CODE_ZERO_SHARES, state, apply_add_liquidity, ALICE,
          AddLiquidity(gpu=1_000, stable=1_000, min_shares=0))
    apply_add_liquidity(state, ALICE, AddLiquidity(gpu=4_000, stable=9_000, min_shares=5_000),
                        CTX)
    assert get_pool(state) == Pool(gpu=4_000, stable=9_000, shares=6_000)
    assert get_lp_shares(state, ALICE) == 5_000
    check_books(state)
    apply_remove_liquidity(state, ALICE, RemoveLiquidity(shares=5_000, min_gpu=3_333,
                                                         min_stable=7_500), CTX)
    assert get_pool(state) == Pool(gpu=667, stable=1_500, shares=1_000)
    assert get_lp_shares(state, ALICE) == 0
    assert state.get_account(ALICE).gpu == 3_333 and state.get_account(ALICE).stable == 7_500
    check_books(state)


def test_later_deposit_takes_only_what_the_ratio_needs():
    state = make_state({ALICE: (1_000, 1_000)}, pool_gpu=3_000, pool_stable=1_000)
    pool = get_pool(state)  # 1732 shares
    apply_add_liquidity(state, ALICE, AddLiquidity(gpu=1_000, stable=1_000, min_shares=1), CTX)
    shares = min(1_000 * pool.shares // 3_000, 1_000 * pool.shares // 1_000)
    gpu_taken = -(-shares * 3_000 // pool.shares)
    stable_taken = -(-shares * 1_000 // pool.shares)
    assert get_lp_shares(state, ALICE) == shares
    alice = state.get_account(ALICE)
    assert (alice.gpu, alice.stable) == (1_000 - gpu_taken, 1_000 - stable_taken)
    assert gpu_taken <= 1_000 and stable_taken < 1_000
    check_books(state)


def assert_no_dilution(before: Pool, after: Pool) -> None:
    """Each share is backed by at least as much of each reserve as before."""
    assert after.gpu * before.shares >= before.gpu * after.shares
    assert after.stable * before.shares >= before.stable * after.shares


@settings(max_examples=120, deadline=None)
@given(pool_gpu=st.integers(1002, 10**15), pool_stable=st.integers(1002, 10**15),
       gpu=st.integers(1, 10**15), stable=st.integers(1, 10**15),
       swap=st.integers(0, 10**14))
def test_add_then_remove_never_returns_more_than_deposited(pool_gpu, pool_stable, gpu,
                                                           stable, swap):
    state = make_state({ALICE: (gpu, stable), BOB: (10**14, 10**14)},
                       pool_gpu=pool_gpu, pool_stable=pool_stable)
    if swap:  # someone else trades first, so the ratio is not the seed's
        with contextlib.suppress(TxFailed):
            apply_swap(state, BOB, Swap(denom_in=DENOM_GPU, amount_in=swap, min_out=0), CTX)
    before = get_pool(state)
    try:
        apply_add_liquidity(state, ALICE, AddLiquidity(gpu=gpu, stable=stable, min_shares=0),
                            CTX)
    except TxFailed as failed:
        assert failed.code == exchange.CODE_ZERO_SHARES
        return
    assert_no_dilution(before, get_pool(state))
    shares = get_lp_shares(state, ALICE)
    try:
        apply_remove_liquidity(state, ALICE, RemoveLiquidity(shares=shares, min_gpu=0,
                                                             min_stable=0), CTX)
    except TxFailed as failed:
        assert failed.code == exchange.CODE_ZERO_OUTPUT
    assert_no_dilution(before, get_pool(state))
    alice = state.get_account(ALICE)
    assert alice.gpu <= gpu and alice.stable <= stable
    assert get_pool(state).shares == get_lp_shares(state, SEEDER) + exchange.MINIMUM_LIQUIDITY
    check_books(state)


@settings(max_examples=60, deadline=None)
@given(pool_gpu=st.integers(1002, 10**12), pool_stable=st.integers(1002, 10**12),
       redeem=st.integers(1, 10**6))
def test_partial_removal_is_pro_rata_rounded_down(pool_gpu, pool_stable, redeem):
    state = make_state({}, pool_gpu=pool_gpu, pool_stable=pool_stable)
    pool = get_pool(state)
    redeem = min(redeem, get_lp_shares(state, SEEDER))
    if redeem == 0:
        return
    gpu, stable = pool.gpu * redeem // pool.shares, pool.stable * redeem // pool.shares
    body = RemoveLiquidity(shares=redeem, min_gpu=0, min_stable=0)
    if gpu == 0 and stable == 0:
        fails(exchange.CODE_ZERO_OUTPUT, state, apply_remove_liquidity, SEEDER, body)
        return
    apply_remove_liquidity(state, SEEDER, body, CTX)
    seeder = state.get_account(SEEDER)
    assert (seeder.gpu, seeder.stable) == (gpu, stable)
    after = get_pool(state)
    # The shares left still cover the reserves left: S <= sqrt(Rg * Rs).
    assert after.shares <= isqrt(after.gpu * after.stable)
    check_books(state)


def test_liquidity_failures():
    state = make_state({ALICE: (1_000, 1_000), BOB: (10, 10)}, pool_gpu=1_000_000,
                       pool_stable=1_000_000)
    fails(exchange.CODE_ZERO_AMOUNT, state, apply_add_liquidity, ALICE,
          AddLiquidity(gpu=0, stable=10, min_shares=0))
    fails(exchange.CODE_INSUFFICIENT_BALANCE, state, apply_add_liquidity, ALICE,
          AddLiquidity(gpu=1_001, stable=10, min_shares=0))
    fails(exchange.CODE_INSUFFICIENT_BALANCE, state, apply_add_liquidity, ALICE,
          AddLiquidity(gpu=10, stable=1_001, min_shares=0))
    fails(exchange.CODE_BELOW_MIN_SHARES, state, apply_add_liquidity, ALICE,
          AddLiquidity(gpu=1_000, stable=1_000, min_shares=1_001))
    fails(exchange.CODE_INSUFFICIENT_SHARES, state, apply_remove_liquidity, ALICE,
          RemoveLiquidity(shares=1, min_gpu=0, min_stable=0))
    fails(exchange.CODE_ZERO_AMOUNT, state, apply_remove_liquidity, SEEDER,
          RemoveLiquidity(shares=0, min_gpu=0, min_stable=0))
    fails(exchange.CODE_BELOW_MIN_AMOUNTS, state, apply_remove_liquidity, SEEDER,
          RemoveLiquidity(shares=10, min_gpu=11, min_stable=0))
    fails(exchange.CODE_BELOW_MIN_AMOUNTS, state, apply_remove_liquidity, SEEDER,
          RemoveLiquidity(shares=10, min_gpu=0, min_stable=11))
    tiny = make_state({BOB: (10, 10)}, pool_gpu=10**12, pool_stable=1)
    fails(exchange.CODE_ZERO_SHARES, tiny, apply_add_liquidity, BOB,
          AddLiquidity(gpu=10, stable=10, min_shares=0))


# --- the stable issuer ---------------------------------------------------------


def test_only_the_issuer_issues_stable():
    state = make_state({})
    fails(exchange.CODE_NOT_ISSUER, state, apply_issue_stable, ALICE,
          IssueStable(to=ALICE, amount=5))
    fails(exchange.CODE_ZERO_AMOUNT, state, apply_issue_stable, ISSUER,
          IssueStable(to=ALICE, amount=0))
    apply_issue_stable(state, ISSUER, IssueStable(to=ALICE, amount=5), CTX)
    assert state.get_account(ALICE).stable == 5
    assert supply.get_supply(state).stable_issued == 5
    check_books(state)
    fails(exchange.CODE_OVERFLOW, state, apply_issue_stable, ISSUER,
          IssueStable(to=ALICE, amount=UINT64_MAX))


def test_no_issuer_means_no_issuance():
    state = make_state({}, issuer=None)
    fails(exchange.CODE_NOT_ISSUER, state, apply_issue_stable, ISSUER,
          IssueStable(to=ALICE, amount=5))


# --- the oracle ---------------------------------------------------------------


def test_oracle_accumulates_the_spot_price_before_each_block():
    state = make_state({ALICE: (0, 10**9)}, pool_gpu=1_000, pool_stable=3_000)
    exchange.begin_block(state, CTX)
    first = get_oracle(state)
    assert acc_to_int(first.cumulative) == 3 * PRICE_SCALE
    assert (first.observations, first.last_height) == (1, HEIGHT)
    apply_swap(state, ALICE, Swap(denom_in=DENOM_STABLE, amount_in=10**9, min_out=0), CTX)
    price = exchange.spot_price(get_pool(state))
    exchange.begin_block(state, BlockContext(chain_id="test", height=HEIGHT + 1,
                                             fee_recipient=bytes(20), min_fee=0))
    second = get_oracle(state)
    assert acc_to_int(second.cumulative) == 3 * PRICE_SCALE + price
    assert exchange.compute_twap(first, second) == price
    assert exchange.compute_twap(second, second) is None


def test_oracle_ignores_blocks_without_a_pool():
    state = make_state({})
    exchange.begin_block(state, CTX)
    assert state.changed() == {}
    assert get_oracle(state) == exchange.EMPTY_ORACLE
