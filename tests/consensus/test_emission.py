"""Block emission: halving periods exact to the base unit, capped by the network bucket."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.emission import (
    block_emission,
    emitted_through,
    network_allocation,
    period_emission,
    period_of,
    scheduled_emission,
)
from consensus.params import GPU, TokenomicsParams

PLAN = TokenomicsParams()


def test_the_plan_emits_30m_15m_7_5m_3_75m_over_eight_years() -> None:
    """The plan's four first periods, exactly, at the heights where each one ends."""
    n = PLAN.halving_period_blocks
    ends = [emitted_through(PLAN, 1, k * n) for k in range(1, 5)]
    per_period = [b - a for a, b in zip([0, *ends], ends, strict=False)]
    assert per_period == [30_000_000 * GPU, 15_000_000 * GPU, 7_500_000 * GPU,
                          3_750_000 * GPU]
    assert [period_emission(PLAN, p) for p in range(4)] == per_period


def test_a_period_boundary_halves_the_block_reward() -> None:
    n = PLAN.halving_period_blocks
    assert period_of(PLAN, 1, n) == 0 and period_of(PLAN, 1, n + 1) == 1
    last, first_after = scheduled_emission(PLAN, 1, n), scheduled_emission(PLAN, 1, n + 1)
    assert abs(2 * first_after - last) <= 2  # floors differ by at most a unit each
    assert scheduled_emission(PLAN, 1, 0) == 0  # before the first height: nothing


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), first_period=st.integers(0, 10**17),
       first_height=st.integers(1, 1000), periods=st.integers(1, 4))
def test_blocks_of_a_period_sum_exactly_to_its_emission(n: int, first_period: int,
                                                        first_height: int,
                                                        periods: int) -> None:
    """Summing every block's emission gives each period's total with no unit lost."""
    t = replace(PLAN, halving_period_blocks=n, emission_first_period=first_period,
                total_supply=10**18)
    for p in range(periods):
        start = first_height + p * n
        blocks = [scheduled_emission(t, first_height, h) for h in range(start, start + n)]
        assert sum(blocks) == period_emission(t, p) == first_period >> p
        assert max(blocks) - min(blocks) <= 1  # equal slices, give or take the floor
    end = first_height + periods * n - 1
    assert emitted_through(t, first_height, end) == sum(
        period_emission(t, p) for p in range(periods))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), first_period=st.integers(1, 10**6),
       supply=st.integers(1, 4 * 10**6))
def test_minting_never_passes_the_network_allocation(n: int, first_period: int,
                                                     supply: int) -> None:
    """Block by block, what is minted stops at the network bucket and matches the closed form."""
    t = replace(PLAN, halving_period_blocks=n, emission_first_period=first_period,
                total_supply=supply)
    minted = 0
    for height in range(1, 6 * n + 1):
        minted += block_emission(t, 1, height, minted)
        assert minted <= network_allocation(t)
        assert minted == emitted_through(t, 1, height)


def test_periods_past_64_emit_nothing() -> None:
    assert period_emission(PLAN, 64) == 0 and period_emission(PLAN, 10**6) == 0
