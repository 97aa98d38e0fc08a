"""What the rules of a block see: the block's context, and how a tx body fails.

Every tx handler has the signature `handler(state, sender, body, ctx) -> None`
and raises `TxFailed(code, reason)` to fail the body: the tx still pays its fee
and bumps its nonce, and everything else it changed is rolled back.

Receipt codes by subsystem: 1-99 transfers and common checks, 100-199 staking
and slashing, 200-299 distribution and licences, 300-399 pool, stable unit and
buyback, 400-499 proof of compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.params import NetworkParams

CODE_OK = 0
CODE_INSUFFICIENT_FUNDS = 1
CODE_OVERFLOW = 2
CODE_UNKNOWN_DENOM = 3


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What a tx or a block rule may know about the block being applied."""

    chain_id: str
    height: int
    fee_recipient: bytes
    min_fee: int
    params: NetworkParams = field(default_factory=NetworkParams)
    first_height: int = 1  # genesis initial_height: emission and buyback periods count from it


class TxFailed(Exception):
    """A tx is includable but its body fails: a failed receipt with `code` and the reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
