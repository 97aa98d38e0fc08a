"""Network parameters: the plan's defaults, the rules each field obeys, the strict JSON form."""

import dataclasses
import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.params import (
    BPS,
    GPU,
    AllocationBps,
    BlockParams,
    ComputeParams,
    FeeParams,
    LicenceTier,
    NetworkParams,
    ParamsError,
    Ratio,
    StakingParams,
    TokenomicsParams,
    blocks_for_days,
    blocks_for_ms,
    compare_ratios,
    compute_allocation_amount,
    compute_challenge_samples,
    compute_licence_factor,
    compute_licence_weight,
    default_params,
    from_json,
    params_problems,
    params_with_overrides,
    parse_params_json,
    to_json,
)

DAY = 86_400  # blocks per day at the default 1000 ms


def value(ratio: Ratio) -> Fraction:
    return Fraction(ratio.num, ratio.den)


# --- defaults -----------------------------------------------------------------


def test_defaults_are_valid() -> None:
    params = NetworkParams()
    params.validate()
    for group in (params.block, params.staking, params.tokenomics, params.compute, params.fee):
        group.validate()
    assert params_problems(params) == []


def test_defaults_follow_the_plan() -> None:
    params = NetworkParams()
    tokenomics, staking = params.tokenomics, params.staking
    assert params.block.block_time_ms == 1000
    assert tokenomics.total_supply == 200_000_000 * 10**9
    assert tokenomics.emission_first_period == 30_000_000 * 10**9
    assert tokenomics.halving_period_blocks == 2 * 365 * DAY
    assert tokenomics.reward_lock_blocks == 90 * DAY
    assert tokenomics.buyback_period_blocks == 90 * DAY
    assert tokenomics.investor_cliff_blocks == 182 * DAY
    assert tokenomics.investor_vesting_blocks == 2 * 365 * DAY
    assert tokenomics.node_holder_vesting_blocks == 2 * 365 * DAY
    assert value(tokenomics.node_holder_launch_unlock) == Fraction(5, 100)
    assert tokenomics.max_queens == 21
    assert value(tokenomics.queen_bonus) == Fraction(3, 2)
    assert tokenomics.buyback_max_slippage_bps == 100
    assert tokenomics.pool_fee_bps == 30
    assert staking.min_validator_stake == 1000 * 10**9
    assert staking.max_validators == 100
    assert staking.unbonding_period_blocks == 28 * DAY
    assert value(staking.slash_fraction_double_sign) == Fraction(5, 100)
    assert value(staking.slash_fraction_downtime) == Fraction(1, 10_000)
    assert value(staking.min_signed_per_window) == Fraction(1, 2)
    assert value(params.compute.detection_target) == Fraction(99, 100)
    assert value(params.compute.corrupt_fraction) == Fraction(1, 10)
    assert params.fee.min_fee == 1000


def test_allocation_sums_to_whole_supply() -> None:
    tokenomics = TokenomicsParams()
    allocation = tokenomics.allocation_bps
    assert allocation == AllocationBps(3500, 2500, 1500, 1000, 1000, 500)
    names = [f.name for f in dataclasses.fields(AllocationBps)]
    assert sum(getattr(allocation, name) for name in names) == BPS
    amounts = [compute_allocation_amount(tokenomics, name) for name in names]
    assert sum(amounts) == tokenomics.total_supply
    assert compute_allocation_amount(tokenomics, "network") == 70_000_000 * GPU
    # Emission halves each period: the whole geometric series fits the network bucket.
    assert 2 * tokenomics.emission_first_period <= amounts[0]


@pytest.mark.parametrize(
    ("licences", "weight"), [(0, 0), (1, 1), (4, 4), (5, 6), (20, 30), (50, 80), (100, 200)]
)
def test_plan_licence_tiers_give_exact_multipliers(licences: int, weight: int) -> None:
    tiers = TokenomicsParams().licence_tiers
    result = compute_licence_weight(licences, tiers)
    assert result.num % result.den == 0
    assert result.num // result.den == weight


def test_licence_factor_between_tiers() -> None:
    tiers = TokenomicsParams().licence_tiers
    assert compute_licence_factor(19, tiers) == Ratio(6, 5)
    assert value(compute_licence_weight(19, tiers)) == Fraction(114, 5)
    assert compute_licence_factor(10**6, tiers) == Ratio(2, 1)


def test_consolidating_licences_never_pays_less_than_splitting() -> None:
    tiers = TokenomicsParams().licence_tiers

    def weight(n: int) -> Fraction:
        return value(compute_licence_weight(n, tiers))

    for total in range(2, 201):
        for part in range(1, total):
            assert weight(total) >= weight(part) + weight(total - part)
    assert weight(5) > weight(4) + weight(1)
    assert weight(100) > weight(50) + weight(50)


def test_challenge_samples_meet_detection_target() -> None:
    compute = ComputeParams()
    k = compute_challenge_samples(compute)
    assert k == 44
    assert 1 - Fraction(9, 10) ** k >= Fraction(99, 100)
    assert 1 - Fraction(9, 10) ** (k - 1) < Fraction(99, 100)


@given(
    st.integers(1, 50).flatmap(lambda b: st.tuples(st.integers(1, b), st.just(b))),
    st.integers(2, 1000).flatmap(lambda d: st.tuples(st.integers(1, d - 1), st.just(d))),
)
def test_challenge_samples_are_the_least_that_suffice(
    corrupt: tuple[int, int], target: tuple[int, int]
) -> None:
    compute = ComputeParams(detection_target=Ratio(*target), corrupt_fraction=Ratio(*corrupt))
    f, p = Fraction(*corrupt), Fraction(*target)
    try:
        k = compute_challenge_samples(compute)
    except ParamsError:
        assert 1 - (1 - f) ** 1024 < p
        return
    assert 1 - (1 - f) ** k >= p
    assert k == 1 or 1 - (1 - f) ** (k - 1) < p


# --- durations ----------------------------------------------------------------


def test_blocks_for_days_and_ms() -> None:
    assert blocks_for_days(1, 1000) == 86_400
    assert blocks_for_days(28, 2000) == 28 * 43_200
    assert blocks_for_ms(1001, 1000) == 2  # rounds up: a duration is never shortened
    assert blocks_for_ms(0, 1000) == 0
    for bad in [(-1, 1000), (1, 0), (1, -5), (1.5, 1000), (True, 1000)]:
        with pytest.raises(ParamsError):
            blocks_for_ms(*bad)
    with pytest.raises(ParamsError):
        blocks_for_days(-1, 1000)


def test_default_params_rederive_durations() -> None:
    assert default_params() == NetworkParams()
    fast = default_params(250)
    fast.validate()
    assert fast.block.block_time_ms == 250
    assert fast.staking.unbonding_period_blocks == 4 * 28 * DAY
    assert fast.tokenomics.halving_period_blocks == 4 * 730 * DAY
    assert fast.staking.downtime_jail_blocks == 4 * 600
    assert fast.staking.max_validators == NetworkParams().staking.max_validators


# --- rules --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [(1, 0), (-1, 2), (1.0, 2), (True, 2), (1, 2**64), ("1", 2)])
def test_ratio_rejects_bad_parts(bad: tuple) -> None:
    with pytest.raises(ParamsError):
        Ratio(*bad)


def test_ratio_compare_and_floor_mul() -> None:
    assert compare_ratios(Ratio(1, 2), Ratio(2, 4)) == 0
    assert compare_ratios(Ratio(1, 3), Ratio(1, 2)) == -1
    assert compare_ratios(Ratio(3, 2), Ratio(1, 1)) == 1
    assert Ratio(5, 100).floor_mul(1999) == 99
    assert str(Ratio(6, 5)) == "6/5"


TIERS = TokenomicsParams().licence_tiers

BROKEN_FIELDS = [
    (BlockParams(block_time_ms=0), "block_time_ms"),
    (BlockParams(max_block_txs=0), "max_block_txs"),
    (BlockParams(max_block_txs=10**9), "max_block_txs"),
    (BlockParams(max_tx_bytes=5 * 1024 * 1024), "max_tx_bytes"),
    (BlockParams(epoch_blocks=0), "epoch_blocks"),
    (BlockParams(block_time_ms=-1), "block_time_ms"),
    (BlockParams(block_time_ms=2**64), "block_time_ms"),
    (BlockParams(block_time_ms=1.5), "block_time_ms"),  # type: ignore[arg-type]
    (BlockParams(block_time_ms=True), "block_time_ms"),
    (StakingParams(max_validators=0), "max_validators"),
    (StakingParams(min_validator_stake=0), "min_validator_stake"),
    (StakingParams(unbonding_period_blocks=2**64), "unbonding_period_blocks"),
    (StakingParams(evidence_max_age_blocks=30 * DAY), "evidence_max_age_blocks"),
    (StakingParams(slash_fraction_double_sign=Ratio(3, 2)), "slash_fraction_double_sign"),
    (StakingParams(slash_fraction_downtime=Ratio(2, 1)), "slash_fraction_downtime"),
    (StakingParams(min_signed_per_window=Ratio(5, 4)), "min_signed_per_window"),
    (StakingParams(signed_blocks_window=0), "signed_blocks_window"),
    (StakingParams(min_signed_per_window=(1, 2)), "min_signed_per_window"),  # type: ignore[arg-type]
    (TokenomicsParams(total_supply=2**64), "total_supply"),
    (TokenomicsParams(allocation_bps=AllocationBps(network=3600)), "allocation_bps"),
    (TokenomicsParams(emission_first_period=80_000_000 * GPU), "emission_first_period"),
    (TokenomicsParams(halving_period_blocks=0), "halving_period_blocks"),
    (TokenomicsParams(licence_tiers=()), "licence_tiers"),
    (TokenomicsParams(licence_tiers=TIERS[1:]), "licence_tiers[0].min_licences"),
    (
        TokenomicsParams(licence_tiers=(TIERS[0], TIERS[2], LicenceTier(5, Ratio(3, 2)))),
        "licence_tiers[2].min_licences",
    ),
    (
        TokenomicsParams(licence_tiers=(TIERS[0], LicenceTier(5, Ratio(1, 2)))),
        "licence_tiers[1].factor",
    ),
    (TokenomicsParams(licence_tiers=(LicenceTier(0, Ratio(0, 1)),)), "licence_tiers[0].factor"),
    (TokenomicsParams(licence_tiers=[*TIERS]), "licence_tiers"),  # type: ignore[arg-type]
    (TokenomicsParams(max_queens=0), "max_queens"),
    (TokenomicsParams(queen_bonus=Ratio(1, 2)), "queen_bonus"),
    (TokenomicsParams(provider_share=Ratio(3, 2)), "provider_share"),
    (TokenomicsParams(node_holder_launch_unlock=Ratio(101, 100)), "node_holder_launch_unlock"),
    (TokenomicsParams(node_holder_vesting_blocks=0), "node_holder_vesting_blocks"),
    (TokenomicsParams(investor_vesting_blocks=0), "investor_vesting_blocks"),
    (TokenomicsParams(buyback_period_blocks=-1), "buyback_period_blocks"),
    (TokenomicsParams(buyback_interval_blocks=100 * DAY), "buyback_interval_blocks"),
    (TokenomicsParams(buyback_max_slippage_bps=10_001), "buyback_max_slippage_bps"),
    (TokenomicsParams(pool_fee_bps=10_000), "pool_fee_bps"),
    (ComputeParams(detection_target=Ratio(1, 1)), "detection_target"),
    (ComputeParams(detection_target=Ratio(0, 1)), "detection_target"),
    (ComputeParams(corrupt_fraction=Ratio(1, 10**6)), "detection_target"),
    (ComputeParams(corrupt_fraction=Ratio(0, 1)), "corrupt_fraction"),
    (ComputeParams(corrupt_fraction=Ratio(11, 10)), "corrupt_fraction"),
    (ComputeParams(challenge_delay_blocks=0), "challenge_delay_blocks"),
    (ComputeParams(reveal_window_blocks=0), "reveal_window_blocks"),
    (ComputeParams(attest_window_blocks=0), "attest_window_blocks"),
    (ComputeParams(provider_slash_fraction=Ratio(2, 1)), "provider_slash_fraction"),
    (FeeParams(min_fee=-1), "min_fee"),
    (FeeParams(min_fee=None), "min_fee"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("group", "path"), BROKEN_FIELDS)
def test_each_rule_names_its_field(group: object, path: str) -> None:
    problems = params_problems(group)  # type: ignore[arg-type]
    assert [p for p, _ in problems] == [path], problems
    with pytest.raises(ParamsError) as caught:
        group.validate()  # type: ignore[attr-defined]
    assert path in str(caught.value)
    assert caught.value.problems == tuple(problems)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        (
            NetworkParams(tokenomics=TokenomicsParams(max_queens=200)),
            "tokenomics.max_queens",
        ),
        (
            NetworkParams(tokenomics=TokenomicsParams(queen_min_stake=GPU)),
            "tokenomics.queen_min_stake",
        ),
        (
            NetworkParams(compute=ComputeParams(provider_min_collateral=10**18)),
            "compute.provider_min_collateral",
        ),
        (NetworkParams(block=BlockParams(epoch_blocks=0)), "block.epoch_blocks"),
        (NetworkParams(fee=StakingParams()), "fee"),  # type: ignore[arg-type]
    ],
)
def test_network_rules_name_group_and_field(params: NetworkParams, path: str) -> None:
    with pytest.raises(ParamsError) as caught:
        params.validate()
    assert [p for p, _ in caught.value.problems] == [path]


# --- JSON ---------------------------------------------------------------------


def test_json_round_trip_holds_only_ints() -> None:
    for params in (NetworkParams(), default_params(250), default_params(3000)):
        doc = to_json(params)
        assert from_json(json.loads(json.dumps(doc))) == params

    def no_floats(node: object) -> bool:
        if isinstance(node, dict):
            return all(no_floats(v) for v in node.values())
        if isinstance(node, list):
            return all(no_floats(v) for v in node)
        return isinstance(node, int) and not isinstance(node, bool)

    assert no_floats(to_json(NetworkParams()))


def test_json_shapes() -> None:
    doc = to_json(NetworkParams())
    assert set(doc) == {"block", "staking", "tokenomics", "compute", "fee"}
    assert doc["staking"]["slash_fraction_double_sign"] == {"num": 5, "den": 100}
    assert doc["tokenomics"]["licence_tiers"][1] == {
        "min_licences": 5,
        "factor": {"num": 6, "den": 5},
    }
    assert doc["tokenomics"]["allocation_bps"]["network"] == 3500


def test_missing_keys_take_defaults() -> None:
    assert from_json({}) == NetworkParams()
    params = from_json({"staking": {"max_validators": 50}, "fee": {}})
    assert params.staking.max_validators == 50
    assert params.staking.min_validator_stake == StakingParams().min_validator_stake
    assert params.block == BlockParams()


@pytest.mark.parametrize(
    ("doc", "path", "words"),
    [
        ({"block": {"block_time_ms": 1000.0}}, "params.block.block_time_ms", "number 1000.0"),
        ({"block": {"block_time_ms": True}}, "params.block.block_time_ms", "boolean"),
        ({"fee": {"min_fee": "1000"}}, "params.fee.min_fee", "string"),
        ({"fee": {"min_fee": None}}, "params.fee.min_fee", "null"),
        ({"fee": {"max_fee": 1}}, "params.fee.max_fee", "unknown parameter"),
        ({"gas": {}}, "params.gas", "unknown parameter"),
        ({"block": []}, "params.block", "expected an object"),
        (
            {"staking": {"min_signed_per_window": 0.5}},
            "params.staking.min_signed_per_window",
            "expected an object",
        ),
        (
            {"staking": {"min_signed_per_window": {"num": 1}}},
            "params.staking.min_signed_per_window.den",
            "missing",
        ),
        (
            {"staking": {"min_signed_per_window": {"num": 1, "den": 0}}},
            "params.staking.min_signed_per_window",
            "denominator",
        ),
        (
            {"staking": {"min_signed_per_window": {"num": 1, "den": 2, "x": 3}}},
            "params.staking.min_signed_per_window.x",
            "unknown parameter",
        ),
        ({"tokenomics": {"licence_tiers": {}}}, "params.tokenomics.licence_tiers", "list"),
        (
            {"tokenomics": {"licence_tiers": [{"min_licences": 0}]}},
            "params.tokenomics.licence_tiers[0].factor",
            "missing",
        ),
        (
            {
                "tokenomics": {
                    "licence_tiers": [{"min_licences": 0.0, "factor": {"num": 1, "den": 1}}]
                }
            },
            "params.tokenomics.licence_tiers[0].min_licences",
            "integer",
        ),
        (
            {"tokenomics": {"allocation_bps": {"network": 3501}}},
            "params.tokenomics.allocation_bps",
            "sum to 10000",
        ),
        ({"staking": {"max_validators": -1}}, "params.staking.max_validators", "got -1"),
    ],
)
def test_from_json_reports_problem_with_path(doc: dict, path: str, words: str) -> None:
    with pytest.raises(ParamsError) as caught:
        from_json(doc)
    problems = dict(caught.value.problems)
    assert path in problems, caught.value.problems
    assert words in problems[path]


def test_from_json_root_must_be_object() -> None:
    with pytest.raises(ParamsError) as caught:
        from_json([1, 2], "genesis.params")
    assert caught.value.problems == (("genesis.params", "expected an object, got list"),)


def test_from_json_reports_every_problem_at_once() -> None:
    doc = {
        "block": {"block_time_ms": 1.5, "max_block_txs": False, "extra": 1},
        "staking": {"max_validators": 0, "slash_fraction_downtime": {"num": 1, "den": 0}},
        "tokenomics": {"pool_fee_bps": 10_000, "allocation_bps": {"team": "ten"}},
        "compute": {"corrupt_fraction": {"num": 0, "den": 1}},
        "unknown": 3,
    }
    params, problems = parse_params_json(doc, "p")
    paths = {path for path, _ in problems}
    assert paths == {
        "p.block.block_time_ms",
        "p.block.max_block_txs",
        "p.block.extra",
        "p.staking.max_validators",
        "p.staking.slash_fraction_downtime",
        "p.tokenomics.pool_fee_bps",
        "p.tokenomics.allocation_bps.team",
        "p.compute.corrupt_fraction",
        "p.unknown",
    }
    # Malformed values stand in as defaults, so the result is still a full record.
    assert params.block.block_time_ms == BlockParams().block_time_ms


@given(st.integers(1, 86_400_000))
def test_any_block_time_gives_valid_round_tripping_params(block_time_ms: int) -> None:
    params = default_params(block_time_ms)
    assert params_problems(params) == []
    assert from_json(json.loads(json.dumps(to_json(params)))) == params


def test_overrides_replace_only_what_they_name() -> None:
    """A partial override changes the named fields and keeps every other one."""
    base = default_params(200)
    params = params_with_overrides(base, {"tokenomics": {"halving_period_blocks": 100},
                                          "staking": {"slash_fraction_downtime": {
                                              "num": 1, "den": 100}}})
    assert params.tokenomics.halving_period_blocks == 100
    assert params.staking.slash_fraction_downtime == Ratio(1, 100)
    assert params.staking.unbonding_period_blocks == base.staking.unbonding_period_blocks
    assert params.block == base.block


@pytest.mark.parametrize(("overrides", "path"), [
    ({"tokenomics": {"halving_period_blocks": 0}}, "params.tokenomics.halving_period_blocks"),
    ({"staking": {"no_such": 1}}, "params.staking.no_such"),
    ([], "params"),
    ({"fee": {"min_fee": 1.5}}, "params.fee.min_fee"),
])
def test_bad_overrides_name_their_path(overrides: object, path: str) -> None:
    """An override that breaks a rule is refused with the path of the offending field."""
    with pytest.raises(ParamsError) as info:
        params_with_overrides(default_params(), overrides)
    assert any(p == path for p, _ in info.value.problems), info.value.problems
