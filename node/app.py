"""The engine's application: build and validate blocks on the node's committed head.

Both paths execute the block once and keep the outcome (state writes, receipts,
canonical bytes) by block hash, so the commit that follows a decision writes
exactly what validation computed, without executing the block again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chain.address import address_from_public_key
from chain.codec import encode
from chain.errors import ChainError
from chain.mempool import PendingTx
from chain.records import Block, Commit, block_hash, encode_block
from chain.state import State
from chain.store import BlockStore, Head
from consensus.commit import EMPTY_COMMIT
from consensus.context import ChainRules
from consensus.errors import InvalidBlock
from consensus.evidence import EvidencePool
from consensus.producer import build_block, next_block_time
from consensus.transition import BlockResult, IsVerified, apply_block

log = logging.getLogger("gannet.app")
MAX_EVIDENCE_PER_BLOCK = 100


@dataclass(frozen=True, slots=True)
class Executed:
    """A block executed on the current head: everything its commit needs."""

    block: Block
    block_hash: bytes
    raw: bytes
    result: BlockResult
    changed: dict[bytes, object]
    rejected: tuple[tuple[bytes, str], ...]
    senders: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class BlockLimits:
    """How much one proposal may carry."""

    max_txs: int
    max_bytes: int


Reap = Callable[[int, int], list[PendingTx]]


class ChainApp:
    """`consensus.engine.Application` over a block store.

    The head and last commit change only through `advance`, called by the node
    after it commits a block; executions against an older head are dropped then.
    """

    def __init__(self, store: BlockStore, rules: ChainRules, proposer: bytes | None,
                 limits: BlockLimits, reap: Reap, is_verified: IsVerified,
                 evidence: EvidencePool) -> None:
        self.store = store
        self.rules = rules
        self.chain_id = rules.chain_id
        self.proposer = proposer
        self.limits = limits
        self.head: Head = store.head()
        self.last_commit: Commit = _last_commit(store, self.head)
        self._reap = reap
        self._is_verified = is_verified
        self._evidence = evidence
        self._executed: dict[bytes, Executed | None] = {}
        self._lock = threading.Lock()

    # --- Application ------------------------------------------------------------

    def propose_block(self, height: int, round_: int) -> Block:
        """A new block on the head from the mempool's executable txs and pending evidence."""
        if self.proposer is None:  # pragma: no cover - the engine asks only validators
            raise RuntimeError("a node without a validator key cannot propose")
        candidates = self._reap(self.limits.max_txs, self.limits.max_bytes)
        head = self.head
        state = State(self.store.get_state)
        built = build_block(
            state, head, self.rules, self.proposer,
            next_block_time(head, time.time_ns() // 1_000_000), self.last_commit, candidates,
            is_verified=lambda _h: True,  # reaped txs were verified on admission
            evidence=self._evidence.pending(MAX_EVIDENCE_PER_BLOCK, head.height + 1),
        )
        block = built.block
        bh = block_hash(block)
        self._remember(head, bh, Executed(
            block=block, block_hash=bh, raw=encode_block(block, built.tx_raws),
            result=built.result, changed=state.changed(), rejected=built.rejected,
            senders=built.senders))
        log.debug("proposing height=%d round=%d txs=%d hash=%s", height, round_,
                 len(block.txs), bh.hex()[:16])
        return block

    def validate_block(self, block: Block, raw: bytes | None = None) -> bool:
        """Whether `block` extends the head and all its txs apply (executed once)."""
        bh = block_hash(block)
        with self._lock:
            if bh in self._executed:
                return self._executed[bh] is not None
        head = self.head
        state = State(self.store.get_state)
        try:
            result = apply_block(state, block, head, self.rules, self._is_verified)
        except (InvalidBlock, ChainError) as exc:
            log.warning("invalid block height=%d hash=%s: %s", block.header.height,
                        bh.hex()[:16], exc)
            self._remember(head, bh, None)
            return False
        senders = frozenset(address_from_public_key(stx.tx.sender) for stx in block.txs)
        self._remember(head, bh, Executed(
            block=block, block_hash=bh, raw=raw if raw is not None else encode(block),
            result=result, changed=state.changed(), rejected=(), senders=senders))
        return True

    # --- node side ----------------------------------------------------------------

    def executed(self, bh: bytes) -> Executed | None:
        """The execution of a valid block on the current head, if done."""
        with self._lock:
            return self._executed.get(bh)

    def advance(self, head: Head, last_commit: Commit) -> None:
        """The node committed a block: later blocks build on `head`."""
        with self._lock:
            self.head, self.last_commit = head, last_commit
            self._executed.clear()

    def _remember(self, head: Head, bh: bytes, executed: Executed | None) -> None:
        with self._lock:
            if head is self.head:  # the head moved on meanwhile: the result is stale
                self._executed[bh] = executed


def _last_commit(store: BlockStore, head: Head) -> Commit:
    return store.get_commit(head.height) or EMPTY_COMMIT
