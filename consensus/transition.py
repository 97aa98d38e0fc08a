"""The state transition: plain functions from (state, block) to the next state.

`apply_block` validates a header against the head it extends, records the
block's evidence, applies every tx in order, rotates the validator sets, and
returns the receipts, the write set and the next app hash. It never reads a
clock or anything but its arguments, so every node computes the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chain.address import address_from_public_key
from chain.records import (
    DENOM_GPU,
    DENOM_STABLE,
    RECEIPT_FAILED,
    RECEIPT_OK,
    Account,
    Block,
    Commit,
    DuplicateVoteEvidence,
    Receipt,
    SignedTx,
    Transfer,
    TxBody,
    Validator,
    ValidatorSet,
    commit_hash,
    evidence_root,
    results_root,
    tx_hash,
    tx_root,
    validator_set_hash,
)
from chain.signing import verify_tx_signature
from chain.state import State, is_module_address, next_app_hash
from chain.store import Head
from chain.types import UINT64_MAX
from consensus import economy
from consensus.commit import EMPTY_COMMIT, validate_commit
from consensus.context import (
    CODE_INSUFFICIENT_FUNDS,
    CODE_MODULE_ACCOUNT,
    CODE_OK,
    CODE_OVERFLOW,
    CODE_UNKNOWN_DENOM,
    BlockContext,
    ChainRules,
    TxFailed,
    spendable_gpu,
)
from consensus.errors import (
    BadNonce,
    CannotPayFee,
    FeeBelowMinimum,
    InvalidBlockTx,
    InvalidHeader,
    InvalidSignature,
    InvalidTransaction,
    UnknownTxKind,
    WrongChainId,
)
from consensus.evidence import record_evidence, validate_block_evidence
from consensus.supply import check_supply_invariant, track_balances
from consensus.validators import process_validator_updates, validator_set_at

HEADER_VERSION = 1

IsVerified = Callable[[bytes], bool]


@dataclass(frozen=True, slots=True)
class BlockResult:
    """The outcome of applying a block: receipts, state writes and the new app hash."""

    receipts: tuple[Receipt, ...]
    tx_hashes: tuple[bytes, ...]
    writes: dict[bytes, bytes]
    app_hash: bytes
    results_hash: bytes


# --- transactions ----------------------------------------------------------------


def validate_tx(state: State, stx: SignedTx, ctx: BlockContext, verified: bool,
                sender: bytes | None = None) -> None:
    """Raise `InvalidTransaction` unless `stx` may be included now.

    Rules: signed for this chain; signature valid; nonce equals the sender's next
    nonce and can still be incremented; fee at least the minimum and covered by the
    spendable GPU balance.
    """
    tx = stx.tx
    if type(tx.body) is not Transfer and type(tx.body) not in economy.TX_HANDLERS:
        raise UnknownTxKind(f"no rule applies {type(tx.body).__name__} transactions")
    if tx.chain_id != ctx.chain_id.encode():
        raise WrongChainId(f"wrong chain id: expected {ctx.chain_id}, got {tx.chain_id!r}")
    if not verified and not verify_tx_signature(stx):
        raise InvalidSignature("signature does not verify for the sender key")
    account = state.get_account(sender or address_from_public_key(tx.sender))
    if tx.nonce != account.nonce:
        raise BadNonce(f"bad nonce: expected {account.nonce}, got {tx.nonce}")
    if tx.nonce == UINT64_MAX:
        raise BadNonce(f"nonce space exhausted: nonce {tx.nonce} cannot be incremented")
    if tx.fee < ctx.min_fee:
        raise FeeBelowMinimum(f"fee too low: minimum {ctx.min_fee}, got {tx.fee}")
    have = spendable_gpu(account, ctx.height)
    if tx.fee > have:
        raise CannotPayFee(f"cannot pay fee: spendable {have}, fee {tx.fee}")


def apply_tx(state: State, stx: SignedTx, ctx: BlockContext, verified: bool = False,
             sender: bytes | None = None) -> Receipt:
    """Apply one tx: charge the fee and bump the nonce, then run its body.

    Raises `InvalidTransaction` if the tx cannot be included. If the body fails,
    the receipt says why and only the fee and nonce change. `sender`, when given,
    must be the address of `stx.tx.sender` (callers that already derived it).
    """
    sender = sender or address_from_public_key(stx.tx.sender)
    validate_tx(state, stx, ctx, verified, sender)
    state.begin()
    try:
        charge_fee(state, sender, stx.tx.fee, ctx)
    except InvalidTransaction:
        state.rollback()
        raise
    state.commit_tx()
    state.begin()
    try:
        apply_body(state, sender, stx.tx.body, ctx)
    except TxFailed as failure:
        state.rollback()
        return Receipt(status=RECEIPT_FAILED, code=failure.code,
                       reason=str(failure).encode()[:256], fee_paid=stx.tx.fee)
    state.commit_tx()
    return Receipt(status=RECEIPT_OK, code=CODE_OK, reason=b"", fee_paid=stx.tx.fee)


def charge_fee(state: State, sender: bytes, fee: int, ctx: BlockContext) -> None:
    """Move the fee from the sender to the fee recipient and bump the sender's nonce."""
    account = state.get_account(sender)
    state.set_account(sender, _with(account, gpu=account.gpu - fee, nonce=account.nonce + 1))
    recipient = state.get_account(ctx.fee_recipient)
    state.set_account(ctx.fee_recipient, _with(recipient, gpu=_add(recipient.gpu, fee)))


def apply_body(state: State, sender: bytes, body: TxBody, ctx: BlockContext) -> None:
    """Run a tx body by its kind's rule; the rule raises `TxFailed` to fail it."""
    if isinstance(body, Transfer):
        apply_transfer(state, sender, body, ctx)
    else:
        economy.TX_HANDLERS[type(body)](state, sender, body, ctx)


def apply_transfer(state: State, sender: bytes, body: Transfer, ctx: BlockContext) -> None:
    """Move `amount` of one denomination; the sender may spend only unlocked GPU.

    A module account (stake, rewards, treasury, pool, ...) takes money only through
    its own rules, never by transfer: GPU sent there would be stranded outside its books.
    """
    if body.denom not in (DENOM_GPU, DENOM_STABLE):
        raise TxFailed(CODE_UNKNOWN_DENOM, f"unknown denomination {body.denom}")
    if is_module_address(body.to):
        raise TxFailed(CODE_MODULE_ACCOUNT,
                       "cannot transfer to a protocol module account; use its own tx "
                       "(delegate, swap, pay-revenue, ...)")
    source = state.get_account(sender)
    field = "gpu" if body.denom == DENOM_GPU else "stable"
    have = spendable_gpu(source, ctx.height) if body.denom == DENOM_GPU else source.stable
    if body.amount > have:
        raise TxFailed(CODE_INSUFFICIENT_FUNDS,
                       f"insufficient {field} balance: have {have}, need {body.amount}")
    state.set_account(sender, _with(source, **{field: getattr(source, field) - body.amount}))
    target = state.get_account(body.to)
    total = getattr(target, field) + body.amount
    if total > UINT64_MAX:
        raise TxFailed(CODE_OVERFLOW, f"{field} balance of recipient would overflow uint64")
    state.set_account(body.to, _with(target, **{field: total}))


def _with(account: Account, gpu: int | None = None, stable: int | None = None,
          nonce: int | None = None) -> Account:
    """`account` with some balances or the nonce changed (cheaper than dataclasses.replace)."""
    return Account(gpu=account.gpu if gpu is None else gpu,
                   stable=account.stable if stable is None else stable,
                   nonce=account.nonce if nonce is None else nonce,
                   licences=account.licences, locks=account.locks)


def _add(a: int, b: int) -> int:
    total = a + b
    if total > UINT64_MAX:
        raise InvalidTransaction(f"balance would overflow uint64: {a} + {b}")
    return total


# --- blocks ------------------------------------------------------------------------


def validate_header(block: Block, head: Head, chain_id: str, vset: ValidatorSet,
                    next_vset: ValidatorSet) -> None:
    """Raise `InvalidHeader` unless the header extends `head` under `vset`.

    `vset` signs this height (validators_hash) and `next_vset` the next one
    (next_validators_hash); the proposer must be in `vset`.
    """
    h = block.header
    expect = [
        ("version", HEADER_VERSION, h.version),
        ("chain id", chain_id.encode(), h.chain_id),
        ("height", head.height + 1, h.height),
        ("prev hash", head.block_hash, h.prev_hash),
        ("last commit hash", commit_hash(block.last_commit), h.last_commit_hash),
        ("tx root", tx_root(block.txs), h.tx_root),
        ("app hash", head.app_hash, h.app_hash),
        ("results hash", head.results_hash, h.results_hash),
        ("validators hash", validator_set_hash(vset), h.validators_hash),
        ("next validators hash", validator_set_hash(next_vset), h.next_validators_hash),
        ("evidence hash", evidence_root(block.evidence), h.evidence_hash),
    ]
    for name, want, got in expect:
        if want != got:
            raise InvalidHeader(f"wrong {name}: expected {_show(want)}, got {_show(got)}")
    if h.time_ms <= head.time_ms:
        raise InvalidHeader(f"time must increase: previous {head.time_ms}, got {h.time_ms}")
    if find_validator(vset, h.proposer) is None:
        raise InvalidHeader(f"proposer {h.proposer.hex()} is not a validator")


def validate_last_commit(block: Block, head: Head, chain_id: str, state: State) -> None:
    """The first block carries an empty commit; every later one commits its parent.

    The parent's commit is checked against the set that signed the parent's
    height, which differs from the current set right after a change.
    """
    if head.height == 0:
        if block.last_commit != EMPTY_COMMIT:
            raise InvalidHeader("the first block must carry an empty last commit")
        return
    validate_commit(chain_id, signers_of(state, head.height), block.last_commit, head.height,
                    head.block_hash)


def signers_of(state: State, height: int) -> ValidatorSet:
    """The validator set that signs `height` (history must reach it: a committed height)."""
    vset = validator_set_at(state, height)
    if vset is None:
        raise ValueError(f"state has no validator set for height {height}")
    return vset


def apply_evidence(state: State, evidence: tuple[DuplicateVoteEvidence, ...],
                   height: int) -> None:
    """Record each offence the block proves (slashing is the token economy's rule)."""
    for piece in evidence:
        record_evidence(state, piece, height)


def begin_block(state: State, ctx: BlockContext, last_commit: Commit,
                evidence: tuple[DuplicateVoteEvidence, ...]) -> None:
    """Rules before the txs: liveness and slashing, epochs, matured unbondings, the oracle."""
    signers = (frozenset(sig.validator for sig in last_commit.signatures)
               if ctx.height > ctx.first_height else None)
    economy.begin_block(state, ctx, signers, evidence)


def end_block(state: State, ctx: BlockContext) -> None:
    """Rules after the txs: emission, buyback, the active set; then the validator sets move
    on (updates take effect at height + 2) and the supply must still add up."""
    economy.end_block(state, ctx)
    process_validator_updates(state, ctx.height)
    track_balances(state)
    check_supply_invariant(state)


def apply_block(state: State, block: Block, head: Head, rules: ChainRules,
                is_verified: IsVerified | None = None) -> BlockResult:
    """Validate `block` against `head` and apply it to `state` under `rules`.

    Steps: validate the header against the current and next validator sets;
    validate the last commit against the parent's signers; validate and record
    the evidence; begin the block (economy rules that act before txs); apply
    each tx, where an invalid tx invalidates the block; end the block (economy
    rules, validator sets and proposer priorities move on, the supply invariant);
    derive the results hash and the next app hash from the write set.
    """
    height = block.header.height
    vset = state.get_validator_set()
    validate_header(block, head, rules.chain_id, vset, state.get_next_validator_set())
    validate_last_commit(block, head, rules.chain_id, state)
    validate_block_evidence(rules.chain_id, state, block.evidence, height,
                            rules.evidence_max_age)
    apply_evidence(state, block.evidence, height)
    proposer = find_validator(vset, block.header.proposer)
    ctx = rules.context(height, proposer.operator, block.header.prev_hash)
    begin_block(state, ctx, block.last_commit, block.evidence)
    receipts, hashes = [], []
    for index, stx in enumerate(block.txs):
        h = tx_hash(stx)
        verified = is_verified is not None and is_verified(h)
        try:
            receipts.append(apply_tx(state, stx, ctx, verified))
        except InvalidTransaction as exc:
            raise InvalidBlockTx(index, h, exc) from exc
        hashes.append(h)
    end_block(state, ctx)
    return finish_block(state, head, receipts, hashes)


def finish_block(state: State, head: Head, receipts: list[Receipt],
                 hashes: list[bytes]) -> BlockResult:
    """Seal the outcome of a block's txs into a `BlockResult`."""
    writes = state.write_set()
    return BlockResult(receipts=tuple(receipts), tx_hashes=tuple(hashes), writes=writes,
                       app_hash=next_app_hash(head.app_hash, writes),
                       results_hash=results_root(receipts))


def find_validator(vset: ValidatorSet, address: bytes) -> Validator | None:
    """The validator with this address, or None."""
    for validator in vset.validators:
        if validator.address == address:
            return validator
    return None


def _show(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)

