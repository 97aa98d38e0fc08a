"""The initial state is a pure function of the genesis document."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.records import QUEEN_IN, QUEEN_OUT, Account, Lock
from chain.state import (
    ACCOUNT_PREFIX,
    State,
    module_address,
    validator_history_key,
    validators_since_key,
)
from chain.types import BASE_UNITS_PER_GPU
from consensus.context import spendable_gpu
from consensus.exchange import MINIMUM_LIQUIDITY, get_issuer, get_lp_shares, get_pool
from consensus.proposer import get_proposer_priorities, proposer_of_height
from consensus.staking import get_validator, list_validators
from consensus.supply import check_supply_invariant, get_supply
from consensus.validators import ValidatorSetSince, validator_set_at
from genesis.document import (
    GenesisLock,
    add_account,
    add_validator,
    compute_genesis_gpu,
    new_genesis,
    set_pool,
    set_stable_issuer,
)
from genesis.state import (
    compute_genesis_stable,
    compute_reserve_gpu,
    genesis_head,
    genesis_state,
    genesis_writes,
)

STAKE = 1000 * BASE_UNITS_PER_GPU


def _genesis():
    keys = [SigningKey.from_seed(bytes([i]) * 32) for i in range(1, 4)]
    g = new_genesis("gannet-test", 1_700_000_000_000)
    for i, key in enumerate(keys):
        addr = address_from_public_key(key.public_key)
        g = add_account(
            g,
            addr,
            (i + 1) * BASE_UNITS_PER_GPU,
            stable=7,
            licences=i,
            locks=[GenesisLock(amount=5, release_height=100)] if i == 0 else (),
        )
        g = add_validator(g, key.public_key, STAKE + i, addr, f"v{i}")
    return g, keys


def test_accounts_and_validators() -> None:
    g, keys = _genesis()
    state = genesis_state(g)
    first = state.get_account(address_from_public_key(keys[0].public_key))
    assert (first.gpu, first.stable, first.nonce, first.locks) == (
        BASE_UNITS_PER_GPU + 5,  # the locked GPU is part of the balance
        7,
        0,
        (Lock(amount=5, release_height=100),),
    )
    assert spendable_gpu(first, 99) == BASE_UNITS_PER_GPU
    assert spendable_gpu(first, 100) == BASE_UNITS_PER_GPU + 5
    vset = state.get_validator_set().validators
    assert [v.address for v in vset] == sorted(v.address for v in vset)
    assert sorted(v.power for v in vset) == [STAKE, STAKE + 1, STAKE + 2]


def test_deterministic_and_bound_to_the_genesis() -> None:
    g, _ = _genesis()
    mark, writes = genesis_writes(g)
    assert genesis_writes(g) == (mark, writes)
    other_mark, _ = genesis_writes(replace(g, genesis_time_ms=g.genesis_time_ms + 1))
    assert other_mark.app_hash != mark.app_hash
    head = genesis_head(g, mark)
    assert (head.height, head.time_ms, head.app_hash) == (0, g.genesis_time_ms, mark.app_hash)


def test_validator_state_signs_heights_one_and_two() -> None:
    """Genesis writes the current and next set (equal), zero proposer priorities, the
    history entry of height 1 and the since-pointers of heights 1 and 2."""
    g, _ = _genesis()
    _, writes = genesis_writes(g)
    state = State(writes.get)
    vset = state.get_validator_set()
    assert state.get_next_validator_set() == vset
    assert get_proposer_priorities(state) == (0, 0, 0)
    assert writes[validator_history_key(1)] == encode(vset)
    since1 = encode(ValidatorSetSince(height=1))
    assert writes[validators_since_key(1)] == writes[validators_since_key(2)] == since1
    assert [validator_set_at(state, h) for h in (1, 2, 3)] == [vset, vset, None]
    # Equal stakes would rotate in address order; these differ by 1, so the largest leads.
    assert proposer_of_height(state)(0) == max(vset.validators, key=lambda v: v.power).address


# --- the economy at genesis ------------------------------------------------------

POOL_GPU, POOL_STABLE = 2_000_000 * BASE_UNITS_PER_GPU, 3_000_000 * BASE_UNITS_PER_GPU
ISSUER = bytes([9]) * 20
LP_OWNER = bytes([8]) * 20


def _economy_genesis():
    g, keys = _genesis()
    g = replace(g, validators=(replace(g.validators[0], commission_bps=0, queen=True),
                               *g.validators[1:]))
    g = set_stable_issuer(g, ISSUER)
    return set_pool(g, POOL_GPU, POOL_STABLE, LP_OWNER), keys


def _accounts(state: State) -> dict[bytes, Account]:
    """Every account genesis wrote."""
    return {key[1:]: value for key, value in state.changed().items()
            if key[:1] == ACCOUNT_PREFIX and len(key) == 21 and value is not None}


def test_all_genesis_gpu_is_in_accounts_and_matches_the_supply_ledger() -> None:
    g, _ = _economy_genesis()
    state = genesis_state(g)
    accounts = _accounts(state)
    network = g.params.tokenomics.total_supply * 3500 // 10_000
    genesis_gpu = g.params.tokenomics.total_supply - network
    assert compute_genesis_gpu(g.params) == genesis_gpu
    assert sum(a.gpu for a in accounts.values()) == genesis_gpu
    assert sum(a.stable for a in accounts.values()) == 3 * 7 + POOL_STABLE
    totals = get_supply(state)
    assert (totals.genesis_gpu, totals.minted, totals.burned) == (genesis_gpu, 0, 0)
    assert (totals.balances_gpu, totals.stable_issued, totals.balances_stable) == (
        genesis_gpu, 3 * 7 + POOL_STABLE, 3 * 7 + POOL_STABLE)
    check_supply_invariant(state)


def test_module_balances_bonded_pool_and_reserve() -> None:
    g, _ = _economy_genesis()
    state = genesis_state(g)
    staked = 3 * STAKE + 3
    assert state.get_account(module_address("bonded")).gpu == staked
    pool_account = state.get_account(module_address("pool"))
    assert (pool_account.gpu, pool_account.stable) == (POOL_GPU, POOL_STABLE)
    held = sum((i + 1) * BASE_UNITS_PER_GPU for i in range(3)) + 5  # balances and the one lock
    reserve = 130_000_000 * BASE_UNITS_PER_GPU - held - staked - POOL_GPU
    assert compute_reserve_gpu(g) == reserve
    assert state.get_account(module_address("reserve")).gpu == reserve
    assert compute_genesis_stable(g) == 3 * 7 + POOL_STABLE
    for name in ("unbonding", "rewards", "treasury", "escrow", "collateral"):
        assert state.get_account(module_address(name)).gpu == 0


def test_validators_are_bonded_with_commission_and_queen_opt_in() -> None:
    g, keys = _economy_genesis()
    state = genesis_state(g)
    for i, key in enumerate(keys):
        address = address_from_public_key(key.public_key)
        validator = get_validator(state, address)
        assert validator is not None
        assert (validator.tokens, validator.shares) == (STAKE + i, STAKE + i)
        assert validator.operator == address
        assert validator.commission_bps == (0 if i == 0 else 1000)
        assert validator.queen == (QUEEN_IN if i == 0 else QUEEN_OUT)
    assert [v.address for v in list_validators(state)] == sorted(
        address_from_public_key(k.public_key) for k in keys)


def test_pool_and_issuer_are_seeded() -> None:
    g, _ = _economy_genesis()
    state = genesis_state(g)
    pool = get_pool(state)
    assert (pool.gpu, pool.stable) == (POOL_GPU, POOL_STABLE)
    assert get_lp_shares(state, LP_OWNER) == pool.shares - MINIMUM_LIQUIDITY > 0
    assert get_issuer(state) == ISSUER


def test_without_pool_or_issuer_the_reserve_takes_the_rest() -> None:
    g, _ = _genesis()
    state = genesis_state(g)
    assert get_pool(state).gpu == 0
    assert get_issuer(state) is None
    assert state.get_account(module_address("pool")).gpu == 0
    assert sum(a.gpu for a in _accounts(state).values()) == compute_genesis_gpu(g.params)
    check_supply_invariant(state)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 10**15), min_size=0, max_size=4),
       st.one_of(st.just(0), st.integers(10**6, 10**16)), st.integers(10**6, 2**40))
def test_supply_holds_for_any_allocation(balances: list[int], pool_gpu: int,
                                         pool_stable: int) -> None:
    g, _ = _genesis()
    for i, gpu in enumerate(balances):
        g = add_account(g, bytes([100 + i]) * 20, gpu, stable=i)
    if pool_gpu:
        g = set_pool(g, pool_gpu, pool_stable, LP_OWNER)
    state = genesis_state(g)
    accounts = _accounts(state)
    assert sum(a.gpu for a in accounts.values()) == compute_genesis_gpu(g.params)
    assert sum(a.stable for a in accounts.values()) == get_supply(state).stable_issued
    check_supply_invariant(state)
