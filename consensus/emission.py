"""Block emission: how much new GPU each height mints for the network.

Period p (p = 0, 1, ...) is the p-th run of `halving_period_blocks` heights
from the chain's first height; it emits `emission_first_period >> p` in total
(the first period's amount halved p times, rounded down). Within a period the
i-th block mints `E·(i+1)//N - E·i//N`, so the blocks of a period sum to
exactly E with no carry to keep. Emission stops when the network allocation
(`allocation_bps.network` of the total supply) is used up: a block never mints
past it.
"""

from __future__ import annotations

from consensus.params import TokenomicsParams, compute_allocation_amount


def period_of(tokenomics: TokenomicsParams, first_height: int, height: int) -> int:
    """The halving period `height` falls in (0 for the first)."""
    return (height - first_height) // tokenomics.halving_period_blocks


def period_emission(tokenomics: TokenomicsParams, period: int) -> int:
    """The total a halving period emits: the first period's amount halved `period` times."""
    return tokenomics.emission_first_period >> period if period < 64 else 0


def scheduled_emission(tokenomics: TokenomicsParams, first_height: int, height: int) -> int:
    """What the schedule mints at `height`, before the network-allocation cap."""
    if height < first_height:
        return 0
    n = tokenomics.halving_period_blocks
    index = (height - first_height) % n
    total = period_emission(tokenomics, period_of(tokenomics, first_height, height))
    return total * (index + 1) // n - total * index // n


def network_allocation(tokenomics: TokenomicsParams) -> int:
    """The most emission may ever mint: the network-incentive share of the total supply."""
    return compute_allocation_amount(tokenomics, "network")


def block_emission(tokenomics: TokenomicsParams, first_height: int, height: int,
                   minted_before: int) -> int:
    """What block `height` mints, given `minted_before` already minted: never past the cap."""
    room = max(network_allocation(tokenomics) - minted_before, 0)
    return min(scheduled_emission(tokenomics, first_height, height), room)


def emitted_through(tokenomics: TokenomicsParams, first_height: int, height: int) -> int:
    """Total scheduled emission of heights first_height..height, capped (closed form)."""
    if height < first_height:
        return 0
    n = tokenomics.halving_period_blocks
    elapsed = height - first_height + 1
    full, partial = divmod(elapsed, n)
    total = sum(period_emission(tokenomics, p) for p in range(min(full, 64)))
    if full < 64:
        total += period_emission(tokenomics, full) * partial // n
    return min(total, network_allocation(tokenomics))
