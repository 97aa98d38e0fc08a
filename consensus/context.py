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

from chain.hashing import sha256
from chain.records import Account
from consensus.params import NetworkParams

CODE_OK = 0
CODE_INSUFFICIENT_FUNDS = 1
CODE_OVERFLOW = 2
CODE_UNKNOWN_DENOM = 3
CODE_MODULE_ACCOUNT = 4


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What a tx or a block rule may know about the block being applied."""

    chain_id: str
    height: int
    fee_recipient: bytes
    min_fee: int
    params: NetworkParams = field(default_factory=NetworkParams)
    first_height: int = 1  # genesis initial_height: emission and buyback periods count from it
    beacon: bytes = bytes(32)  # the block's randomness: see `block_beacon`


@dataclass(frozen=True, slots=True)
class ChainRules:
    """What every block of one chain is checked against: its id, parameters and first height."""

    chain_id: str
    params: NetworkParams = field(default_factory=NetworkParams)
    first_height: int = 1

    @property
    def min_fee(self) -> int:
        """The least fee a tx must pay."""
        return self.params.fee.min_fee

    @property
    def evidence_max_age(self) -> int:
        """How many heights old evidence may be."""
        return self.params.staking.evidence_max_age_blocks

    def context(self, height: int, fee_recipient: bytes,
                prev_hash: bytes = bytes(32)) -> BlockContext:
        """The context of block `height` on parent `prev_hash`, its fees to `fee_recipient`."""
        return BlockContext(chain_id=self.chain_id, height=height, fee_recipient=fee_recipient,
                            min_fee=self.min_fee, params=self.params,
                            first_height=self.first_height,
                            beacon=block_beacon(self.chain_id, prev_hash))


def block_beacon(chain_id: str, prev_hash: bytes) -> bytes:
    """The chain's only randomness at a block: H("gannet/beacon" || chain id || parent hash).

    The parent is decided before the block is proposed, so no proposer of this block can
    choose it; the parent's proposer could grind its own block's contents to steer it,
    which the uses (provider assignment, tile sampling) tolerate: a sampled tile set is
    fixed only after the provider has committed its root.
    """
    return sha256(b"gannet/beacon" + chain_id.encode() + prev_hash)


def spendable_gpu(account: Account, height: int) -> int:
    """GPU balance minus amounts still locked at `height`."""
    if not account.locks:
        return account.gpu
    locked = sum(lock.amount for lock in account.locks if lock.release_height > height)
    return max(account.gpu - locked, 0)


class TxFailed(Exception):
    """A tx is includable but its body fails: a failed receipt with `code` and the reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
