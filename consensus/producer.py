"""Block building by the proposer: pick executable txs, apply them, seal a header.

The proposer runs the same `apply_tx` every node runs; a candidate that turns out
invalid is left out (and reported) rather than invalidating the block.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chain.hashing import merkle_root
from chain.mempool import PendingTx
from chain.records import (
    Block,
    Commit,
    Header,
    SignedTx,
    commit_hash,
    evidence_root,
    validator_set_hash,
)
from chain.state import State
from chain.store import Head
from consensus.errors import InvalidSignature, InvalidTransaction, WrongChainId
from consensus.transition import (
    HEADER_VERSION,
    BlockContext,
    BlockResult,
    IsVerified,
    apply_tx,
    find_validator,
    finish_block,
)


@dataclass(frozen=True, slots=True)
class BuiltBlock:
    """A proposed block, the result of applying it, and the candidates left out.

    `tx_raws` are the canonical encodings of `block.txs`, for `encode_block`;
    `senders` are the addresses whose committed nonce or balance the block may have
    lowered (senders of included and of rejected txs), for the mempool to re-check.
    """

    block: Block
    result: BlockResult
    rejected: tuple[tuple[bytes, str], ...]
    tx_raws: tuple[bytes, ...]
    senders: frozenset[bytes]


def next_block_time(head: Head, now_ms: int) -> int:
    """A proposer's block time: its clock, but always after the previous block."""
    return max(now_ms, head.time_ms + 1)


def build_block(state: State, head: Head, chain_id: str, min_fee: int, proposer: bytes,
                time_ms: int, last_commit: Commit,
                candidates: Iterable[SignedTx | PendingTx],
                is_verified: IsVerified | None = None) -> BuiltBlock:
    """Build and apply the next block on `head` from `candidates`, in order.

    A candidate that is invalid in the state so far is left out and reported in
    `rejected`; the same sender's later candidates are skipped (not rejected),
    since their nonces now follow a gap. Candidates may come from the mempool
    (`PendingTx`, whose encoding and hash are reused) or be plain signed txs.
    """
    vset = state.get_validator_set()
    validator = find_validator(vset, proposer)
    if validator is None:
        raise ValueError(f"{proposer.hex()} is not in the validator set")
    ctx = BlockContext(chain_id=chain_id, height=head.height + 1,
                       fee_recipient=validator.operator, min_fee=min_fee)
    included: list[PendingTx] = []
    receipts, rejected = [], []
    stalled: set[bytes] = set()  # senders whose earlier tx was rejected: later nonces wait
    senders: set[bytes] = set()
    for candidate in candidates:
        pending = candidate if isinstance(candidate, PendingTx) else PendingTx.of(candidate)
        if pending.sender in stalled:
            continue
        verified = is_verified is not None and is_verified(pending.hash)
        try:
            receipts.append(apply_tx(state, pending.stx, ctx, verified, pending.sender))
        except InvalidTransaction as exc:
            rejected.append((pending.hash, str(exc)))
            senders.add(pending.sender)
            if not isinstance(exc, InvalidSignature | WrongChainId):
                stalled.add(pending.sender)  # only a tx the sender really signed may stall it
            continue
        included.append(pending)
        senders.add(pending.sender)
    txs = tuple(p.stx for p in included)
    raws = tuple(p.raw for p in included)
    vset_hash = validator_set_hash(vset)
    header = Header(
        version=HEADER_VERSION, chain_id=chain_id.encode(), height=head.height + 1,
        time_ms=time_ms, prev_hash=head.block_hash, last_commit_hash=commit_hash(last_commit),
        tx_root=merkle_root(list(raws)), app_hash=head.app_hash,
        results_hash=head.results_hash, validators_hash=vset_hash,
        next_validators_hash=vset_hash, evidence_hash=evidence_root(()), proposer=proposer,
    )
    block = Block(header=header, txs=txs, evidence=(), last_commit=last_commit)
    result = finish_block(state, head, receipts, [p.hash for p in included])
    return BuiltBlock(block=block, result=result, rejected=tuple(rejected), tx_raws=raws,
                      senders=frozenset(senders))
