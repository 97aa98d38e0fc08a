"""Block building by the proposer: pick evidence and executable txs, apply them, seal a header.

The proposer runs the same rules every node runs; a candidate tx or piece of
evidence that turns out invalid is left out (and reported) rather than
invalidating the block.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chain.hashing import merkle_root
from chain.mempool import PendingTx
from chain.records import (
    MAX_EVIDENCE,
    Block,
    Commit,
    DuplicateVoteEvidence,
    Header,
    SignedTx,
    commit_hash,
    evidence_root,
    validator_set_hash,
)
from chain.state import State
from chain.store import Head
from consensus.context import BlockContext, ChainRules
from consensus.errors import InvalidEvidence, InvalidSignature, InvalidTransaction, WrongChainId
from consensus.evidence import (
    evidence_hash,
    offence_of,
    validate_evidence,
)
from consensus.transition import (
    HEADER_VERSION,
    BlockResult,
    IsVerified,
    apply_evidence,
    apply_tx,
    begin_block,
    end_block,
    find_validator,
    finish_block,
)


@dataclass(frozen=True, slots=True)
class BuiltBlock:
    """A proposed block, the result of applying it, and the candidates left out.

    `tx_raws` are the canonical encodings of `block.txs`, for `encode_block`;
    `senders` are the addresses whose committed nonce or balance the block may have
    lowered (senders of included and of rejected txs), for the mempool to re-check.
    `rejected_evidence` holds (evidence hash, reason) of evidence left out.
    """

    block: Block
    result: BlockResult
    rejected: tuple[tuple[bytes, str], ...]
    tx_raws: tuple[bytes, ...]
    senders: frozenset[bytes]
    rejected_evidence: tuple[tuple[bytes, str], ...] = ()


def next_block_time(head: Head, now_ms: int) -> int:
    """A proposer's block time: its clock, but always after the previous block."""
    return max(now_ms, head.time_ms + 1)


def build_block(state: State, head: Head, rules: ChainRules, proposer: bytes, time_ms: int,
                last_commit: Commit, candidates: Iterable[SignedTx | PendingTx],
                is_verified: IsVerified | None = None,
                evidence: tuple[DuplicateVoteEvidence, ...] = ()) -> BuiltBlock:
    """Build and apply the next block on `head` from `evidence` and `candidates`, in order.

    Evidence that is invalid here (or proves an offence an earlier piece already
    proves) is left out and reported in `rejected_evidence`. A candidate tx that
    is invalid in the state so far is left out and reported in `rejected`; the
    same sender's later candidates are skipped (not rejected), since their nonces
    now follow a gap. Candidates may come from the mempool (`PendingTx`, whose
    encoding and hash are reused) or be plain signed txs.
    """
    chain_id = rules.chain_id
    vset, next_vset = state.get_validator_set(), state.get_next_validator_set()
    validator = find_validator(vset, proposer)
    if validator is None:
        raise ValueError(f"{proposer.hex()} is not in the validator set")
    height = head.height + 1
    included_evidence, rejected_evidence = select_evidence(
        state, chain_id, evidence, height, rules.evidence_max_age)
    apply_evidence(state, included_evidence, height)
    ctx = rules.context(height, validator.operator, head.block_hash)
    begin_block(state, ctx, last_commit, included_evidence)
    included, receipts, rejected, senders = select_txs(state, ctx, candidates, is_verified)
    end_block(state, ctx)
    raws = tuple(p.raw for p in included)
    header = Header(
        version=HEADER_VERSION, chain_id=chain_id.encode(), height=height,
        time_ms=time_ms, prev_hash=head.block_hash, last_commit_hash=commit_hash(last_commit),
        tx_root=merkle_root(list(raws)), app_hash=head.app_hash,
        results_hash=head.results_hash, validators_hash=validator_set_hash(vset),
        next_validators_hash=validator_set_hash(next_vset),
        evidence_hash=evidence_root(included_evidence), proposer=proposer,
    )
    block = Block(header=header, txs=tuple(p.stx for p in included),
                  evidence=included_evidence, last_commit=last_commit)
    result = finish_block(state, head, receipts, [p.hash for p in included])
    return BuiltBlock(block=block, result=result, rejected=tuple(rejected), tx_raws=raws,
                      senders=frozenset(senders), rejected_evidence=rejected_evidence)


def select_evidence(state: State, chain_id: str, evidence: tuple[DuplicateVoteEvidence, ...],
                    height: int, max_age: int
                    ) -> tuple[tuple[DuplicateVoteEvidence, ...], tuple[tuple[bytes, str], ...]]:
    """The pieces of `evidence` block `height` may carry (at most MAX_EVIDENCE), and the
    (hash, reason) of the others."""
    included: list[DuplicateVoteEvidence] = []
    rejected: list[tuple[bytes, str]] = []
    seen = set()
    for piece in evidence:
        offence = offence_of(piece)
        try:
            if offence in seen:
                raise InvalidEvidence("duplicate evidence of one offence in the block")
            if len(included) >= MAX_EVIDENCE:
                raise InvalidEvidence(f"the block already carries {MAX_EVIDENCE} pieces")
            validate_evidence(chain_id, state, piece, height, max_age)
        except InvalidEvidence as exc:
            rejected.append((evidence_hash(piece), exc.reason))
            continue
        seen.add(offence)
        included.append(piece)
    return tuple(included), tuple(rejected)


def select_txs(state: State, ctx: BlockContext, candidates: Iterable[SignedTx | PendingTx],
               is_verified: IsVerified | None
               ) -> tuple[list[PendingTx], list, list[tuple[bytes, str]], set[bytes]]:
    """Apply the candidates in order: (included, receipts, rejected, senders touched)."""
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
    return included, receipts, rejected, senders
