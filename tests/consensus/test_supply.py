"""The supply ledger: mint, burn and moves keep the books; anything else breaks them loudly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.records import Account
from chain.state import State
from consensus import supply
from consensus.supply import SupplyInvariantBroken, check_supply_invariant, get_supply

A, B = b"\x01" * 20, b"\x02" * 20


def committed(state: State, db: dict[bytes, bytes] | None = None) -> State:
    """Commit `state`'s writes into `db` and return a fresh overlay, as the next block sees it."""
    db = {} if db is None else db
    db.update(state.write_set())
    return State(lambda key: db.get(key) or None)


def genesis(gpu: int = 1_000, stable: int = 50) -> State:
    state = State(lambda _key: None)
    state.set_account(A, Account(gpu=gpu, stable=stable, nonce=0, licences=0, locks=()))
    supply.init_supply(state, gpu, stable)
    return state


def end_of_block(state: State) -> None:
    supply.track_balances(state)
    check_supply_invariant(state)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["mint", "burn", "move", "issue"]),
                          st.integers(0, 500)), max_size=20))
def test_rules_that_go_through_the_ledger_keep_the_books(ops: list[tuple[str, int]]) -> None:
    """Mints, burns, issues and moves in any order keep Σ accounts = genesis + minted - burned."""
    db: dict[bytes, bytes] = {}
    state = committed(genesis(), db)
    for op, amount in ops:
        holder = state.get_account(A)
        if op == "mint":
            supply.mint(state, B, amount)
        elif op == "burn":
            supply.burn(state, A, min(amount, holder.gpu))
        elif op == "move":
            supply.move(state, A, B, gpu=min(amount, holder.gpu), stable=min(amount, holder.stable))
        else:
            supply.issue_stable(state, A, amount)
        end_of_block(state)
        state = committed(state, db)
    totals = get_supply(state)
    assert state.get_account(A).gpu + state.get_account(B).gpu == supply.total_supply(totals)


def test_money_created_outside_the_ledger_breaks_the_invariant() -> None:
    state = committed(genesis())
    state.set_account(B, Account(gpu=1, stable=0, nonce=0, licences=0, locks=()))
    with pytest.raises(SupplyInvariantBroken, match="GPU supply broken"):
        end_of_block(state)


def test_stable_lost_outside_the_ledger_breaks_the_invariant() -> None:
    state = committed(genesis())
    state.set_account(A, Account(gpu=1_000, stable=49, nonce=0, licences=0, locks=()))
    with pytest.raises(SupplyInvariantBroken, match="stable supply broken"):
        end_of_block(state)


def test_moving_more_than_held_is_a_broken_rule() -> None:
    state = committed(genesis())
    with pytest.raises(SupplyInvariantBroken, match="cannot give"):
        supply.move(state, A, B, gpu=1_001)
    with pytest.raises(SupplyInvariantBroken, match="cannot give"):
        supply.burn(state, B, 1)
