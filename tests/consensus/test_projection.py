"""The supply projection runs the chain's own emission arithmetic, to the base unit."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.emission import block_emission, network_allocation
from consensus.params import GPU, MS_PER_DAY, NetworkParams, Ratio, default_params
from consensus.projection import (
    PeriodRow,
    ProjectionError,
    YearRow,
    blocks_per_year,
    find_crossover,
    genesis_supply,
    halving_heights,
    periods_covering,
    project_periods,
    project_supply,
)

PLAN = NetworkParams()
M = 1_000_000 * GPU


def test_plan_blocks_per_year_and_halvings() -> None:
    assert blocks_per_year(PLAN) == 31_536_000
    assert halving_heights(PLAN, 1, 3) == [63_072_001, 126_144_001, 189_216_001]
    assert halving_heights(PLAN, 100, 1) == [63_072_100]
    assert halving_heights(PLAN, 1, 0) == []


def test_plan_eight_years_emit_30_15_7_5_3_75_million_per_period() -> None:
    periods = project_periods(PLAN, 1, periods_covering(PLAN, 8))
    assert [p.emitted for p in periods] == [30 * M, 15 * M, 15 * M // 2, 15 * M // 4]
    assert periods[1] == PeriodRow(1, 63_072_001, 126_144_000, 15 * M)
    rows = project_supply(PLAN, 1, 8, 0, Ratio(1, 1))
    assert [r.emitted for r in rows] == [
        15 * M,
        15 * M,
        15 * M // 2,
        15 * M // 2,
        15 * M // 4,
        15 * M // 4,
        15 * M // 8,
        15 * M // 8,
    ]
    assert rows[-1].minted_total == 56_250_000 * GPU
    assert rows[-1].end_height == 8 * 31_536_000
    assert rows[-1].supply == 130 * M + 56_250_000 * GPU  # 200M less the 70M network bucket
    assert find_crossover(rows) is None


def test_burn_is_revenue_over_price_and_crossover_is_the_first_shrinking_year() -> None:
    # 5M stable a year at 1/2 stable per GPU buys and burns 10M GPU a year.
    rows = project_supply(PLAN, 1, 6, 5 * M, Ratio(1, 2))
    assert [r.burned for r in rows] == [10 * M] * 6
    assert rows[1].supply == 130 * M + 30 * M - 20 * M
    crossover = find_crossover(rows)
    assert crossover is not None
    assert (crossover.year, crossover.emitted, crossover.burned) == (3, 15 * M // 2, 10 * M)
    assert rows[2].supply < rows[1].supply
    assert rows[1].supply > rows[0].supply  # 15M emitted, 10M burned


def test_burn_rounds_down_and_never_takes_more_than_exists() -> None:
    assert project_supply(PLAN, 1, 1, 10, Ratio(3, 1))[0].burned == 3
    rows = project_supply(PLAN, 1, 3, 10**19, Ratio(1, 1))
    assert rows[0].burned == 130 * M + 15 * M
    assert [r.supply for r in rows] == [0, 0, 0]
    assert [r.burned for r in rows[1:]] == [15 * M, 15 * M // 2]


@pytest.mark.parametrize(
    ("years", "revenue", "price", "words"),
    [
        (-1, 0, Ratio(1, 1), "years"),
        (1001, 0, Ratio(1, 1), "years"),
        (1, -1, Ratio(1, 1), "revenue"),
        (1, 1, Ratio(0, 1), "price"),
    ],
)
def test_impossible_inputs_raise(years: int, revenue: int, price: Ratio, words: str) -> None:
    with pytest.raises(ProjectionError, match=words):
        project_supply(PLAN, 1, years, revenue, price)


def small_params(block_time_days: int, emission: int, supply: int, network_bps: int):
    """Plan params at one block per `block_time_days` days... no: per day / block_time_days."""
    params = default_params(MS_PER_DAY // block_time_days)
    allocation = replace(
        params.tokenomics.allocation_bps, network=network_bps, reserve=6000 - network_bps
    )
    tokenomics = replace(
        params.tokenomics,
        total_supply=supply,
        allocation_bps=allocation,
        emission_first_period=min(emission, supply * network_bps // 10_000),
    )
    return replace(params, tokenomics=tokenomics)


@settings(max_examples=25, deadline=None)
@given(
    blocks_per_day=st.sampled_from([1, 2, 3]),
    emission=st.integers(0, 10**6),
    supply=st.integers(1, 10**7),
    network_bps=st.integers(0, 6000),
    first_height=st.integers(1, 50),
    years=st.integers(0, 7),
    revenue=st.integers(0, 10**6),
    price=st.builds(Ratio, st.integers(1, 1000), st.integers(1, 1000)),
)
def test_matches_the_chain_minting_block_by_block(
    blocks_per_day: int,
    emission: int,
    supply: int,
    network_bps: int,
    first_height: int,
    years: int,
    revenue: int,
    price: Ratio,
) -> None:
    params = small_params(blocks_per_day, emission, supply, network_bps)
    tokenomics = params.tokenomics
    rows = project_supply(params, first_height, years, revenue, price)
    assert len(rows) == years
    per_year = 365 * blocks_per_day
    assert blocks_per_year(params) == per_year
    minted = burned = 0
    genesis = supply - network_allocation(tokenomics)
    assert genesis_supply(params) == genesis
    for year, row in enumerate(rows, start=1):
        emitted = 0
        end = first_height + year * per_year - 1
        for height in range(end - per_year + 1, end + 1):
            amount = block_emission(tokenomics, first_height, height, minted)
            emitted += amount
            minted += amount
        burn = min(revenue * price.den // price.num, genesis + minted - burned)
        burned += burn
        assert row == YearRow(year, end, emitted, burn, minted, burned, genesis + minted - burned)
        assert row.minted_total <= network_allocation(tokenomics)


@settings(max_examples=25, deadline=None)
@given(
    blocks_per_day=st.sampled_from([1, 2, 3]),
    first_height=st.integers(1, 50),
    count=st.integers(0, 6),
    network_bps=st.integers(0, 6000),
)
def test_periods_are_two_plan_years_and_sum_to_what_the_years_emit(
    blocks_per_day: int, first_height: int, count: int, network_bps: int
) -> None:
    params = small_params(blocks_per_day, 10**6, 10**7, network_bps)
    periods = project_periods(params, first_height, count)
    n = params.tokenomics.halving_period_blocks
    assert n == 2 * blocks_per_year(params)
    assert [p.first_height for p in periods[1:]] == halving_heights(
        params, first_height, max(count - 1, 0)
    )
    assert all(p.last_height - p.first_height + 1 == n for p in periods)
    rows = project_supply(params, first_height, 2 * count, 0, Ratio(1, 1))
    assert sum(p.emitted for p in periods) == (rows[-1].minted_total if rows else 0)
    assert periods_covering(params, 2 * count) == max(count, 1)
    assert periods_covering(params, 2 * count + 1) == count + 1
