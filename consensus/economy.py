"""The token economy's block rules in their order, and the rule for each tx kind.

Before a block's txs: liveness and double-sign slashing for the parent height,
the epoch snapshot, matured unbondings, the pool's price observation. After
them: emission minted and distributed, the buyback slice, the active validator
set. `consensus.transition` calls these around the txs and then checks the
supply invariant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chain.records import DuplicateVoteEvidence
from chain.state import State
from consensus.context import BlockContext

TxHandler = Callable[[State, bytes, Any, BlockContext], None]

TX_HANDLERS: dict[type, TxHandler] = {}


def begin_block(state: State, ctx: BlockContext, signers: frozenset[bytes] | None,
                evidence: tuple[DuplicateVoteEvidence, ...]) -> None:
    """Rules before the txs (the parent's `signers` are None at the first height)."""


def end_block(state: State, ctx: BlockContext) -> None:
    """Rules after the txs."""
