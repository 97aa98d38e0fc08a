"""Supply projection: the emission schedule and a buyback burn, year by year.

Everything here comes from `consensus.emission`, so the figures are the ones
the chain mints, to the base unit: the network allocation is emitted in
halving periods of `halving_period_blocks` from the chain's first height,
never past the network bucket. A year is 365 days of blocks at the target
block time (`block_time_ms`).

The burn side is a model, not a rule: a constant yearly revenue in stable
base units buys GPU at a constant price and burns it. `gpu_price` is stable
base units per GPU base unit, the pool's own price (stable reserve / GPU
reserve), which is stable per GPU when both have 9 decimals. Supply at the
end of a year is genesis + minted - burned, where genesis is what exists at
genesis: the total supply less the network allocation. The burn never takes
more than exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.emission import emitted_through, network_allocation
from consensus.params import DAYS_PER_YEAR, NetworkParams, Ratio, blocks_for_days

MAX_PROJECTION_YEARS = 1000


class ProjectionError(ValueError):
    """A projection was asked for with impossible inputs (negative years, a zero price)."""


@dataclass(frozen=True, slots=True)
class YearRow:
    """One projected year: what it emitted and burned, and the supply at its end."""

    year: int  # 1 for the first year
    end_height: int  # the year's last height
    emitted: int  # GPU base units minted during the year
    burned: int  # GPU base units bought back and burned during the year
    minted_total: int  # minted since genesis, through end_height
    burned_total: int  # burned since genesis
    supply: int  # genesis + minted_total - burned_total


@dataclass(frozen=True, slots=True)
class PeriodRow:
    """One halving period: its heights and what it emits (after the network cap)."""

    period: int  # 0 for the first
    first_height: int
    last_height: int
    emitted: int  # GPU base units


def blocks_per_year(params: NetworkParams) -> int:
    """Blocks in 365 days at the target block time (rounded up, as every duration)."""
    return blocks_for_days(DAYS_PER_YEAR, params.block.block_time_ms)


def genesis_supply(params: NetworkParams) -> int:
    """GPU that exists at genesis: the total supply less the network allocation."""
    return params.tokenomics.total_supply - network_allocation(params.tokenomics)


def halving_heights(params: NetworkParams, first_height: int, count: int) -> list[int]:
    """The first heights of halving periods 1..count (where the emission rate halves)."""
    _check_count(count, "halving count")
    n = params.tokenomics.halving_period_blocks
    return [first_height + period * n for period in range(1, count + 1)]


def project_periods(params: NetworkParams, first_height: int, count: int) -> list[PeriodRow]:
    """Periods 0..count-1: each one's heights and its emission, capped by the network bucket."""
    _check_count(count, "period count")
    tokenomics, n = params.tokenomics, params.tokenomics.halving_period_blocks
    rows = []
    for period in range(count):
        start = first_height + period * n
        end = start + n - 1
        emitted = emitted_through(tokenomics, first_height, end) - emitted_through(
            tokenomics, first_height, start - 1
        )
        rows.append(PeriodRow(period, start, end, emitted))
    return rows


def project_supply(
    params: NetworkParams,
    first_height: int,
    years: int,
    revenue_per_year: int,
    gpu_price: Ratio,
) -> list[YearRow]:
    """Years 1..years: emission as the chain mints it, a burn of revenue / price per year.

    The year's burn is floor(revenue_per_year / gpu_price) GPU base units, at
    most what exists at the end of the year.
    """
    _check_count(years, "years")
    if revenue_per_year < 0:
        raise ProjectionError(f"revenue must be non-negative, got {revenue_per_year}")
    if gpu_price.num == 0:
        raise ProjectionError("the GPU price must be positive, got 0")
    tokenomics, per_year = params.tokenomics, blocks_per_year(params)
    genesis = genesis_supply(params)
    buyback = revenue_per_year * gpu_price.den // gpu_price.num
    rows: list[YearRow] = []
    minted_before = burned_total = 0
    for year in range(1, years + 1):
        end_height = first_height + year * per_year - 1
        minted_total = emitted_through(tokenomics, first_height, end_height)
        emitted = minted_total - minted_before
        burned = min(buyback, genesis + minted_total - burned_total)
        burned_total += burned
        supply = genesis + minted_total - burned_total
        rows.append(YearRow(year, end_height, emitted, burned, minted_total, burned_total, supply))
        minted_before = minted_total
    return rows


def find_crossover(rows: list[YearRow]) -> YearRow | None:
    """The first year whose burn exceeds its emission (supply falls), or None."""
    return next((row for row in rows if row.burned > row.emitted), None)


def periods_covering(params: NetworkParams, years: int) -> int:
    """How many halving periods `years` years reach into (at least 1)."""
    blocks = max(years, 1) * blocks_per_year(params)
    return -(-blocks // params.tokenomics.halving_period_blocks)


def _check_count(value: int, what: str) -> None:
    """Raise ProjectionError unless 0 <= value <= MAX_PROJECTION_YEARS."""
    if not isinstance(value, int) or not 0 <= value <= MAX_PROJECTION_YEARS:
        raise ProjectionError(f"{what} must be 0..{MAX_PROJECTION_YEARS}, got {value!r}")
