"""The initial state a genesis document defines: one pure function of the document.

Accounts get their balances, licences and locks; validators form the first set
(sorted by address), which signs heights 1 and 2, with zero proposer priorities
and the first entry of the validator history (see `consensus.validators`). The
genesis app hash chains from the genesis hash, so two networks with different
genesis files never share an app hash.
"""

from chain.address import address_from_public_key
from chain.records import Account, Lock, Validator, ValidatorSet
from chain.state import State, next_app_hash
from chain.store import GenesisMark, Head
from chain.types import ZERO_HASH
from consensus.validators import init_validator_state
from genesis.document import Genesis, genesis_hash


def genesis_state(genesis: Genesis) -> State:
    """State after genesis, as uncommitted writes over an empty store."""
    state = State(lambda _key: None)
    for acct in genesis.accounts:
        locks = tuple(Lock(amount=lk.amount, release_height=lk.release_height)
                      for lk in acct.locks)
        state.set_account(acct.address, Account(gpu=acct.gpu, stable=acct.stable, nonce=0,
                                                licences=acct.licences, locks=locks))
    validators = tuple(
        Validator(address=address_from_public_key(v.public_key), public_key=v.public_key,
                  power=v.power, operator=v.operator) for v in genesis.validators)
    init_validator_state(state, ValidatorSet(validators=validators))
    return state


def genesis_writes(genesis: Genesis) -> tuple[GenesisMark, dict[bytes, bytes]]:
    """The genesis mark (genesis hash, app hash) and the state writes to commit."""
    writes = genesis_state(genesis).write_set()
    gh = genesis_hash(genesis)
    return GenesisMark(genesis_hash=gh, app_hash=next_app_hash(gh, writes)), writes


def genesis_head(genesis: Genesis, mark: GenesisMark) -> Head:
    """The head before the first block: height 0 at genesis time."""
    return Head(height=0, block_hash=ZERO_HASH, time_ms=genesis.genesis_time_ms,
                app_hash=mark.app_hash, results_hash=ZERO_HASH)
