"""The token economy's block rules in their order, and the rule for each tx kind.

Before a block's txs: liveness and double-sign slashing for the parent height
(a jailed validator leaves the set at this block's end), the epoch snapshot of
licences and queens, matured unbondings paid out, the pool's price observed
before anyone trades in the block, proof-of-compute epoch work (providers'
rewards paid, availability challenges issued), tiles sampled and provider
releases. After them: proof-of-compute deadlines, the block's emission minted and
distributed to the set that signs it, the buyback slice, the active validator
set recomputed from stake. `consensus.transition` calls these around the txs
and then rotates the validator sets and checks the supply invariant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chain.records import (
    AddLiquidity,
    Attest,
    CommitResult,
    CreateValidator,
    Delegate,
    DeregisterProvider,
    DuplicateVoteEvidence,
    EditValidator,
    IssueStable,
    LicenceTransfer,
    PayRevenue,
    Redelegate,
    RegisterProvider,
    RemoveLiquidity,
    RevealTiles,
    SubmitJob,
    Swap,
    Undelegate,
    Unjail,
    WithdrawRewards,
)
from chain.state import State
from consensus import buyback, compute, compute_providers, distribution, exchange, slashing, staking
from consensus.context import BlockContext

TxHandler = Callable[[State, bytes, Any, BlockContext], None]

TX_HANDLERS: dict[type, TxHandler] = {
    LicenceTransfer: distribution.apply_licence_transfer,
    CreateValidator: staking.apply_create_validator,
    EditValidator: staking.apply_edit_validator,
    Delegate: staking.apply_delegate,
    Undelegate: staking.apply_undelegate,
    Redelegate: staking.apply_redelegate,
    WithdrawRewards: staking.apply_withdraw_rewards,
    Unjail: slashing.apply_unjail,
    Swap: exchange.apply_swap,
    AddLiquidity: exchange.apply_add_liquidity,
    RemoveLiquidity: exchange.apply_remove_liquidity,
    IssueStable: exchange.apply_issue_stable,
    PayRevenue: buyback.apply_pay_revenue,
    RegisterProvider: compute_providers.apply_register_provider,
    DeregisterProvider: compute_providers.apply_deregister_provider,
    SubmitJob: compute.apply_submit_job,
    CommitResult: compute.apply_commit_result,
    RevealTiles: compute.apply_reveal_tiles,
    Attest: compute.apply_attest,
}


def begin_block(state: State, ctx: BlockContext, signers: frozenset[bytes] | None,
                evidence: tuple[DuplicateVoteEvidence, ...]) -> None:
    """Rules before the txs (the parent's `signers` are None at the first height)."""
    slashing.begin_block(state, ctx, signers, evidence)
    distribution.begin_block(state, ctx)
    staking.release_matured(state, ctx)
    exchange.begin_block(state, ctx)
    compute.begin_block(state, ctx)


def end_block(state: State, ctx: BlockContext) -> None:
    """Rules after the txs: proof-of-compute deadlines, emission, the buyback slice, then the
    active set."""
    compute.end_block(state, ctx)
    distribution.end_block(state, ctx)
    buyback.end_block(state, ctx)
    staking.update_active_set(state, ctx)
