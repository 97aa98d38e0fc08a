"""Staking: validator life cycle, delegations, unbonding, redelegation, rewards, active set."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from chain.address import address_from_public_key
from chain.codec import encode
from chain.records import (
    KEEP_U8,
    KEEP_U32,
    MAX_QUEUE_ENTRIES,
    MAX_VALIDATORS,
    REWARD_ACC_SCALE,
    Account,
    CreateValidator,
    Delegate,
    EditValidator,
    Lock,
    Redelegate,
    RedelegationEntry,
    RedelegationQueue,
    UnbondingEntry,
    UnbondingQueue,
    Undelegate,
    Validator,
    ValidatorIndex,
    ValidatorSet,
    WithdrawRewards,
    acc_to_int,
)
from chain.state import (
    REDELEGATION_PREFIX,
    UNBONDING_PREFIX,
    VALIDATOR_INDEX_KEY,
    State,
    module_address,
)
from consensus import staking
from consensus.context import BlockContext, TxFailed, spendable_gpu
from consensus.params import BlockParams, NetworkParams, StakingParams, TokenomicsParams
from consensus.supply import burn, mint
from consensus.validators import get_queued_updates, init_validator_state

MIN_STAKE = 100
UNBONDING = 10
LOCK_BLOCKS, EPOCH = 7, 5
PARAMS = NetworkParams(
    block=BlockParams(epoch_blocks=EPOCH),
    staking=StakingParams(min_validator_stake=MIN_STAKE, max_validators=3,
                          unbonding_period_blocks=UNBONDING),
    tokenomics=dataclasses.replace(TokenomicsParams(), reward_lock_blocks=LOCK_BLOCKS),
)
BONDED, UNBOND, REWARDS = (module_address(n) for n in ("bonded", "unbonding", "rewards"))


def ctx(height: int = 10) -> BlockContext:
    """A block context at `height` with the test parameters."""
    return BlockContext(chain_id="test", height=height, fee_recipient=bytes(20), min_fee=0,
                        params=PARAMS)


def key(i: int) -> bytes:
    """A valid Ed25519 public key."""
    return SigningKey(bytes([i + 1]) * 32).verify_key.encode()


def vaddr(i: int) -> bytes:
    """The validator address of key(i)."""
    return address_from_public_key(key(i))


def user(i: int) -> bytes:
    """An account address."""
    return bytes([0xA0 + i]) * 20


def fresh(*funded: tuple[bytes, int]) -> State:
    """An empty state with the given accounts funded."""
    state = State(lambda _k: None)
    for address, gpu in funded:
        state.set_account(address, Account(gpu=gpu, stable=0, nonce=0, licences=0, locks=()))
    return state


def run(state: State, handler, sender: bytes, body, height: int = 10) -> int:
    """Apply a handler as the transition does: 0 on success, else the code (rolled back)."""
    state.begin()
    try:
        handler(state, sender, body, ctx(height))
    except TxFailed as failure:
        state.rollback()
        return failure.code
    state.commit_tx()
    return 0


def create(state: State, i: int, stake: int = 1000, commission: int = 1000,
           height: int = 10) -> int:
    """user(i) creates validator key(i)."""
    body = CreateValidator(public_key=key(i), commission_bps=commission, self_stake=stake,
                           queen=0)
    return run(state, staking.apply_create_validator, user(i), body, height)


def gpu(state: State, address: bytes) -> int:
    return state.get_account(address).gpu


# --- create --------------------------------------------------------------------------


def test_create_validator_bonds_self_stake_and_writes_every_record() -> None:
    state = fresh((user(1), 5000))
    assert create(state, 1, stake=1200) == 0
    v = staking.get_validator(state, vaddr(1))
    assert (v.tokens, v.shares, v.operator, v.commission_bps, v.created_height) == (
        1200, 1200, user(1), 1000, 10)
    assert staking.get_delegation(state, user(1), vaddr(1)).shares == 1200
    assert staking.operator_of(state, user(1)) == vaddr(1)
    assert [x.address for x in staking.list_validators(state)] == [vaddr(1)]
    assert staking.get_staking_totals(state).bonded == 1200 == gpu(state, BONDED)
    assert gpu(state, user(1)) == 3800


@pytest.mark.parametrize(("change", "code"), [
    ({"public_key": bytes(32)}, staking.CODE_INVALID_PUBLIC_KEY),
    ({"commission_bps": 10_001}, staking.CODE_BAD_COMMISSION),
    ({"queen": 2}, staking.CODE_BAD_QUEEN),
    ({"self_stake": MIN_STAKE - 1}, staking.CODE_SELF_STAKE_TOO_LOW),
    ({"self_stake": 4001}, staking.CODE_INSUFFICIENT_FUNDS),
])
def test_create_validator_rejects_bad_fields(change: dict, code: int) -> None:
    state = fresh((user(1), 5000))
    # 1000 of the 5000 are locked, so 4000 are spendable.
    state.set_account(user(1), dataclasses.replace(
        state.get_account(user(1)), locks=(Lock(amount=1000, release_height=11),)))
    valid = CreateValidator(public_key=key(1), commission_bps=0, self_stake=4000, queen=0)
    before = state.write_set()
    assert run(state, staking.apply_create_validator, user(1),
               dataclasses.replace(valid, **change)) == code
    assert state.write_set() == before
    assert run(state, staking.apply_create_validator, user(1), valid) == 0


def test_create_validator_rejects_existing_address_and_second_validator_of_operator() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1) == 0
    body = CreateValidator(public_key=key(1), commission_bps=0, self_stake=1000, queen=0)
    assert run(state, staking.apply_create_validator, user(2), body) == \
        staking.CODE_VALIDATOR_EXISTS
    body = CreateValidator(public_key=key(3), commission_bps=0, self_stake=1000, queen=0)
    assert run(state, staking.apply_create_validator, user(1), body) == \
        staking.CODE_ALREADY_OPERATOR


def test_create_validator_rejects_a_full_index() -> None:
    state = fresh((user(1), 5000))
    full = tuple(i.to_bytes(20, "big") for i in range(1, MAX_VALIDATORS + 1))
    state.put(VALIDATOR_INDEX_KEY, ValidatorIndex(addresses=full))
    assert create(state, 1) == staking.CODE_TOO_MANY_VALIDATORS


# --- edit ----------------------------------------------------------------------------


def edit(state: State, sender: bytes, commission: int = KEEP_U32, queen: int = KEEP_U8,
         licences: int = KEEP_U32) -> int:
    body = EditValidator(validator=vaddr(1), commission_bps=commission, queen=queen,
                         bound_licences=licences)
    return run(state, staking.apply_edit_validator, sender, body)


def test_edit_validator_changes_only_the_given_fields_and_moves_licences() -> None:
    state = fresh((user(1), 5000))
    assert create(state, 1) == 0
    state.set_account(user(1), dataclasses.replace(state.get_account(user(1)), licences=5))
    assert edit(state, user(1), commission=500) == 0
    v = staking.get_validator(state, vaddr(1))
    assert (v.commission_bps, v.queen, v.bound_licences) == (500, 0, 0)
    assert edit(state, user(1), queen=1, licences=4) == 0
    v = staking.get_validator(state, vaddr(1))
    assert (v.commission_bps, v.queen, v.bound_licences) == (500, 1, 4)
    assert state.get_account(user(1)).licences == 1
    assert edit(state, user(1), licences=1) == 0
    assert state.get_account(user(1)).licences == 4
    assert staking.get_validator(state, vaddr(1)).bound_licences == 1


def test_edit_validator_failures() -> None:
    state = fresh((user(1), 5000))
    assert create(state, 1) == 0
    state.set_account(user(1), dataclasses.replace(state.get_account(user(1)), licences=2))
    assert edit(state, user(2), commission=1) == staking.CODE_NOT_OPERATOR
    assert edit(state, user(1), commission=10_001) == staking.CODE_BAD_COMMISSION
    assert edit(state, user(1), queen=2) == staking.CODE_BAD_QUEEN
    assert edit(state, user(1), licences=3) == staking.CODE_TOO_FEW_LICENCES
    body = EditValidator(validator=vaddr(9), commission_bps=1, queen=0, bound_licences=0)
    assert run(state, staking.apply_edit_validator, user(1), body) == \
        staking.CODE_UNKNOWN_VALIDATOR
    assert edit(state, user(1), licences=1) == 0
    state.set_account(user(1), dataclasses.replace(state.get_account(user(1)),
                                                   licences=2**32 - 1))
    assert edit(state, user(1), licences=0) == staking.CODE_LICENCE_OVERFLOW


# --- delegate ------------------------------------------------------------------------


def test_delegate_issues_shares_at_the_current_exchange_rate() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1, stake=1000) == 0
    # A slash halves the tokens: a new delegator gets two shares per GPU.
    v = staking.get_validator(state, vaddr(1))
    state.put(b"sv" + vaddr(1), dataclasses.replace(v, tokens=500))
    state.set_account(BONDED, dataclasses.replace(state.get_account(BONDED), gpu=500))
    state.put(b"st", dataclasses.replace(staking.get_staking_totals(state), bonded=500))
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 300)) == 0
    assert staking.get_delegation(state, user(2), vaddr(1)).shares == 600
    v = staking.get_validator(state, vaddr(1))
    assert (v.tokens, v.shares) == (800, 1600)
    assert gpu(state, BONDED) == 800 == staking.get_staking_totals(state).bonded
    assert gpu(state, user(2)) == 4700


def test_delegate_failures() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1, stake=1000) == 0
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(9), 1)) == \
        staking.CODE_UNKNOWN_VALIDATOR
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 0)) == \
        staking.CODE_ZERO_AMOUNT
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 5001)) == \
        staking.CODE_INSUFFICIENT_FUNDS
    v = staking.get_validator(state, vaddr(1))
    state.put(b"sv" + vaddr(1), dataclasses.replace(v, tokens=3000))  # 1 share per 3 GPU
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 2)) == \
        staking.CODE_ZERO_SHARES
    state.put(b"sv" + vaddr(1), dataclasses.replace(v, tokens=0))
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 2)) == \
        staking.CODE_NO_TOKENS
    state.put(b"sv" + vaddr(1), dataclasses.replace(v, tokens=1, shares=2**63))
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 2)) == \
        staking.CODE_STAKE_OVERFLOW
    state.put(b"sv" + vaddr(1), dataclasses.replace(v, tombstoned=1))
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 2)) == \
        staking.CODE_TOMBSTONED


# --- undelegate and release ------------------------------------------------------------


def test_undelegate_unbonds_and_pays_out_exactly_at_completion() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1) == 0
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 300)) == 0
    assert run(state, staking.apply_undelegate, user(2), Undelegate(vaddr(1), 100), 12) == 0
    assert run(state, staking.apply_undelegate, user(2), Undelegate(vaddr(1), 50), 12) == 0
    queue = staking.get_unbonding_queue(state, vaddr(1))
    assert queue.entries == (UnbondingEntry(delegator=user(2), creation_height=12,
                                            completion_height=12 + UNBONDING,
                                            initial_balance=150, balance=150),)
    totals = staking.get_staking_totals(state)
    assert (totals.bonded, totals.unbonding) == (1150, 150)
    assert (gpu(state, BONDED), gpu(state, UNBOND)) == (1150, 150)
    assert staking.get_delegation(state, user(2), vaddr(1)).shares == 150
    for height in range(13, 12 + UNBONDING):
        staking.release_matured(state, ctx(height))
        assert gpu(state, user(2)) == 4700
    staking.release_matured(state, ctx(12 + UNBONDING))
    assert gpu(state, user(2)) == 4850
    assert spendable_gpu(state.get_account(user(2)), 12 + UNBONDING) == 4850
    assert staking.get_unbonding_queue(state, vaddr(1)).entries == ()
    assert gpu(state, UNBOND) == 0 == staking.get_staking_totals(state).unbonding
    assert state.get(staking.maturity_key(12 + UNBONDING), staking.MaturingValidators) is None


def test_undelegating_everything_deletes_the_delegation_and_rounds_for_the_stayers() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1, stake=1000) == 0
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 1000)) == 0
    v = staking.get_validator(state, vaddr(1))
    state.put(b"sv" + vaddr(1), dataclasses.replace(v, tokens=999))  # 2000 shares, 999 GPU
    value = staking.delegation_tokens(staking.get_validator(state, vaddr(1)), 1000)
    assert value == 499
    assert run(state, staking.apply_undelegate, user(2), Undelegate(vaddr(1), 1)) == 0
    assert staking.get_delegation(state, user(2), vaddr(1)).shares == 1000 - 3  # ceil(2000/999)
    left = staking.get_delegation(state, user(2), vaddr(1)).shares
    value = staking.delegation_tokens(staking.get_validator(state, vaddr(1)), left)
    assert run(state, staking.apply_undelegate, user(2), Undelegate(vaddr(1), value)) == 0
    assert staking.get_delegation(state, user(2), vaddr(1)) is None
    assert staking.get_validator(state, vaddr(1)).shares == 1000


def test_undelegate_failures_and_operator_jailing() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1, stake=150) == 0
    assert run(state, staking.apply_undelegate, user(2), Undelegate(vaddr(1), 1)) == \
        staking.CODE_NO_DELEGATION
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(1), 0)) == \
        staking.CODE_ZERO_AMOUNT
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(1), 151)) == \
        staking.CODE_EXCEEDS_DELEGATION
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(9), 1)) == \
        staking.CODE_UNKNOWN_VALIDATOR
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(1), 50)) == 0
    assert not staking.get_validator(state, vaddr(1)).jailed  # exactly the minimum left
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(1), 1), 13) == 0
    v = staking.get_validator(state, vaddr(1))
    assert (v.jailed, v.jailed_until) == (1, 13)
    others = tuple(UnbondingEntry(delegator=user(3), creation_height=1, completion_height=20,
                                  initial_balance=0, balance=0)
                   for _ in range(MAX_QUEUE_ENTRIES))
    state.put(UNBONDING_PREFIX + vaddr(1), UnbondingQueue(entries=others))
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(1), 1)) == \
        staking.CODE_QUEUE_FULL


def test_jail_by_undelegation_keeps_a_longer_jail() -> None:
    state = fresh((user(1), 5000))
    assert create(state, 1, stake=150) == 0
    v = staking.get_validator(state, vaddr(1))
    state.put(b"sv" + vaddr(1), dataclasses.replace(v, jailed=1, jailed_until=500))
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(1), 100)) == 0
    assert staking.get_validator(state, vaddr(1)).jailed_until == 500


# --- redelegate ----------------------------------------------------------------------------


def test_redelegate_moves_stake_at_once_and_remembers_it() -> None:
    state = fresh((user(1), 5000), (user(2), 5000), (user(3), 5000))
    assert create(state, 1) == 0
    assert create(state, 2) == 0
    assert run(state, staking.apply_delegate, user(3), Delegate(vaddr(1), 400)) == 0
    assert run(state, staking.apply_redelegate, user(3), Redelegate(vaddr(1), vaddr(2), 300),
               11) == 0
    assert staking.get_delegation(state, user(3), vaddr(1)).shares == 100
    assert staking.get_delegation(state, user(3), vaddr(2)).shares == 300
    assert staking.get_redelegation_queue(state, vaddr(1)).entries == (RedelegationEntry(
        delegator=user(3), target=vaddr(2), creation_height=11,
        completion_height=11 + UNBONDING, initial_balance=300, shares=300),)
    assert gpu(state, BONDED) == 2400 == staking.get_staking_totals(state).bonded
    # The stake redelegated into validator 2 may not hop on before it matures.
    assert run(state, staking.apply_redelegate, user(3), Redelegate(vaddr(2), vaddr(1), 1),
               20) == staking.CODE_REDELEGATION_IN_PROGRESS
    staking.release_matured(state, ctx(11 + UNBONDING))
    assert staking.get_redelegation_queue(state, vaddr(1)).entries == ()
    assert state.get(staking.incoming_redelegation_key(user(3), vaddr(2)),
                     staking.IncomingRedelegation) is None
    assert run(state, staking.apply_redelegate, user(3), Redelegate(vaddr(2), vaddr(1), 1),
               11 + UNBONDING) == 0


def test_redelegate_failures() -> None:
    state = fresh((user(1), 5000), (user(2), 5000), (user(3), 5000))
    assert create(state, 1) == 0
    assert create(state, 2) == 0
    assert run(state, staking.apply_delegate, user(3), Delegate(vaddr(1), 400)) == 0

    def redelegate(source: bytes, target: bytes, amount: int = 10) -> int:
        return run(state, staking.apply_redelegate, user(3), Redelegate(source, target, amount))

    assert redelegate(vaddr(1), vaddr(1)) == staking.CODE_SAME_VALIDATOR
    assert redelegate(vaddr(9), vaddr(1)) == staking.CODE_UNKNOWN_VALIDATOR
    assert redelegate(vaddr(1), vaddr(9)) == staking.CODE_UNKNOWN_VALIDATOR
    assert redelegate(vaddr(2), vaddr(1)) == staking.CODE_NO_DELEGATION
    assert redelegate(vaddr(1), vaddr(2), 401) == staking.CODE_EXCEEDS_DELEGATION
    full = tuple(RedelegationEntry(delegator=user(4), target=vaddr(2), creation_height=1,
                                   completion_height=20, initial_balance=0, shares=0)
                 for _ in range(MAX_QUEUE_ENTRIES))
    state.put(REDELEGATION_PREFIX + vaddr(1), RedelegationQueue(entries=full))
    assert redelegate(vaddr(1), vaddr(2)) == staking.CODE_QUEUE_FULL
    v = staking.get_validator(state, vaddr(2))
    state.put(b"sv" + vaddr(2), dataclasses.replace(v, tombstoned=1))
    assert redelegate(vaddr(1), vaddr(2)) == staking.CODE_TOMBSTONED


# --- rewards ------------------------------------------------------------------------------


def fund_rewards(state: State, validator: bytes, amount: int) -> None:
    """Distribution's part: mint into "rewards", then allocate to the validator."""
    mint(state, REWARDS, amount)
    staking.allocate_validator_reward(state, validator, amount)


def test_allocation_splits_commission_delegators_and_remainder_to_the_base_unit() -> None:
    state = fresh((user(1), 5000), (user(2), 5000), (user(3), 5000))
    assert create(state, 1, stake=1000, commission=1000) == 0
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 700)) == 0
    assert run(state, staking.apply_delegate, user(3), Delegate(vaddr(1), 301)) == 0
    fund_rewards(state, vaddr(1), 1001)
    v = staking.get_validator(state, vaddr(1))
    rest = 1001 - 100
    increment = acc_to_int(v.reward_acc)
    assert increment == rest * REWARD_ACC_SCALE // 2001
    reserved = -(-increment * 2001 // REWARD_ACC_SCALE)
    assert v.operator_rewards == 100 + rest - reserved
    owed = [staking.compute_delegation_rewards(v, staking.get_delegation(state, u, vaddr(1)))
            for u in (user(1), user(2), user(3))]
    assert reserved - 3 < sum(owed) <= reserved
    assert staking.pending_rewards(state, user(1), vaddr(1)) == owed[0] + v.operator_rewards
    assert staking.pending_rewards(state, user(2), vaddr(1)) == owed[1]


def test_reward_to_a_validator_without_shares_goes_to_the_operator() -> None:
    state = fresh((user(1), 5000))
    assert create(state, 1, stake=1000) == 0
    assert run(state, staking.apply_undelegate, user(1), Undelegate(vaddr(1), 1000)) == 0
    fund_rewards(state, vaddr(1), 77)
    assert staking.get_validator(state, vaddr(1)).operator_rewards == 77
    staking.allocate_operator_income(state, vaddr(1), 3)
    assert staking.pending_rewards(state, user(1), vaddr(1)) == 80


def test_withdraw_pays_rewards_locked_until_the_epoch_after_the_lock() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1, stake=1024, commission=0) == 0  # 2048 shares: exact per share
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 1024)) == 0
    fund_rewards(state, vaddr(1), 200)
    before = gpu(state, user(2))
    assert run(state, staking.apply_withdraw_rewards, user(2), WithdrawRewards(vaddr(1)),
               11) == 0
    account = state.get_account(user(2))
    release = 20  # 11 + 7 = 18, rounded up to the next multiple of 5
    assert account.gpu == before + 100
    assert account.locks == (Lock(amount=100, release_height=release),)
    assert spendable_gpu(account, release - 1) == before
    assert spendable_gpu(account, release) == before + 100
    assert run(state, staking.apply_withdraw_rewards, user(2), WithdrawRewards(vaddr(1)),
               12) == staking.CODE_NOTHING_TO_WITHDRAW
    # The operator also gets its operator rewards; same epoch release merges the locks.
    mint(state, REWARDS, 5)
    staking.allocate_operator_income(state, vaddr(1), 5)
    assert run(state, staking.apply_withdraw_rewards, user(1), WithdrawRewards(vaddr(1)),
               12) == 0
    assert state.get_account(user(1)).locks == (Lock(amount=105, release_height=release),)
    assert staking.get_validator(state, vaddr(1)).operator_rewards == 0
    assert gpu(state, REWARDS) == 0
    assert run(state, staking.apply_withdraw_rewards, user(1), WithdrawRewards(vaddr(9))) == \
        staking.CODE_UNKNOWN_VALIDATOR


def test_delegating_more_settles_the_rewards_earned_so_far() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1, stake=1024, commission=0) == 0
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 1024)) == 0
    fund_rewards(state, vaddr(1), 200)
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 1024)) == 0
    assert state.get_account(user(2)).locks == (Lock(amount=100, release_height=20),)
    fund_rewards(state, vaddr(1), 300)  # 3072 shares now: 200 to user 2
    assert staking.pending_rewards(state, user(2), vaddr(1)) == 200


def test_locks_are_compacted_and_limited() -> None:
    state = fresh((user(1), 5000), (user(2), 5000))
    assert create(state, 1, stake=1024, commission=0) == 0
    assert run(state, staking.apply_delegate, user(2), Delegate(vaddr(1), 1024)) == 0
    fund_rewards(state, vaddr(1), 200)
    locks = tuple(Lock(amount=1, release_height=100 + i) for i in range(256))
    account = state.get_account(user(2))
    state.set_account(user(2), dataclasses.replace(account, locks=locks))
    assert run(state, staking.apply_withdraw_rewards, user(2), WithdrawRewards(vaddr(1))) == \
        staking.CODE_TOO_MANY_LOCKS
    # At height 100 the first lock has released: it is dropped and the reward fits.
    assert run(state, staking.apply_withdraw_rewards, user(2), WithdrawRewards(vaddr(1)),
               100) == 0
    got = state.get_account(user(2)).locks
    assert len(got) == 255 and Lock(amount=100, release_height=110) not in got
    assert Lock(amount=101, release_height=110) in got  # merged with the equal release height
    assert [lk.release_height for lk in got] == sorted(lk.release_height for lk in got)


# --- active set ----------------------------------------------------------------------------


def genesis(*stakes: int) -> State:
    """Genesis validators key(i) with the given stakes, operated by user(i)."""
    state = fresh(*((user(i), 10_000) for i in range(10)))
    vals = [Validator(address=vaddr(i), public_key=key(i), power=p, operator=user(i))
            for i, p in enumerate(stakes)]
    for v in vals:
        staking.genesis_bond(state, v, 1000, 0, 1)
    init_validator_state(state, ValidatorSet(validators=tuple(vals)))
    return state


def test_genesis_bond_writes_what_a_created_validator_has() -> None:
    state = genesis(500, 600)
    assert gpu(state, BONDED) == 1100 == staking.get_staking_totals(state).bonded
    v = staking.get_validator(state, vaddr(1))
    assert (v.tokens, v.shares, v.commission_bps, v.created_height) == (600, 600, 1000, 1)
    assert staking.get_delegation(state, user(1), vaddr(1)).shares == 600
    assert staking.operator_of(state, user(0)) == vaddr(0)
    with pytest.raises(ValueError):
        staking.genesis_bond(state, Validator(address=vaddr(1), public_key=key(1), power=5,
                                              operator=user(7)), 0, 0, 1)
    with pytest.raises(ValueError):
        staking.genesis_bond(state, Validator(address=vaddr(5), public_key=key(5), power=5,
                                              operator=user(0)), 0, 0, 1)


def next_powers(state: State) -> dict[bytes, int]:
    """The next set after the queued updates, as address -> power."""
    members = {v.address: v.power for v in state.get_next_validator_set().validators}
    for update in get_queued_updates(state):
        if update.power:
            members[update.address] = update.power
        else:
            del members[update.address]
    return members


def test_active_set_is_the_top_candidates_by_stake_then_address() -> None:
    state = genesis(500, 500, 400)
    assert create(state, 5, stake=500) == 0
    assert create(state, 6, stake=500) == 0
    staking.update_active_set(state, ctx())
    fives = sorted([vaddr(0), vaddr(1), vaddr(5), vaddr(6)])
    assert next_powers(state) == {a: 500 for a in fives[:3]}
    # Jailing two lets the last 500 and the 400 in.
    for address in fives[:2]:
        v = staking.get_validator(state, address)
        state.put(b"sv" + address, dataclasses.replace(v, jailed=1))
    staking.update_active_set(state, ctx())
    assert next_powers(state) == {fives[2]: 500, fives[3]: 500, vaddr(2): 400}
    # Power follows tokens.
    assert run(state, staking.apply_delegate, user(7), Delegate(vaddr(2), 250)) == 0
    staking.update_active_set(state, ctx())
    assert next_powers(state) == {fives[2]: 500, fives[3]: 500, vaddr(2): 650}


def test_active_set_keeps_the_last_set_when_no_validator_can_sign() -> None:
    state = genesis(500)
    v = staking.get_validator(state, vaddr(0))
    state.put(b"sv" + vaddr(0), dataclasses.replace(v, jailed=1))
    staking.update_active_set(state, ctx())
    assert get_queued_updates(state) == ()
    assert next_powers(state) == {vaddr(0): 500}


def test_active_set_is_skipped_when_no_validator_record_changed() -> None:
    committed = genesis(500, 400).write_set()
    # Jail validator 1 in the committed state, behind the overlay's back.
    jailed = dataclasses.replace(staking.get_validator(genesis(500, 400), vaddr(1)), jailed=1)
    committed[b"sv" + vaddr(1)] = encode(jailed)
    later = State(lambda k: committed.get(k) or None)
    staking.update_active_set(later, ctx())
    assert later.changed() == {}
    later.put(b"sv" + vaddr(1), jailed)  # now a record changed this block
    staking.update_active_set(later, ctx())
    assert next_powers(later) == {vaddr(0): 500}


# --- random sequences -----------------------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(
    ["create", "delegate", "undelegate", "redelegate", "reward", "withdraw", "advance",
     "slash"]), st.integers(0, 3), st.integers(0, 3), st.integers(0, 400)),
    min_size=10, max_size=40)


def stake_amount(state: State, delegator: bytes, validator: bytes, fraction: int) -> int:
    """`fraction`/400 of a delegation's value; 400 asks for one unit more than it holds."""
    v = staking.get_validator(state, validator)
    d = staking.get_delegation(state, delegator, validator)
    value = 0 if v is None or d is None else staking.delegation_tokens(v, d.shares)
    return value * fraction // 400 + (fraction == 400)


def slash(state: State, validator: bytes, fraction: int) -> int:
    """Burn up to 20 % of a validator's tokens as slashing would; the GPU burned."""
    v = staking.get_validator(state, validator)
    if v is None:
        return 0
    burned = v.tokens * fraction // 2000
    state.put(b"sv" + validator, dataclasses.replace(v, tokens=v.tokens - burned))
    totals = staking.get_staking_totals(state)
    state.put(b"st", dataclasses.replace(totals, bonded=totals.bonded - burned))
    burn(state, BONDED, burned)
    return burned


def check_invariants(state: State, accounts: list[bytes], total: int, height: int) -> None:
    """Stake, unbonding and money add up; rewards owed never exceed what "rewards" holds."""
    validators = staking.list_validators(state)
    totals = staking.get_staking_totals(state)
    assert gpu(state, BONDED) == totals.bonded == sum(v.tokens for v in validators)
    entries = [e for v in validators for e in staking.get_unbonding_queue(state, v.address).entries]
    assert gpu(state, UNBOND) == totals.unbonding == sum(e.balance for e in entries)
    assert all(e.completion_height > height for e in entries)
    assert sum(gpu(state, a) for a in accounts) == total
    owed = sum(staking.pending_rewards(state, u, v.address)
               for u in accounts[:4] for v in validators)
    assert gpu(state, REWARDS) - owed >= 0
    for v in validators:
        held = [staking.get_delegation(state, u, v.address) for u in accounts[:4]]
        assert sum(d.shares for d in held if d) == v.shares


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_random_operations_keep_the_books(ops) -> None:
    users = [user(i) for i in range(4)]
    state = fresh(*((u, 3000) for u in users))
    assert create(state, 0, stake=300) == 0
    assert create(state, 1, stake=500) == 0
    accounts = [*users, BONDED, UNBOND, REWARDS]
    total, height, allocated, dust_events = 4 * 3000, 10, 0, 0
    due: dict[int, dict[bytes, int]] = {}
    for op, a, b, amount in ops:
        before = state.write_set()
        if op == "create":
            code = create(state, a, stake=amount, height=height)
        elif op == "delegate":
            code = run(state, staking.apply_delegate, users[a], Delegate(vaddr(b), amount),
                       height)
        elif op == "undelegate":
            amount = stake_amount(state, users[a], vaddr(b), amount)
            code = run(state, staking.apply_undelegate, users[a], Undelegate(vaddr(b), amount),
                       height)
            if code == 0:
                due.setdefault(height + UNBONDING, {}).setdefault(users[a], 0)
                due[height + UNBONDING][users[a]] += amount
        elif op == "redelegate":
            target = vaddr(amount % 4)
            amount = stake_amount(state, users[a], vaddr(b), amount)
            code = run(state, staking.apply_redelegate, users[a],
                       Redelegate(vaddr(b), target, amount), height)
        elif op == "reward":
            if staking.get_validator(state, vaddr(b)) is None:
                continue
            fund_rewards(state, vaddr(b), amount)
            total, allocated, dust_events = total + amount, allocated + amount, dust_events + 1
            code = 0
        elif op == "slash":
            total -= slash(state, vaddr(b), amount)
            code = 0
        elif op == "withdraw":
            code = run(state, staking.apply_withdraw_rewards, users[a],
                       WithdrawRewards(vaddr(b)), height)
        else:
            for h in range(height + 1, height + 1 + amount % 8):
                balances = {u: gpu(state, u) for u in users}
                staking.release_matured(state, ctx(h))
                paid = due.pop(h, {})
                assert {u: gpu(state, u) - balances[u] for u in users} == \
                    {u: paid.get(u, 0) for u in users}
            height += amount % 8
            code = 0
        if code:
            assert state.write_set() == before, f"failed {op} changed state"
        else:
            dust_events += op in ("delegate", "undelegate", "redelegate", "withdraw")
        check_invariants(state, accounts, total, height)
    # Accounts add up (checked above), so what left "rewards" was paid out; what is still
    # there covers every claim, and the unclaimable dust is below one base unit per
    # allocation, settlement and delegation.
    owed = sum(staking.pending_rewards(state, u, v.address)
               for u in users for v in staking.list_validators(state))
    dust = gpu(state, REWARDS) - owed
    assert 0 <= dust <= dust_events * 2 + 16
    assert gpu(state, REWARDS) <= allocated
