"""Genesis vesting: split an allocation into GPU spendable at launch and locks.

The plan's schedules: node holders get 5 % at launch and the rest linearly over
two years; investors get nothing before a 6-month cliff, then 2 years linear.
Every figure comes from the genesis parameters.
"""

from __future__ import annotations

from chain.types import UINT64_MAX
from consensus.params import ZERO, Ratio
from genesis.document import Genesis, GenesisError, GenesisLock

VESTING_TRANCHES = 24  # monthly steps over the plan's two-year vesting
VESTING_SCHEDULES = ("node-holder", "investor")


def compute_vesting_locks(
    amount: int,
    *,
    unlocked: Ratio,
    start_height: int,
    cliff_blocks: int,
    vesting_blocks: int,
    tranches: int = VESTING_TRANCHES,
) -> tuple[int, tuple[GenesisLock, ...]]:
    """Split `amount` into GPU spendable at launch and locks that vest the rest.

    floor(amount * unlocked) is spendable at once. The rest vests linearly
    after the cliff in `tranches` steps: step i releases the part due by
    `cliff + ceil(vesting_blocks * i / tranches)` blocks after `start_height`.
    The parts sum exactly to the locked amount.
    """
    if tranches < 1 or vesting_blocks < 1 or cliff_blocks < 0 or not 0 <= amount <= UINT64_MAX:
        raise GenesisError(
            f"vesting needs tranches >= 1, vesting_blocks >= 1, cliff_blocks >= 0 and a uint64 "
            f"amount, got {tranches}, {vesting_blocks}, {cliff_blocks}, {amount}"
        )
    liquid = unlocked.floor_mul(amount)
    locked = amount - liquid
    releases: dict[int, int] = {}
    for step in range(1, tranches + 1):
        part = locked * step // tranches - locked * (step - 1) // tranches
        height = start_height + cliff_blocks - (-vesting_blocks * step // tranches)
        if part:
            releases[height] = releases.get(height, 0) + part
    return liquid, tuple(GenesisLock(part, height) for height, part in sorted(releases.items()))


def compute_genesis_vesting(
    genesis: Genesis, schedule: str, amount: int
) -> tuple[int, tuple[GenesisLock, ...]]:
    """Spendable GPU and locks for `amount` under a plan schedule of the genesis params.

    "node-holder": node_holder_launch_unlock at launch, the rest linear over
    node_holder_vesting_blocks. "investor": nothing at launch, a cliff of
    investor_cliff_blocks, then linear over investor_vesting_blocks.
    """
    tokenomics = genesis.params.tokenomics
    if schedule == "node-holder":
        unlocked, cliff = tokenomics.node_holder_launch_unlock, 0
        vesting = tokenomics.node_holder_vesting_blocks
    elif schedule == "investor":
        unlocked, cliff = ZERO, tokenomics.investor_cliff_blocks
        vesting = tokenomics.investor_vesting_blocks
    else:
        raise GenesisError(
            f"unknown vesting schedule {schedule!r}: expected one of {', '.join(VESTING_SCHEDULES)}"
        )
    return compute_vesting_locks(
        amount,
        unlocked=unlocked,
        start_height=genesis.initial_height,
        cliff_blocks=cliff,
        vesting_blocks=vesting,
    )
