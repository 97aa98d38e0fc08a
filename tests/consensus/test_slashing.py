"""Slashing and liveness: exact burns, tombstones, the downtime window, unjail.

Each test builds its pre-state directly in a fresh `State(lambda k: None)`:
staking records, the module accounts holding their GPU, the staking and supply
totals, and (for liveness) a genesis validator set advanced block by block.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.records import (
    EMPTY_ACCOUNT,
    REWARD_ACC_SCALE,
    VOTE_PRECOMMIT,
    ZERO_ACC,
    Account,
    Delegate,
    Delegation,
    DuplicateVoteEvidence,
    Lock,
    Redelegate,
    RedelegationEntry,
    RedelegationQueue,
    SignedVote,
    StakingTotals,
    StakingValidator,
    UnbondingEntry,
    UnbondingQueue,
    Undelegate,
    Unjail,
    Validator,
    ValidatorSet,
    Vote,
    int_to_acc,
)
from chain.state import (
    REDELEGATION_PREFIX,
    STAKING_TOTALS_KEY,
    UNBONDING_PREFIX,
    State,
    delegation_key,
    module_address,
    staking_validator_key,
)
from consensus.context import BlockContext, TxFailed
from consensus.params import NetworkParams, Ratio, StakingParams
from consensus.slashing import (
    CODE_UNJAIL_NOT_JAILED,
    CODE_UNJAIL_NOT_OPERATOR,
    CODE_UNJAIL_STAKE_TOO_LOW,
    CODE_UNJAIL_TOMBSTONED,
    CODE_UNJAIL_TOO_EARLY,
    CODE_UNJAIL_UNKNOWN_VALIDATOR,
    JAILED_FOREVER,
    apply_unjail,
    begin_block,
    compute_max_missed,
    get_signing_info,
    handle_evidence,
    missed_in_window,
    slash,
)
from consensus.staking import (
    apply_delegate,
    apply_redelegate,
    apply_undelegate,
    compute_reward_release,
    genesis_bond,
    pending_rewards,
)
from consensus.supply import check_supply_invariant, get_supply, init_supply, track_balances
from consensus.validators import init_validator_state, process_validator_updates

BONDED = module_address("bonded")
UNBONDING = module_address("unbonding")
REWARDS = module_address("rewards")
VAL_A, VAL_B, VAL_C = (bytes([0xA0 + i]) * 20 for i in range(3))
OP_A, OP_B, OP_C = (bytes([0x10 + i]) * 20 for i in range(3))
DELEGATOR = bytes([0x77]) * 20
STRANGER = bytes([0x99]) * 20
MIN_STAKE = 100


def params(**staking: object) -> NetworkParams:
    """Network params with a small minimum stake and the given staking changes."""
    base = StakingParams(min_validator_stake=MIN_STAKE)
    return NetworkParams(staking=dataclasses.replace(base, **staking))


def ctx_at(height: int, net: NetworkParams | None = None) -> BlockContext:
    """The context of block `height`."""
    return BlockContext(chain_id="gannet-test", height=height, fee_recipient=bytes(20),
                        min_fee=0, params=net or params())


def new_validator(address: bytes, operator: bytes, tokens: int,
                  shares: int | None = None) -> StakingValidator:
    """An unjailed validator record with `tokens` bonded over `shares` (default: tokens)."""
    return StakingValidator(
        address=address, public_key=bytes(32), operator=operator, commission_bps=0,
        tokens=tokens, shares=tokens if shares is None else shares, queen=0, bound_licences=0,
        jailed=0, tombstoned=0, jailed_until=0, reward_acc=ZERO_ACC, operator_rewards=0,
        created_height=0)


def build_state(validators: list[StakingValidator],
                delegations: dict[tuple[bytes, bytes], int] | None = None,
                unbonding: dict[bytes, list[UnbondingEntry]] | None = None,
                redelegations: dict[bytes, list[RedelegationEntry]] | None = None,
                accounts: dict[bytes, Account] | None = None) -> State:
    """A state holding the records, module balances, staking totals and supply that agree.

    Each operator holds all of its validator's shares unless `delegations`
    (delegator, validator) -> shares says otherwise; `accounts` are other accounts.
    """
    state = State(lambda k: None)
    for address, account in sorted((accounts or {}).items()):
        state.set_account(address, account)
    delegations = dict(delegations or {})
    for v in validators:
        state.put(staking_validator_key(v.address), v)
        delegations.setdefault((v.operator, v.address), v.shares)
    for (delegator, validator), shares in sorted(delegations.items()):
        state.put(delegation_key(delegator, validator),
                  Delegation(shares=shares, reward_acc=ZERO_ACC))
    for address, entries in sorted((unbonding or {}).items()):
        state.put(UNBONDING_PREFIX + address, UnbondingQueue(entries=tuple(entries)))
    for address, entries in sorted((redelegations or {}).items()):
        state.put(REDELEGATION_PREFIX + address, RedelegationQueue(entries=tuple(entries)))
    bonded = sum(v.tokens for v in validators)
    unbond = sum(e.balance for entries in (unbonding or {}).values() for e in entries)
    state.set_account(BONDED, dataclasses.replace(EMPTY_ACCOUNT, gpu=bonded))
    state.set_account(UNBONDING, dataclasses.replace(EMPTY_ACCOUNT, gpu=unbond))
    state.put(STAKING_TOTALS_KEY, StakingTotals(bonded=bonded, unbonding=unbond))
    others = sum(account.gpu for account in (accounts or {}).values())
    init_supply(state, bonded + unbond + others, 0)
    return committed(state)


def committed(state: State) -> State:
    """A fresh overlay over `state`'s changes as committed state (a block's pre-state)."""
    writes = state.write_set()

    def read(key: bytes) -> bytes | None:
        return (writes[key] or None) if key in writes else state.read_committed(key)
    return State(read)


def validator(state: State, address: bytes) -> StakingValidator:
    """The staking record at `address` (it must exist)."""
    record = state.get(staking_validator_key(address), StakingValidator)
    assert record is not None
    return record


def totals(state: State) -> StakingTotals:
    """The staking totals."""
    return state.get(STAKING_TOTALS_KEY, StakingTotals)


def gpu(state: State, address: bytes) -> int:
    """An account's GPU."""
    return state.get_account(address).gpu


def unbonding_entry(creation: int, initial: int, balance: int | None = None) -> UnbondingEntry:
    """An unbonding entry of DELEGATOR created at `creation`."""
    return UnbondingEntry(delegator=DELEGATOR, creation_height=creation,
                          completion_height=creation + 1000, initial_balance=initial,
                          balance=initial if balance is None else balance)


def redelegation(creation: int, initial: int, shares: int,
                 target: bytes = VAL_B) -> RedelegationEntry:
    """A redelegation of DELEGATOR to `target` created at `creation`."""
    return RedelegationEntry(delegator=DELEGATOR, target=target, creation_height=creation,
                             completion_height=creation + 1000, initial_balance=initial,
                             shares=shares)


def assert_books_agree(state: State) -> None:
    """Module balances equal the staking totals, which equal the records they sum."""
    assert gpu(state, BONDED) == totals(state).bonded
    assert gpu(state, UNBONDING) == totals(state).unbonding
    supply = get_supply(state)
    track_balances(state)
    check_supply_invariant(state)
    assert supply.burned == get_supply(state).burned


# --- slash: tokens, unbonding, redelegations ---------------------------------------


def test_slash_burns_the_fraction_of_tokens_and_keeps_shares() -> None:
    state = build_state([new_validator(VAL_A, OP_A, 1000), new_validator(VAL_B, OP_B, 500)])
    burned = slash(state, ctx_at(10), VAL_A, 9, Ratio(5, 100))
    assert burned == 50
    assert validator(state, VAL_A).tokens == 950
    assert validator(state, VAL_A).shares == 1000
    assert validator(state, VAL_B).tokens == 500
    assert totals(state).bonded == 1450
    assert get_supply(state).burned == 50
    assert_books_agree(state)


def test_slash_rounds_the_token_burn_down() -> None:
    state = build_state([new_validator(VAL_A, OP_A, 999, shares=400)])
    assert slash(state, ctx_at(10), VAL_A, 9, Ratio(1, 100)) == 9
    assert validator(state, VAL_A).tokens == 990
    assert_books_agree(state)


def test_slash_takes_unbonding_entries_created_at_or_after_the_infraction() -> None:
    entries = [unbonding_entry(4, 1000), unbonding_entry(5, 1000), unbonding_entry(6, 333),
               unbonding_entry(7, 1000, balance=20)]
    state = build_state([new_validator(VAL_A, OP_A, 0, shares=0)],
                        unbonding={VAL_A: entries})
    burned = slash(state, ctx_at(10), VAL_A, 5, Ratio(1, 10))
    # Before the infraction: untouched; at/after: floor(initial / 10), at most the balance.
    assert burned == 100 + 33 + 20
    queue = state.get(UNBONDING_PREFIX + VAL_A, UnbondingQueue)
    assert [e.balance for e in queue.entries] == [1000, 900, 300, 0]
    assert [e.initial_balance for e in queue.entries] == [1000, 1000, 333, 1000]
    assert totals(state).unbonding == 1000 + 900 + 300
    assert_books_agree(state)


def test_slash_takes_redelegated_stake_from_the_target() -> None:
    # Target B: 3000 tokens over 1000 shares (3 GPU a share); the delegator holds 300 shares.
    source = new_validator(VAL_A, OP_A, 1000)
    target = new_validator(VAL_B, OP_B, 3000, shares=1000)
    entries = [redelegation(4, 900, 100), redelegation(5, 400, 150)]
    state = build_state([source, target], delegations={(OP_B, VAL_B): 700,
                                                       (DELEGATOR, VAL_B): 300},
                        redelegations={VAL_A: entries})
    burned = slash(state, ctx_at(10), VAL_A, 5, Ratio(1, 10))
    # Tokens of A: 100. Entry at 5: amount 40, shares ceil(40 * 1000 / 3000) = 14 worth 42.
    assert burned == 100 + 42
    assert validator(state, VAL_B).tokens == 3000 - 42
    assert validator(state, VAL_B).shares == 1000 - 14
    assert state.get(delegation_key(DELEGATOR, VAL_B), Delegation).shares == 300 - 14
    queue = state.get(REDELEGATION_PREFIX + VAL_A, RedelegationQueue)
    assert [e.shares for e in queue.entries] == [100, 150 - 14]
    assert totals(state).bonded == 900 + 3000 - 42
    assert_books_agree(state)


def test_redelegation_slash_is_capped_by_the_entry_and_the_delegation() -> None:
    target = new_validator(VAL_B, OP_B, 1000, shares=1000)
    entries = [redelegation(5, 1000, 7), redelegation(5, 1000, 500, target=VAL_C)]
    third = new_validator(VAL_C, OP_C, 1000, shares=1000)
    state = build_state([new_validator(VAL_A, OP_A, 0, shares=0), target, third],
                        delegations={(OP_B, VAL_B): 993, (DELEGATOR, VAL_B): 7,
                                     (OP_C, VAL_C): 996, (DELEGATOR, VAL_C): 4},
                        redelegations={VAL_A: entries})
    # Half of 1000 wants 500 shares: B's entry holds 7, C's delegation 4 (then deleted).
    assert slash(state, ctx_at(10), VAL_A, 5, Ratio(1, 2)) == 7 + 4
    assert state.get(delegation_key(DELEGATOR, VAL_B), Delegation) is None
    assert state.get(delegation_key(DELEGATOR, VAL_C), Delegation) is None
    queue = state.get(REDELEGATION_PREFIX + VAL_A, RedelegationQueue)
    assert [e.shares for e in queue.entries] == [0, 496]
    assert_books_agree(state)


def test_redelegation_without_a_delegation_left_burns_nothing() -> None:
    state = build_state([new_validator(VAL_A, OP_A, 0, shares=0),
                         new_validator(VAL_B, OP_B, 1000)],
                        redelegations={VAL_A: [redelegation(5, 1000, 100)]})
    assert slash(state, ctx_at(10), VAL_A, 5, Ratio(1, 2)) == 0
    assert get_supply(state).burned == 0


def rewarded_target_state(delegator_locks: tuple[Lock, ...] = ()) -> State:
    """A redelegation from A into B at height 5, B's accumulator 3 GPU a share up since.

    The delegator's 100 shares at B are owed 300 GPU, held by module "rewards".
    """
    target = dataclasses.replace(new_validator(VAL_B, OP_B, 1000),
                                 reward_acc=int_to_acc(3 * REWARD_ACC_SCALE))
    return build_state(
        [new_validator(VAL_A, OP_A, 0, shares=0), target],
        delegations={(OP_B, VAL_B): 900, (DELEGATOR, VAL_B): 100},
        redelegations={VAL_A: [redelegation(5, 100, 100)]},
        accounts={REWARDS: dataclasses.replace(EMPTY_ACCOUNT, gpu=1000),
                  DELEGATOR: dataclasses.replace(EMPTY_ACCOUNT, gpu=10**6,
                                                 locks=delegator_locks)})


def test_redelegation_slash_settles_the_delegation_rewards_first() -> None:
    state = rewarded_target_state()
    ctx = ctx_at(10)
    assert pending_rewards(state, DELEGATOR, VAL_B) == 300
    assert slash(state, ctx, VAL_A, 5, Ratio(1, 2)) == 50
    account = state.get_account(DELEGATOR)
    assert account.gpu == 10**6 + 300
    assert account.locks == (Lock(amount=300, release_height=compute_reward_release(ctx)),)
    assert state.get(delegation_key(DELEGATOR, VAL_B), Delegation) == Delegation(
        shares=50, reward_acc=int_to_acc(3 * REWARD_ACC_SCALE))
    assert pending_rewards(state, DELEGATOR, VAL_B) == 0
    assert_books_agree(state)


def test_redelegation_slash_without_room_for_a_lock_still_slashes() -> None:
    ctx = ctx_at(10)
    release = compute_reward_release(ctx)
    full = tuple(Lock(amount=1, release_height=release + 1 + i) for i in range(256))
    state = rewarded_target_state(delegator_locks=full)
    assert slash(state, ctx, VAL_A, 5, Ratio(1, 2)) == 50
    assert state.get_account(DELEGATOR).locks == full
    assert state.get(delegation_key(DELEGATOR, VAL_B), Delegation) == Delegation(
        shares=50, reward_acc=ZERO_ACC)
    assert pending_rewards(state, DELEGATOR, VAL_B) == 150  # the other 150 stay in "rewards"
    assert_books_agree(state)


def test_redelegation_slash_jails_an_operator_left_below_the_minimum() -> None:
    entries = [RedelegationEntry(delegator=OP_B, target=VAL_B, creation_height=5,
                                 completion_height=1005, initial_balance=120, shares=120)]
    state = build_state([new_validator(VAL_A, OP_A, 0, shares=0),
                         new_validator(VAL_B, OP_B, 1000)],
                        delegations={(OP_B, VAL_B): 120, (DELEGATOR, VAL_B): 880},
                        redelegations={VAL_A: entries})
    assert slash(state, ctx_at(10), VAL_A, 5, Ratio(1, 2)) == 60
    b = validator(state, VAL_B)
    assert (b.jailed, b.jailed_until, b.tokens) == (1, 10, 940)
    assert_books_agree(state)


def test_slash_after_real_staking_txs() -> None:
    """Stake moved by staking's own handlers is slashed exactly where the rules say."""
    state = State(lambda k: None)
    state.set_account(DELEGATOR, dataclasses.replace(EMPTY_ACCOUNT, gpu=10_000))
    for address, operator in ((VAL_A, OP_A), (VAL_B, OP_B)):
        member = Validator(address=address, public_key=bytes(32), power=5000, operator=operator)
        genesis_bond(state, member, 0, 0, 1)
    init_supply(state, 20_000, 0)
    state = committed(state)
    apply_delegate(state, DELEGATOR, Delegate(validator=VAL_A, amount=4000), ctx_at(3))
    apply_undelegate(state, DELEGATOR, Undelegate(validator=VAL_A, amount=1000), ctx_at(4))
    apply_redelegate(state, DELEGATOR, Redelegate(source=VAL_A, target=VAL_B, amount=2000),
                     ctx_at(6))
    apply_undelegate(state, DELEGATOR, Undelegate(validator=VAL_A, amount=500), ctx_at(8))
    # A: 5000 + 4000 - 1000 - 2000 - 500 = 5500 tokens. Offence at 6: the unbonding at 8
    # loses 50, the one at 4 nothing; the redelegation at 6 loses 200 of B's stake.
    burned = slash(state, ctx_at(9), VAL_A, 6, Ratio(1, 10))
    assert burned == 550 + 50 + 200
    assert validator(state, VAL_A).tokens == 4950
    assert validator(state, VAL_B).tokens == 7000 - 200
    queue = state.get(UNBONDING_PREFIX + VAL_A, UnbondingQueue)
    assert [e.balance for e in queue.entries] == [1000, 450]
    assert_books_agree(state)


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(0, 10**15), shares=st.integers(1, 10**15),
       target_tokens=st.integers(1, 10**15), target_shares=st.integers(1, 10**15),
       unbond=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 10**12),
                                 st.integers(0, 10**12)), max_size=5),
       redel=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 10**12),
                                st.integers(0, 10**9)), max_size=5),
       infraction=st.integers(0, 20), num=st.integers(0, 1000), den=st.integers(1, 1000))
def test_burned_equals_the_sum_of_reductions(tokens: int, shares: int, target_tokens: int,
                                             target_shares: int, unbond: list, redel: list,
                                             infraction: int, num: int, den: int) -> None:
    fraction = Ratio(min(num, den), den)
    unbonding = [unbonding_entry(c, i, min(b, i)) for c, i, b in unbond]
    entries = [redelegation(c, i, s) for c, i, s in redel]
    held = min(target_shares, sum(s for _, _, s in redel))
    state = build_state(
        [new_validator(VAL_A, OP_A, tokens, shares=shares),
         new_validator(VAL_B, OP_B, target_tokens, shares=target_shares)],
        delegations={(OP_B, VAL_B): target_shares - held, (DELEGATOR, VAL_B): held},
        unbonding={VAL_A: unbonding}, redelegations={VAL_A: entries})
    burned = slash(state, ctx_at(30), VAL_A, infraction, fraction)
    a, b = validator(state, VAL_A), validator(state, VAL_B)
    queue = state.get(UNBONDING_PREFIX + VAL_A, UnbondingQueue)
    unbonding_cut = sum(e.balance for e in unbonding) - sum(e.balance for e in queue.entries)
    assert burned == (tokens - a.tokens) + unbonding_cut + (target_tokens - b.tokens)
    assert get_supply(state).burned == burned
    assert tokens - a.tokens == fraction.floor_mul(tokens)
    assert a.shares == shares
    assert target_shares - b.shares == held - _delegation_shares(state, DELEGATOR, VAL_B)
    assert_books_agree(state)


def _delegation_shares(state: State, delegator: bytes, address: bytes) -> int:
    delegation = state.get(delegation_key(delegator, address), Delegation)
    return 0 if delegation is None else delegation.shares


# --- double sign -------------------------------------------------------------------


def duplicate_vote(address: bytes, height: int, round_: int = 0) -> DuplicateVoteEvidence:
    """Evidence that `address` precommitted two blocks at (height, round)."""
    def signed(block_hash: bytes) -> SignedVote:
        vote = Vote(vote_type=VOTE_PRECOMMIT, height=height, round=round_,
                    block_hash=block_hash, validator=address)
        return SignedVote(vote=vote, signature=bytes(64))
    return DuplicateVoteEvidence(vote_a=signed(b"\x01" * 32), vote_b=signed(b"\x02" * 32))


def test_double_sign_slashes_tombstones_and_jails_for_good() -> None:
    state = build_state([new_validator(VAL_A, OP_A, 2000)],
                        unbonding={VAL_A: [unbonding_entry(8, 100), unbonding_entry(6, 100)]})
    handle_evidence(state, ctx_at(12), (duplicate_vote(VAL_A, 7),))
    a = validator(state, VAL_A)
    assert (a.tokens, a.tombstoned, a.jailed, a.jailed_until) == (1900, 1, 1, JAILED_FOREVER)
    assert get_supply(state).burned == 100 + 5  # 5 % of tokens and of the entry made at 8
    assert_books_agree(state)


def test_a_tombstoned_validator_is_slashed_once() -> None:
    state = build_state([new_validator(VAL_A, OP_A, 2000), new_validator(VAL_B, OP_B, 1000)])
    handle_evidence(state, ctx_at(12), (duplicate_vote(VAL_A, 7), duplicate_vote(VAL_A, 7, 1),
                                        duplicate_vote(VAL_B, 8)))
    handle_evidence(state, ctx_at(13), (duplicate_vote(VAL_A, 9),))
    assert validator(state, VAL_A).tokens == 1900
    assert validator(state, VAL_B).tokens == 950
    assert get_supply(state).burned == 150
    assert_books_agree(state)


def test_evidence_against_a_validator_without_staking_record_is_skipped() -> None:
    state = build_state([new_validator(VAL_A, OP_A, 2000)])
    handle_evidence(state, ctx_at(12), (duplicate_vote(STRANGER, 7),))
    assert get_supply(state).burned == 0
    assert state.get(staking_validator_key(STRANGER), StakingValidator) is None


# --- liveness ----------------------------------------------------------------------


def liveness_state(validators: list[StakingValidator]) -> State:
    """`build_state` plus a genesis validator set of the same validators (power 10 each)."""
    state = build_state(validators)
    members = [Validator(address=v.address, public_key=bytes(32), power=10, operator=v.operator)
               for v in validators]
    init_validator_state(state, ValidatorSet(validators=tuple(members)))
    return committed(state)


def run_block(state: State, ctx: BlockContext, signers: frozenset[bytes] | None) -> None:
    """Begin block ctx.height with the parent's signers, then end it (set history)."""
    begin_block(state, ctx, signers, ())
    process_validator_updates(state, ctx.height)


def test_the_first_height_counts_nothing() -> None:
    state = liveness_state([new_validator(VAL_A, OP_A, 1000)])
    run_block(state, ctx_at(1), None)
    assert get_signing_info(state, VAL_A) is None
    run_block(state, ctx_at(2), frozenset())
    info = get_signing_info(state, VAL_A)
    assert (info.start_height, info.counted, info.missed_count) == (1, 1, 1)
    assert missed_in_window(state, VAL_A, params().staking.signed_blocks_window) == (1,)


def test_compute_max_missed_rounds_the_required_signatures_up() -> None:
    assert compute_max_missed(10, Ratio(1, 2)) == 5
    assert compute_max_missed(7, Ratio(1, 2)) == 3
    assert compute_max_missed(10, Ratio(0, 1)) == 10
    assert compute_max_missed(10, Ratio(1, 1)) == 0
    assert compute_max_missed(10_000, Ratio(1, 3)) == 6666


def test_downtime_jails_when_the_window_is_full_and_too_many_missed() -> None:
    net = params(signed_blocks_window=4, min_signed_per_window=Ratio(1, 2),
                 downtime_jail_blocks=50, slash_fraction_downtime=Ratio(1, 100))
    state = liveness_state([new_validator(VAL_A, OP_A, 1000), new_validator(VAL_B, OP_B, 500)])
    run_block(state, ctx_at(1, net), None)
    # B misses heights 1..3: 3 > 4 - 2 missed, but the window is full only after height 4.
    for height in (2, 3, 4):
        run_block(state, ctx_at(height, net), frozenset({VAL_A}))
        assert not validator(state, VAL_B).jailed
    run_block(state, ctx_at(5, net), frozenset({VAL_A, VAL_B}))
    b = validator(state, VAL_B)
    assert (b.jailed, b.jailed_until, b.tokens) == (1, 55, 495)
    assert get_signing_info(state, VAL_B).counted == 0
    assert missed_in_window(state, VAL_B, 4) == ()
    assert not validator(state, VAL_A).jailed
    # Jailed validators are no longer counted.
    run_block(state, ctx_at(6, net), frozenset({VAL_A}))
    assert get_signing_info(state, VAL_B).counted == 0
    assert get_supply(state).burned == 5
    assert_books_agree(state)


def test_validators_without_staking_record_are_not_counted() -> None:
    state = liveness_state([new_validator(VAL_A, OP_A, 1000)])
    state.put(staking_validator_key(VAL_A), None)
    run_block(state, ctx_at(1), None)
    run_block(state, ctx_at(2), frozenset())
    assert get_signing_info(state, VAL_A) is None


@settings(max_examples=80, deadline=None)
@given(window=st.integers(1, 8), num=st.integers(0, 8), den=st.integers(1, 8),
       signed=st.lists(st.booleans(), min_size=1, max_size=60))
def test_downtime_matches_a_sliding_window_model(window: int, num: int, den: int,
                                                 signed: list[bool]) -> None:
    min_signed = Ratio(min(num, den), den)
    max_missed = window - -(-window * min_signed.num // min_signed.den)
    net = params(signed_blocks_window=window, min_signed_per_window=min_signed,
                 downtime_jail_blocks=0, slash_fraction_downtime=Ratio(1, 10))
    state = liveness_state([new_validator(VAL_A, OP_A, 10**6), new_validator(VAL_B, OP_B, 10)])
    run_block(state, ctx_at(1, net), None)
    model: list[tuple[int, bool]] = []  # (height, signed) since the last reset
    for height, did_sign in enumerate(signed, start=2):
        ctx = ctx_at(height, net)
        signers = frozenset({VAL_B, VAL_A} if did_sign else {VAL_B})
        begin_block(state, ctx, signers, ())
        model.append((height - 1, did_sign))
        recent = model[-window:]
        missed = [h for h, s in recent if not s]
        should_jail = len(model) >= window and len(missed) > max_missed
        assert bool(validator(state, VAL_A).jailed) == should_jail
        if should_jail:
            apply_unjail(state, OP_A, Unjail(validator=VAL_A), ctx)
            model = []
            missed = []
        assert missed_in_window(state, VAL_A, window) == tuple(missed)
        assert get_signing_info(state, VAL_A).missed_count == len(missed)
        process_validator_updates(state, height)
    assert not validator(state, VAL_B).jailed
    assert_books_agree(state)


# --- unjail ----------------------------------------------------------------------


def jailed_state(**changes: object) -> State:
    """VAL_A (operated by OP_A, worth 1000 over 500 shares) jailed until height 20."""
    fields: dict[str, object] = {"jailed": 1, "jailed_until": 20, **changes}
    record = dataclasses.replace(new_validator(VAL_A, OP_A, 1000, shares=500), **fields)
    return build_state([record])


@pytest.mark.parametrize(("state_changes", "sender", "target", "height", "code"), [
    ({}, OP_A, STRANGER, 20, CODE_UNJAIL_UNKNOWN_VALIDATOR),
    ({}, STRANGER, VAL_A, 20, CODE_UNJAIL_NOT_OPERATOR),
    ({"tombstoned": 1, "jailed_until": JAILED_FOREVER}, OP_A, VAL_A, 20, CODE_UNJAIL_TOMBSTONED),
    ({"jailed": 0}, OP_A, VAL_A, 20, CODE_UNJAIL_NOT_JAILED),
    ({}, OP_A, VAL_A, 19, CODE_UNJAIL_TOO_EARLY),
    ({"tokens": 99}, OP_A, VAL_A, 20, CODE_UNJAIL_STAKE_TOO_LOW),
], ids=["unknown", "not-operator", "tombstoned", "not-jailed", "too-early", "stake-too-low"])
def test_unjail_failures(state_changes: dict, sender: bytes, target: bytes, height: int,
                         code: int) -> None:
    state = jailed_state(**state_changes)
    with pytest.raises(TxFailed) as failure:
        apply_unjail(state, sender, Unjail(validator=target), ctx_at(height))
    assert failure.value.code == code
    assert len(str(failure.value).encode()) <= 256


def test_unjail_counts_only_the_operators_own_stake() -> None:
    record = dataclasses.replace(new_validator(VAL_A, OP_A, 1000, shares=1000), jailed=1)
    state = build_state([record], delegations={(OP_A, VAL_A): 99, (DELEGATOR, VAL_A): 901})
    with pytest.raises(TxFailed) as failure:
        apply_unjail(state, OP_A, Unjail(validator=VAL_A), ctx_at(5))
    assert failure.value.code == CODE_UNJAIL_STAKE_TOO_LOW


def test_unjail_frees_the_validator_and_restarts_its_window() -> None:
    state = jailed_state(tokens=MIN_STAKE)  # the operator's 500 shares are worth exactly that
    apply_unjail(state, OP_A, Unjail(validator=VAL_A), ctx_at(20))
    a = validator(state, VAL_A)
    assert (a.jailed, a.tombstoned) == (0, 0)
    info = get_signing_info(state, VAL_A)
    assert (info.start_height, info.counted, info.missed_count, info.reset_height) == \
        (20, 0, 0, 19)
