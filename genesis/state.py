"""The initial state a genesis document defines: one pure function of the document.

Accounts get their balances, licences and locks (a lock's GPU counts in the
account's `gpu`, spendable once released); validators form the first set
(sorted by address), which signs heights 1 and 2, with zero proposer priorities
and the first entry of the validator history (see `consensus.validators`). The
genesis app hash chains from the genesis hash, so two networks with different
genesis files never share an app hash.

The economy starts here too: each validator's power is bonded stake in module
"bonded" with its operator's delegation (`consensus.staking.genesis_bond`), the
pool is seeded and the stable issuer named (`consensus.exchange.init_exchange`),
and module "reserve" holds what no allocation took. So the accounts hold
exactly total_supply - network allocation (`compute_genesis_gpu`), which the
supply ledger records as the genesis GPU; emission mints the network
allocation over time.
"""

from chain.address import address_from_public_key
from chain.records import QUEEN_IN, QUEEN_OUT, Account, Lock, Validator, ValidatorSet
from chain.state import State, module_address, next_app_hash
from chain.store import GenesisMark, Head
from chain.types import ZERO_HASH
from consensus.exchange import init_exchange
from consensus.staking import genesis_bond
from consensus.supply import init_supply
from consensus.validators import init_validator_state
from genesis.document import Genesis, GenesisValidator, compute_genesis_gpu, genesis_hash


def genesis_state(genesis: Genesis) -> State:
    """State after genesis, as uncommitted writes over an empty store."""
    state = State(lambda _key: None)
    for acct in genesis.accounts:
        locks = tuple(Lock(amount=lk.amount, release_height=lk.release_height)
                      for lk in acct.locks)
        # A genesis lock is GPU on top of the spendable balance; in state it is part of `gpu`.
        gpu = acct.gpu + sum(lock.amount for lock in locks)
        state.set_account(acct.address, Account(gpu=gpu, stable=acct.stable, nonce=0,
                                                licences=acct.licences, locks=locks))
    validators = tuple(_validator(v) for v in genesis.validators)
    init_validator_state(state, ValidatorSet(validators=validators))
    init_economy(state, genesis)
    return state


def init_economy(state: State, genesis: Genesis) -> None:
    """Bond each validator's power, seed the pool, fill the reserve, record the supply."""
    for validator in genesis.validators:
        queen = QUEEN_IN if validator.queen else QUEEN_OUT
        genesis_bond(state, _validator(validator), validator.commission_bps, queen,
                     genesis.initial_height)
    pool = genesis.pool
    seed = (0, 0, bytes(20)) if pool is None else (pool.gpu, pool.stable, pool.owner)
    init_exchange(state, genesis.stable_issuer, *seed)  # no pool: nothing seeded
    reserve = module_address("reserve")
    held = state.get_account(reserve)
    state.set_account(reserve, Account(gpu=held.gpu + compute_reserve_gpu(genesis),
                                       stable=held.stable, nonce=held.nonce,
                                       licences=held.licences, locks=held.locks))
    init_supply(state, genesis_gpu=compute_genesis_gpu(genesis.params),
                genesis_stable=compute_genesis_stable(genesis))


def compute_reserve_gpu(genesis: Genesis) -> int:
    """GPU module "reserve" holds at genesis: the genesis GPU no allocation took.

    compute_genesis_gpu less balances, locks, validator stake and pool GPU
    (never negative: `genesis.document` checks that they fit).
    """
    held = sum(a.gpu + sum(lock.amount for lock in a.locks) for a in genesis.accounts)
    staked = sum(validator.power for validator in genesis.validators)
    pooled = 0 if genesis.pool is None else genesis.pool.gpu
    return compute_genesis_gpu(genesis.params) - held - staked - pooled


def compute_genesis_stable(genesis: Genesis) -> int:
    """Stable issued at genesis: the accounts' stable plus the pool's stable side."""
    pooled = 0 if genesis.pool is None else genesis.pool.stable
    return sum(account.stable for account in genesis.accounts) + pooled


def _validator(validator: GenesisValidator) -> Validator:
    """The consensus validator of a genesis entry (address from its public key)."""
    return Validator(address=address_from_public_key(validator.public_key),
                     public_key=validator.public_key, power=validator.power,
                     operator=validator.operator)


def genesis_writes(genesis: Genesis) -> tuple[GenesisMark, dict[bytes, bytes]]:
    """The genesis mark (genesis hash, app hash) and the state writes to commit."""
    writes = genesis_state(genesis).write_set()
    gh = genesis_hash(genesis)
    return GenesisMark(genesis_hash=gh, app_hash=next_app_hash(gh, writes)), writes


def genesis_head(genesis: Genesis, mark: GenesisMark) -> Head:
    """The head before the first block: height 0 at genesis time."""
    return Head(height=0, block_hash=ZERO_HASH, time_ms=genesis.genesis_time_ms,
                app_hash=mark.app_hash, results_hash=ZERO_HASH)
