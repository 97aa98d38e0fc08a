"""Emission distribution, node licences, queens and epoch snapshots (consensus.distribution).

Pure rules (weights, payouts, queen selection) are tested directly; block
rules run `begin_block` / `end_block` over a State holding staking records
written the way consensus.staking stores them.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key
from chain.codec import decode, encode
from chain.crypto import SigningKey
from chain.records import (
    KEEP_U8,
    KEEP_U32,
    ZERO_ACC,
    Account,
    EditValidator,
    LicenceTransfer,
    StakingValidator,
    Validator,
    ValidatorIndex,
    ValidatorSet,
)
from chain.state import VALIDATOR_INDEX_KEY, State, module_address, staking_validator_key
from consensus.context import BlockContext, TxFailed
from consensus.distribution import (
    CODE_LICENCE_INSUFFICIENT,
    CODE_LICENCE_OVERFLOW,
    CODE_LICENCE_TO_MODULE,
    CODE_LICENCE_ZERO_COUNT,
    MAX_LICENCES,
    BlockPayouts,
    DistributionStats,
    EpochSnapshot,
    LicenceCount,
    Recipient,
    RewardCarry,
    RewardEntry,
    apply_licence_transfer,
    begin_block,
    compute_block_payouts,
    compute_epoch,
    end_block,
    get_carry,
    get_distribution_stats,
    get_epoch_snapshot,
    queens,
    reward_weights,
    select_queens,
    split_by_weight,
    validator_weights,
)
from consensus.emission import scheduled_emission
from consensus.params import (
    BlockParams,
    LicenceTier,
    NetworkParams,
    Ratio,
    TokenomicsParams,
)
from consensus.staking import apply_edit_validator as apply_staking_edit
from consensus.staking import genesis_bond, get_validator, pending_rewards
from consensus.supply import get_supply, init_supply

PLAN = TokenomicsParams()
REWARDS = module_address("rewards")


def addr(i: int) -> bytes:
    """A distinct 20-byte address; byte order follows i."""
    return i.to_bytes(20, "big")


def staking_record(i: int, tokens: int, *, queen: int = 0, licences: int = 0, jailed: int = 0,
                   tombstoned: int = 0, commission_bps: int = 0) -> StakingValidator:
    """A validator's staking record as staking stores it (shares = tokens, operator = itself)."""
    return StakingValidator(
        address=addr(i), public_key=bytes([i % 256]) * 32, operator=addr(i),
        commission_bps=commission_bps, tokens=tokens, shares=tokens, queen=queen,
        bound_licences=licences, jailed=jailed, tombstoned=tombstoned, jailed_until=0,
        reward_acc=ZERO_ACC, operator_rewards=0, created_height=0)


def put_validators(state: State, validators: list[StakingValidator],
                   in_set: list[int] | None = None) -> None:
    """Write staking records and the index; `in_set` (default: all) form the current set."""
    for v in validators:
        state.put(staking_validator_key(v.address), v)
    index = tuple(sorted(v.address for v in validators))
    state.put(VALIDATOR_INDEX_KEY, ValidatorIndex(addresses=index))
    members = [v for v in validators if in_set is None or int.from_bytes(v.address) in in_set]
    state.set_validator_set(ValidatorSet(validators=tuple(sorted(
        (Validator(address=v.address, public_key=v.public_key, power=max(v.tokens, 1),
                   operator=v.operator) for v in members), key=lambda m: m.address))))


def context(height: int, params: NetworkParams, first_height: int = 1) -> BlockContext:
    return BlockContext(chain_id="gannet-test", height=height, fee_recipient=addr(999),
                        min_fee=1, params=params, first_height=first_height)


def fresh_state() -> State:
    state = State(lambda _key: None)
    init_supply(state, genesis_gpu=0, genesis_stable=0)
    return state


def params_with(tokenomics: TokenomicsParams | None = None,
                epoch_blocks: int = 10) -> NetworkParams:
    return replace(NetworkParams(), tokenomics=tokenomics or PLAN,
                   block=BlockParams(epoch_blocks=epoch_blocks))


# --- weights -----------------------------------------------------------------


def test_plan_tiers_give_6x_30x_80x_200x() -> None:
    """At equal stake, 5/20/50/100 licences weigh 6, 30, 80 and 200 times one licence."""
    counts = [1, 5, 20, 50, 100]
    weights = reward_weights([RewardEntry(1000, n, False) for n in counts], PLAN)
    assert [w * 1 // weights[0] for w in weights] == [1, 6, 30, 80, 200]
    assert all(w % weights[0] == 0 for w in weights)


def test_queen_bonus_and_stake_scale_the_weight() -> None:
    """A queen weighs queen_bonus times a non-queen; weight grows with stake in proportion."""
    plain, queen, double = reward_weights(
        [RewardEntry(7, 20, False), RewardEntry(7, 20, True), RewardEntry(14, 20, False)], PLAN)
    assert queen * PLAN.queen_bonus.den == plain * PLAN.queen_bonus.num
    assert double == 2 * plain
    assert reward_weights([RewardEntry(10**9, 0, True)], PLAN) == [0]


@st.composite
def monotone_tiers(draw: st.DrawFn) -> tuple[LicenceTier, ...]:
    """Tier tables starting at 0 licences, rising minimums, never-falling positive factors."""
    size = draw(st.integers(1, 6))
    gaps = draw(st.lists(st.integers(1, 40), min_size=size - 1, max_size=size - 1))
    minimums = [0]
    for gap in gaps:
        minimums.append(minimums[-1] + gap)
    factors: list[Ratio] = []
    for _ in range(size):
        den = draw(st.integers(1, 12))
        low = 1 if not factors else -(-factors[-1].num * den // factors[-1].den)
        factors.append(Ratio(draw(st.integers(low, low + 30)), den))
    return tuple(LicenceTier(m, f) for m, f in zip(minimums, factors, strict=True))


tier_tables = st.one_of(st.just(PLAN.licence_tiers), monotone_tiers())


def payout_of(payouts: BlockPayouts, address: bytes) -> int:
    """What one address receives from a block's payouts (both parts)."""
    return sum(a for who, a in payouts.provider + payouts.validators if who == address)


@settings(max_examples=150, deadline=None)
@given(tiers=tier_tables,
       parts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 150)),
                      min_size=2, max_size=5),
       others=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 150), st.booleans()),
                       max_size=4),
       queen=st.booleans(), total=st.integers(0, 10**12))
def test_merging_licences_never_earns_less_than_splitting(
        tiers: tuple[LicenceTier, ...], parts: list[tuple[int, int]],
        others: list[tuple[int, int, bool]], queen: bool, total: int) -> None:
    """One validator with the stake and licences of several earns at least what they all earn."""
    tokenomics = replace(PLAN, licence_tiers=tiers)
    rest = [Recipient(addr(100 + i), t, n, q) for i, (t, n, q) in enumerate(others)]
    split = [Recipient(addr(i), t, n, queen) for i, (t, n) in enumerate(parts)]
    merged = Recipient(addr(0), sum(t for t, _ in parts), sum(n for _, n in parts), queen)
    split_pay = compute_block_payouts(total, split + rest, tokenomics)
    merged_pay = compute_block_payouts(total, [merged, *rest], tokenomics)
    earned_split = sum(payout_of(split_pay, r.address) for r in split)
    assert payout_of(merged_pay, merged.address) >= earned_split


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 2**64 - 1),
       recipients=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
                                     st.booleans()), max_size=8),
       share=st.integers(0, 100))
def test_payouts_plus_carry_equal_the_total(total: int, recipients: list[tuple[int, int, bool]],
                                            share: int) -> None:
    """Every base unit is paid or carried; each part loses less than one unit per recipient."""
    tokenomics = replace(PLAN, provider_share=Ratio(share, 100))
    people = [Recipient(addr(i), t, n, q) for i, (t, n, q) in enumerate(recipients)]
    payouts = compute_block_payouts(total, people, tokenomics)
    paid = sum(a for _, a in payouts.provider + payouts.validators)
    assert paid + payouts.carry == total
    assert payouts.carry >= 0
    if any(t for t, _, _ in recipients):
        assert payouts.carry < 2 * len(people)
    if not any(n for _, n, _ in recipients):
        assert payouts.provider == ()
    if not people:
        assert payouts.carry == total


def test_provider_part_goes_by_plain_licence_count() -> None:
    """Providers split by n alone; the validator part by stake x n*factor(n) x queen bonus."""
    tokenomics = replace(PLAN, provider_share=Ratio(1, 2))
    people = [Recipient(addr(1), 100, 5, False), Recipient(addr(2), 100, 20, False)]
    payouts = compute_block_payouts(1_000_000, people, tokenomics)
    assert payouts.provider == ((addr(1), 100_000), (addr(2), 400_000))
    assert payouts.validators == ((addr(1), 500_000 * 6 // 36), (addr(2), 500_000 * 30 // 36))
    assert payouts.carry == 1_000_000 - 1_000_000 + (500_000 - 83_333 - 416_666)


def test_no_licences_anywhere_splits_everything_by_stake() -> None:
    """Without licences the provider part joins the validator part, which splits by tokens."""
    payouts = compute_block_payouts(
        1000, [Recipient(addr(1), 1, 0, True), Recipient(addr(2), 3, 0, False)], PLAN)
    assert payouts.provider == ()
    assert payouts.validators == ((addr(1), 250), (addr(2), 750))
    assert payouts.carry == 0


def test_validators_without_licences_get_nothing_when_others_have_some() -> None:
    payouts = compute_block_payouts(
        1000, [Recipient(addr(1), 10**6, 0, True), Recipient(addr(2), 1, 1, False)], PLAN)
    assert payout_of(payouts, addr(1)) == 0
    assert payout_of(payouts, addr(2)) == 1000


def test_split_by_weight_floors() -> None:
    assert split_by_weight(10, [1, 1, 1]) == [3, 3, 3]
    assert split_by_weight(10, [0, 0]) == [0, 0]
    assert split_by_weight(0, [5]) == [0]


# --- queens ------------------------------------------------------------------


def test_queen_selection_order_and_bounds() -> None:
    """Top max_queens by (tokens desc, address asc) among the eligible, returned by address."""
    tokenomics = replace(PLAN, queen_min_stake=100, max_queens=3)
    vals = [
        staking_record(1, 500, queen=1),
        staking_record(2, 900, queen=1),
        staking_record(3, 500, queen=1),       # ties with 1: the lower address wins
        staking_record(4, 10**6, queen=0),     # not opted in
        staking_record(5, 10**6, queen=1, jailed=1),
        staking_record(6, 10**6, queen=1, tombstoned=1),
        staking_record(7, 99, queen=1),        # under the minimum stake
        staking_record(8, 10**6, queen=1),     # not in the current set
        staking_record(9, 100, queen=1),       # exactly the minimum, but ranks fourth
    ]
    current = frozenset(addr(i) for i in range(1, 10) if i != 8)
    assert select_queens(vals, current, tokenomics) == (addr(1), addr(2), addr(3))
    wider = replace(tokenomics, max_queens=10)
    assert select_queens(vals, current, wider) == (addr(1), addr(2), addr(3), addr(9))
    assert select_queens(vals, frozenset(), wider) == ()


@settings(max_examples=100, deadline=None)
@given(stakes=st.lists(st.integers(0, 1000), max_size=20), max_queens=st.integers(1, 25),
       minimum=st.integers(0, 1000))
def test_queens_are_the_richest_eligible(stakes: list[int], max_queens: int,
                                         minimum: int) -> None:
    """No validator left out outranks a queen; there are min(max_queens, eligible) queens."""
    tokenomics = replace(PLAN, queen_min_stake=minimum, max_queens=max_queens)
    vals = [staking_record(i, s, queen=1) for i, s in enumerate(stakes)]
    chosen = select_queens(vals, frozenset(v.address for v in vals), tokenomics)
    eligible = [v for v in vals if v.tokens >= minimum]
    assert len(chosen) == min(max_queens, len(eligible))
    assert list(chosen) == sorted(chosen)
    rank = {v.address: (-v.tokens, v.address) for v in vals}
    for v in eligible:
        if v.address not in chosen:
            assert all(rank[q] < rank[v.address] for q in chosen)


# --- epochs and blocks -------------------------------------------------------


def test_compute_epoch_counts_from_the_first_height() -> None:
    assert [compute_epoch(5, h, 3) for h in (5, 7, 8, 10, 11)] == [0, 0, 1, 1, 2]


def test_licences_bound_mid_epoch_count_from_the_next_epoch() -> None:
    """The snapshot is taken at an epoch's first block; binding later waits for the next one."""
    tokenomics = replace(PLAN, queen_min_stake=10, max_queens=5)
    params = params_with(tokenomics, epoch_blocks=10)
    state = fresh_state()
    put_validators(state, [staking_record(1, 100, licences=5, queen=1), staking_record(2, 100)])
    begin_block(state, context(1, params))
    first = get_epoch_snapshot(state)
    assert first == EpochSnapshot(epoch=0, queens=(addr(1),),
                                  licences=(LicenceCount(validator=addr(1), licences=5),))
    # Validator 2 binds 20 licences and opts in at height 3: nothing changes before height 11.
    bound = replace(get_validator(state, addr(2)), bound_licences=20, queen=1)
    state.put(staking_validator_key(addr(2)), bound)
    for height in range(2, 11):
        begin_block(state, context(height, params))
        assert get_epoch_snapshot(state) == first
        end_block(state, context(height, params))
    assert get_distribution_stats(state).provider_paid > 0
    begin_block(state, context(11, params))
    second = get_epoch_snapshot(state)
    assert second.epoch == 1
    assert second.queens == (addr(1), addr(2))
    assert second.licences == (LicenceCount(addr(1), 5), LicenceCount(addr(2), 20))
    assert queens(state) == (addr(1), addr(2))


def test_validator_two_earns_nothing_until_its_licences_count() -> None:
    """Rewards follow the snapshot: licences bound mid-epoch earn from the next epoch on."""
    params = params_with(epoch_blocks=4)
    state = fresh_state()
    put_validators(state, [staking_record(1, 100, licences=1), staking_record(2, 100)])
    for height in (1, 2):
        begin_block(state, context(height, params))
        end_block(state, context(height, params))
    state.put(staking_validator_key(addr(2)), staking_record(2, 100, licences=50))
    for height in (3, 4):
        begin_block(state, context(height, params))
        end_block(state, context(height, params))
    assert get_validator(state, addr(2)).operator_rewards == 0
    assert get_validator(state, addr(2)).reward_acc == ZERO_ACC
    begin_block(state, context(5, params))
    end_block(state, context(5, params))
    assert get_validator(state, addr(2)).operator_rewards > 0


def test_jailed_and_tombstoned_licences_are_not_snapshotted() -> None:
    state = fresh_state()
    put_validators(state, [staking_record(1, 100, licences=3, jailed=1),
                           staking_record(2, 100, licences=4, tombstoned=1),
                           staking_record(3, 100, licences=6)])
    begin_block(state, context(1, params_with()))
    assert get_epoch_snapshot(state).licences == (LicenceCount(addr(3), 6),)


def short_schedule(halving: int, first: int) -> TokenomicsParams:
    return replace(PLAN, halving_period_blocks=halving, emission_first_period=first,
                   queen_min_stake=50, max_queens=2)


@settings(max_examples=25, deadline=None)
@given(halving=st.integers(1, 9), first=st.integers(0, 10**6),
       vals=st.lists(st.tuples(st.integers(1, 10**4), st.integers(0, 120), st.booleans(),
                               st.integers(0, 10_000)), max_size=5),
       out_of_set=st.sets(st.integers(0, 4)), blocks=st.integers(1, 40),
       epoch_blocks=st.integers(1, 7))
def test_distribution_over_many_blocks_loses_nothing(
        halving: int, first: int, vals: list[tuple[int, int, bool, int]], out_of_set: set[int],
        blocks: int, epoch_blocks: int) -> None:
    """Each block mints the schedule; minted == distributed + carry; "rewards" holds it all."""
    params = params_with(short_schedule(halving, first), epoch_blocks=epoch_blocks)
    state = fresh_state()
    records = [staking_record(i + 1, t, licences=n, queen=int(q), commission_bps=c)
               for i, (t, n, q, c) in enumerate(vals)]
    put_validators(state, records, [i + 1 for i in range(len(vals)) if i not in out_of_set])
    for height in range(1, blocks + 1):
        ctx = context(height, params)
        carry_before = get_carry(state)
        begin_block(state, ctx)
        end_block(state, ctx)
        stats = get_distribution_stats(state)
        assert stats.emission == scheduled_emission(params.tokenomics, 1, height)
        assert stats.provider_paid + stats.validators_paid + stats.carry == (
            stats.emission + carry_before)
        assert get_carry(state) == stats.carry
        minted = get_supply(state).minted
        assert minted == stats.total_distributed + get_carry(state)
        assert state.get_account(REWARDS).gpu == minted
    in_set = [r for i, r in enumerate(records) if i not in out_of_set]
    if not any(r.tokens for r in in_set):
        assert get_carry(state) == get_supply(state).minted


def test_emission_with_nobody_to_pay_carries_everything() -> None:
    params = params_with(short_schedule(3, 999))
    state = fresh_state()
    for height in (1, 2, 3):
        begin_block(state, context(height, params))
        end_block(state, context(height, params))
    assert get_carry(state) == 999 == get_supply(state).minted
    assert get_distribution_stats(state).total_distributed == 0


def test_emission_stops_at_the_network_allocation() -> None:
    """Minted never passes the network bucket, and what was minted is still all accounted for."""
    tokenomics = replace(short_schedule(2, 1000), total_supply=3000)  # network = 35 % = 1050
    params = params_with(tokenomics)
    state = fresh_state()
    put_validators(state, [staking_record(1, 10, licences=1)])
    for height in range(1, 8):
        begin_block(state, context(height, params))
        end_block(state, context(height, params))
    assert get_supply(state).minted == 1050
    assert get_distribution_stats(state).total_distributed + get_carry(state) == 1050


def test_validator_weights_for_rpc() -> None:
    tokenomics = replace(PLAN, queen_min_stake=10, max_queens=1)
    params = params_with(tokenomics)
    state = fresh_state()
    put_validators(state, [staking_record(1, 300, licences=5, queen=1),
                           staking_record(2, 100, licences=20)])
    begin_block(state, context(1, params))
    rows = validator_weights(state, params)
    assert [a for a, _, _ in rows] == [addr(1), addr(2)]
    (_, n1, d1), (_, n2, d2) = rows
    # stake share x n*factor(n) x queen bonus: 3/4 x 6 x 3/2 and 1/4 x 30.
    assert n1 * 4 * 2 == 3 * 6 * 3 * d1
    assert n2 * 4 == 30 * d2


def test_validator_weights_fall_back_to_stake() -> None:
    state = fresh_state()
    put_validators(state, [staking_record(1, 300), staking_record(2, 100)])
    begin_block(state, context(1, params_with()))
    assert validator_weights(state, params_with()) == [(addr(1), 300, 400), (addr(2), 100, 400)]


def test_records_round_trip() -> None:
    for value in (
        EpochSnapshot(epoch=3, queens=(addr(1),), licences=(LicenceCount(addr(2), 7),)),
        RewardCarry(amount=5),
        DistributionStats(height=1, emission=2, provider_paid=3, validators_paid=4, carry=5,
                          total_distributed=6),
    ):
        assert decode(type(value), encode(value)) == value


# --- licence transfer --------------------------------------------------------


def holding(state: State, address: bytes, licences: int, gpu: int = 0) -> None:
    state.set_account(address, Account(gpu=gpu, stable=0, nonce=0, licences=licences, locks=()))


def test_licence_transfer_moves_the_count() -> None:
    state = fresh_state()
    holding(state, addr(1), 10, gpu=5)
    apply_licence_transfer(state, addr(1), LicenceTransfer(to=addr(2), count=4),
                           context(1, params_with()))
    assert state.get_account(addr(1)).licences == 6
    assert state.get_account(addr(1)).gpu == 5
    assert state.get_account(addr(2)).licences == 4
    apply_licence_transfer(state, addr(1), LicenceTransfer(to=addr(2), count=6),
                           context(1, params_with()))
    assert state.get_account(addr(1)).licences == 0
    assert state.get_account(addr(2)).licences == 10


def test_licence_transfer_to_self_changes_nothing() -> None:
    state = fresh_state()
    holding(state, addr(1), 3)
    apply_licence_transfer(state, addr(1), LicenceTransfer(to=addr(1), count=3),
                           context(1, params_with()))
    assert state.get_account(addr(1)).licences == 3


@pytest.mark.parametrize(("held", "receiver", "count", "code"), [
    (5, 0, 0, CODE_LICENCE_ZERO_COUNT),
    (5, 0, 6, CODE_LICENCE_INSUFFICIENT),
    (0, 0, 1, CODE_LICENCE_INSUFFICIENT),
    (5, MAX_LICENCES - 4, 5, CODE_LICENCE_OVERFLOW),
])
def test_licence_transfer_failures(held: int, receiver: int, count: int, code: int) -> None:
    state = fresh_state()
    holding(state, addr(1), held)
    holding(state, addr(2), receiver)
    with pytest.raises(TxFailed) as failure:
        apply_licence_transfer(state, addr(1), LicenceTransfer(to=addr(2), count=count),
                               context(1, params_with()))
    assert failure.value.code == code
    assert len(str(failure.value).encode()) <= 256
    assert state.get_account(addr(1)).licences == held
    assert state.get_account(addr(2)).licences == receiver


def test_bound_licences_cannot_be_transferred() -> None:
    """Licences bound to a validator live in its staking record, not in the account."""
    state = fresh_state()
    put_validators(state, [staking_record(1, 100, licences=8)])
    with pytest.raises(TxFailed) as failure:
        apply_licence_transfer(state, addr(1), LicenceTransfer(to=addr(2), count=1),
                               context(1, params_with()))
    assert failure.value.code == CODE_LICENCE_INSUFFICIENT


# --- with staking's own records ----------------------------------------------


def test_rewards_through_staking_records() -> None:
    """Genesis-bonded validators, licences bound by EditValidator: the snapshot decides who earns,
    and operators and delegators can claim no more than was distributed.
    """
    params = params_with(short_schedule(100, 10**6), epoch_blocks=5)
    state = fresh_state()
    keys = [SigningKey.from_seed(bytes([60 + i]) * 32) for i in range(3)]
    members = [Validator(address=address_from_public_key(k.public_key), public_key=k.public_key,
                         power=100 * (i + 1), operator=addr(50 + i)) for i, k in enumerate(keys)]
    for member in members:
        genesis_bond(state, member, commission_bps=500, queen=0, height=0)
    state.set_validator_set(ValidatorSet(validators=tuple(sorted(members,
                                                                 key=lambda m: m.address))))
    first, _, third = members

    def bind(member: Validator, count: int, height: int) -> None:
        holding(state, member.operator, count)
        apply_staking_edit(state, member.operator, EditValidator(
            validator=member.address, commission_bps=KEEP_U32, queen=KEEP_U8,
            bound_licences=count), context(height, params))

    def claimable(member: Validator) -> int:
        return pending_rewards(state, member.operator, member.address)

    bind(first, 5, 0)  # before the first block: counts from epoch 0
    for height in range(1, 6):
        begin_block(state, context(height, params))
        if height == 3:
            bind(third, 20, height)
        end_block(state, context(height, params))
    assert claimable(first) > 0
    assert claimable(members[1]) == claimable(third) == 0
    begin_block(state, context(6, params))
    end_block(state, context(6, params))
    assert claimable(third) > 0
    distributed = get_distribution_stats(state).total_distributed
    claims = sum(claimable(m) for m in members)
    assert 0 <= distributed - claims <= 3 * 6
    assert state.get_account(REWARDS).gpu == get_supply(state).minted


def test_licences_cannot_go_to_a_module_account() -> None:
    """A module account has no key: licences sent there would be stranded."""
    state = fresh_state()
    holding(state, addr(1), 5)
    with pytest.raises(TxFailed) as failure:
        apply_licence_transfer(state, addr(1),
                               LicenceTransfer(to=module_address("pool"), count=1),
                               context(1, params_with()))
    assert failure.value.code == CODE_LICENCE_TO_MODULE
    assert state.get_account(addr(1)).licences == 5
