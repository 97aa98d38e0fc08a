"""The initial state is a pure function of the genesis document."""

from dataclasses import replace

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.records import Lock
from chain.state import State, validator_history_key, validators_since_key
from chain.types import BASE_UNITS_PER_GPU
from consensus.proposer import get_proposer_priorities, proposer_of_height
from consensus.validators import ValidatorSetSince, validator_set_at
from genesis.document import GenesisLock, add_account, add_validator, new_genesis
from genesis.state import genesis_head, genesis_state, genesis_writes

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
        BASE_UNITS_PER_GPU,
        7,
        0,
        (Lock(amount=5, release_height=100),),
    )
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
