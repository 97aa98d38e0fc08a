"""Typed records of the protocol: transactions, blocks, votes, commits, receipts,
and the state entries they change. Every record is a frozen dataclass encoded by
`chain.codec`; ids are SHA-256 of the canonical encoding.
"""

from __future__ import annotations

from typing import Annotated

import msgpack

from chain.codec import (
    ADDRESS,
    HASH,
    OPT_HASH,
    PUBKEY,
    SIGNATURE,
    U8,
    U32,
    U64,
    Bytes,
    ListOf,
    OneOf,
    Record,
    encode,
    record,
)
from chain.hashing import merkle_root, sha256
from chain.types import Hash32

_array_header = msgpack.Packer().pack_array_header

CHAIN_ID = Bytes(1, 64)
DENOM_GPU = 0
DENOM_STABLE = 1
DENOMS = {DENOM_GPU: "gpu", DENOM_STABLE: "stable"}

MAX_BLOCK_TXS = 100_000
MAX_VALIDATORS = 10_000
MAX_EVIDENCE = 1_000
MAX_REASON_LEN = 256

VOTE_PREVOTE = 1
VOTE_PRECOMMIT = 2

RECEIPT_OK = 0
RECEIPT_FAILED = 1


# --- transactions -------------------------------------------------------------


@record
class Transfer(Record):
    """Move `amount` base units of `denom` (GPU or the stable unit) to `to`."""

    to: Annotated[bytes, ADDRESS]
    amount: Annotated[int, U64]
    denom: Annotated[int, U8]


KEEP_U32 = 2**32 - 1  # EditValidator: leave this field as it is
KEEP_U8 = 255
QUEEN_OUT, QUEEN_IN = 0, 1  # a validator's opt-in to the queen committee


@record
class LicenceTransfer(Record):
    """Move `count` node licences held by the sender (not bound to a validator) to `to`."""

    to: Annotated[bytes, ADDRESS]
    count: Annotated[int, U32]


@record
class CreateValidator(Record):
    """The sender becomes the operator of a new validator signing with `public_key`.

    `self_stake` GPU moves from the sender's spendable balance into the validator's
    bonded stake (at least `staking.min_validator_stake`); `commission_bps` of the
    validator's rewards go to the operator; `queen` is QUEEN_IN to opt in.
    """

    public_key: Annotated[bytes, PUBKEY]
    commission_bps: Annotated[int, U32]
    self_stake: Annotated[int, U64]
    queen: Annotated[int, U8]


@record
class EditValidator(Record):
    """The operator changes its validator; KEEP_U32 / KEEP_U8 leave a field unchanged.

    `bound_licences` is the number of the operator's node licences bound to the
    validator (binding moves them out of the operator's account, unbinding back).
    """

    validator: Annotated[bytes, ADDRESS]
    commission_bps: Annotated[int, U32]
    queen: Annotated[int, U8]
    bound_licences: Annotated[int, U32]


@record
class Delegate(Record):
    """Bond `amount` spendable GPU of the sender to `validator`."""

    validator: Annotated[bytes, ADDRESS]
    amount: Annotated[int, U64]


@record
class Undelegate(Record):
    """Start unbonding `amount` GPU of the sender's stake with `validator`."""

    validator: Annotated[bytes, ADDRESS]
    amount: Annotated[int, U64]


@record
class Redelegate(Record):
    """Move `amount` GPU of the sender's stake from `source` to `target` at once."""

    source: Annotated[bytes, ADDRESS]
    target: Annotated[bytes, ADDRESS]
    amount: Annotated[int, U64]


@record
class WithdrawRewards(Record):
    """Withdraw the sender's rewards from `validator` (delegation, and commission if operator)."""

    validator: Annotated[bytes, ADDRESS]


@record
class Unjail(Record):
    """The operator returns its jailed validator to the candidates after the jail time."""

    validator: Annotated[bytes, ADDRESS]


@record
class Swap(Record):
    """Swap `amount_in` of `denom_in` for the other side of the GPU/stable pool."""

    denom_in: Annotated[int, U8]
    amount_in: Annotated[int, U64]
    min_out: Annotated[int, U64]


@record
class AddLiquidity(Record):
    """Deposit up to `gpu` and `stable` into the pool for at least `min_shares` LP shares."""

    gpu: Annotated[int, U64]
    stable: Annotated[int, U64]
    min_shares: Annotated[int, U64]


@record
class RemoveLiquidity(Record):
    """Redeem `shares` LP shares for at least `min_gpu` and `min_stable`."""

    shares: Annotated[int, U64]
    min_gpu: Annotated[int, U64]
    min_stable: Annotated[int, U64]


@record
class IssueStable(Record):
    """The genesis stable issuer mints `amount` stable units to `to` (fiat/USDT rails in)."""

    to: Annotated[bytes, ADDRESS]
    amount: Annotated[int, U64]


@record
class PayRevenue(Record):
    """Pay `amount` stable units of GPU-rental revenue to the buyback treasury."""

    amount: Annotated[int, U64]


MAX_KERNEL_PARAMS = 16
MAX_REVEALED_TILES = 256
MAX_TILE_BYTES = 16 * 1024
MAX_PROOF_HASHES = 20  # a Merkle proof over at most 2^20 tiles
VERDICT_FAIL, VERDICT_PASS = 0, 1


@record
class RegisterProvider(Record):
    """The sender becomes a GPU provider: `collateral` GPU posted, `licences` node licences
    bound, and a description of its GPU (free text, e.g. "1x H200")."""

    collateral: Annotated[int, U64]
    licences: Annotated[int, U32]
    gpu: Annotated[bytes, Bytes(0, 64)]


@record
class DeregisterProvider(Record):
    """The sender stops taking jobs; its collateral and licences return after the unbonding
    period, once its open jobs are settled. `provider` must be the sender's address."""

    provider: Annotated[bytes, ADDRESS]


@record
class SubmitJob(Record):
    """Run `kernel` with `params` (in the kernel's schema order) on inputs drawn from `seed`;
    `price` stable units are escrowed and the result is due by height `deadline`."""

    kernel: Annotated[bytes, Bytes(1, 32)]
    params: Annotated[tuple[int, ...], ListOf(U64, MAX_KERNEL_PARAMS)]
    seed: Annotated[bytes, HASH]
    price: Annotated[int, U64]
    deadline: Annotated[int, U64]


@record
class CommitResult(Record):
    """The assigned provider commits job `job`'s output: a Merkle root over `tiles` tiles."""

    job: Annotated[int, U64]
    root: Annotated[bytes, HASH]
    tiles: Annotated[int, U32]


@record
class RevealedTile(Record):
    """One sampled output tile and its Merkle inclusion proof (sibling hashes, bottom-up)."""

    index: Annotated[int, U32]
    data: Annotated[bytes, Bytes(0, MAX_TILE_BYTES)]
    proof: Annotated[tuple[bytes, ...], ListOf(HASH, MAX_PROOF_HASHES)]


@record
class RevealTiles(Record):
    """The provider reveals every tile the chain sampled for `job`."""

    job: Annotated[int, U64]
    tiles: Annotated[tuple[RevealedTile, ...], ListOf(RevealedTile, MAX_REVEALED_TILES)]


@record
class Attest(Record):
    """A verification-committee member's verdict on `job` after re-executing its sampled
    tiles: VERDICT_PASS or VERDICT_FAIL. Sent by the validator's key or its operator."""

    job: Annotated[int, U64]
    validator: Annotated[bytes, ADDRESS]
    verdict: Annotated[int, U8]


TX_BODIES = OneOf((
    (1, Transfer), (2, LicenceTransfer), (3, CreateValidator), (4, EditValidator),
    (5, Delegate), (6, Undelegate), (7, Redelegate), (8, WithdrawRewards), (9, Unjail),
    (10, Swap), (11, AddLiquidity), (12, RemoveLiquidity), (13, IssueStable),
    (14, PayRevenue), (15, RegisterProvider), (16, DeregisterProvider), (17, SubmitJob),
    (18, CommitResult), (19, RevealTiles), (20, Attest),
))
TxBody = (Transfer | LicenceTransfer | CreateValidator | EditValidator | Delegate | Undelegate
          | Redelegate | WithdrawRewards | Unjail | Swap | AddLiquidity | RemoveLiquidity
          | IssueStable | PayRevenue | RegisterProvider | DeregisterProvider | SubmitJob
          | CommitResult | RevealTiles | Attest)


@record
class Tx(Record):
    """An unsigned transaction: who sends, in which order, for what fee, doing what."""

    TYPE_TAG = b"tx"
    chain_id: Annotated[bytes, CHAIN_ID]
    sender: Annotated[bytes, PUBKEY]
    nonce: Annotated[int, U64]
    fee: Annotated[int, U64]
    body: Annotated[TxBody, TX_BODIES]


@record
class SignedTx(Record):
    """A transaction with the sender's Ed25519 signature over its signing bytes."""

    tx: Tx
    signature: Annotated[bytes, SIGNATURE]


@record
class Receipt(Record):
    """What applying a tx did: status, an error code and reason when it failed, fee paid."""

    status: Annotated[int, U8]
    code: Annotated[int, U32]
    reason: Annotated[bytes, Bytes(0, MAX_REASON_LEN)]
    fee_paid: Annotated[int, U64]


@record
class TxLocation(Record):
    """Where an included tx lives (height, position) and its receipt: the tx index entry."""

    height: Annotated[int, U64]
    index: Annotated[int, U32]
    receipt: Receipt


# --- votes, commits, evidence -------------------------------------------------


@record
class Vote(Record):
    """A validator's prevote or precommit for a block hash (empty hash = nil)."""

    TYPE_TAG = b"vote"
    vote_type: Annotated[int, U8]
    height: Annotated[int, U64]
    round: Annotated[int, U32]
    block_hash: Annotated[bytes, OPT_HASH]
    validator: Annotated[bytes, ADDRESS]


@record
class SignedVote(Record):
    """A vote with the validator's signature over its signing bytes."""

    vote: Vote
    signature: Annotated[bytes, SIGNATURE]


@record
class CommitSig(Record):
    """One validator's precommit signature for the committed block."""

    validator: Annotated[bytes, ADDRESS]
    signature: Annotated[bytes, SIGNATURE]


@record
class Commit(Record):
    """+2/3 of voting power precommitted `block_hash` at (height, round)."""

    height: Annotated[int, U64]
    round: Annotated[int, U32]
    block_hash: Annotated[bytes, OPT_HASH]
    signatures: Annotated[tuple[CommitSig, ...], ListOf(CommitSig, MAX_VALIDATORS)]


@record
class DuplicateVoteEvidence(Record):
    """Two conflicting signed votes by one validator for one height, round and type."""

    vote_a: SignedVote
    vote_b: SignedVote


STEP_PROPOSE = 1
STEP_PREVOTE = 2
STEP_PRECOMMIT = 3
NO_POL_ROUND = 2**32 - 1  # a proposal's pol_round when it carries no earlier polka (-1)


@record
class Proposal(Record):
    """The round's proposer offers `block_hash`; `pol_round` is the round of its polka.

    `pol_round` is NO_POL_ROUND for a fresh block (the paper's -1), else the earlier
    round in which +2/3 prevoted this block (the proposer's valid round).
    """

    TYPE_TAG = b"proposal"
    height: Annotated[int, U64]
    round: Annotated[int, U32]
    pol_round: Annotated[int, U32]
    block_hash: Annotated[bytes, HASH]
    proposer: Annotated[bytes, ADDRESS]


@record
class SignedProposal(Record):
    """A proposal with the proposer's signature over its signing bytes."""

    proposal: Proposal
    signature: Annotated[bytes, SIGNATURE]


# --- blocks -------------------------------------------------------------------


@record
class Header(Record):
    """A block header; its hash is the block id.

    `app_hash` and `results_hash` describe the state after the PREVIOUS block, so a
    proposer can build a header before executing its own transactions.
    """

    TYPE_TAG = b"header"
    version: Annotated[int, U32]
    chain_id: Annotated[bytes, CHAIN_ID]
    height: Annotated[int, U64]
    time_ms: Annotated[int, U64]
    prev_hash: Annotated[bytes, HASH]
    last_commit_hash: Annotated[bytes, HASH]
    tx_root: Annotated[bytes, HASH]
    app_hash: Annotated[bytes, HASH]
    results_hash: Annotated[bytes, HASH]
    validators_hash: Annotated[bytes, HASH]
    next_validators_hash: Annotated[bytes, HASH]
    evidence_hash: Annotated[bytes, HASH]
    proposer: Annotated[bytes, ADDRESS]


@record
class Block(Record):
    """A header, its transactions and evidence, and the commit of the previous block."""

    header: Header
    txs: Annotated[tuple[SignedTx, ...], ListOf(SignedTx, MAX_BLOCK_TXS)]
    evidence: Annotated[
        tuple[DuplicateVoteEvidence, ...], ListOf(DuplicateVoteEvidence, MAX_EVIDENCE)
    ]
    last_commit: Commit


# --- state entries ------------------------------------------------------------


@record
class Lock(Record):
    """`amount` GPU base units that cannot move before `release_height`."""

    amount: Annotated[int, U64]
    release_height: Annotated[int, U64]


@record
class Account(Record):
    """An account: GPU and stable-unit balances, next nonce, locks, node licences."""

    gpu: Annotated[int, U64]
    stable: Annotated[int, U64]
    nonce: Annotated[int, U64]
    licences: Annotated[int, U32]
    locks: Annotated[tuple[Lock, ...], ListOf(Lock, 256)]


EMPTY_ACCOUNT = Account(gpu=0, stable=0, nonce=0, licences=0, locks=())


@record
class Validator(Record):
    """A validator: consensus key and its address, voting power, operator account."""

    address: Annotated[bytes, ADDRESS]
    public_key: Annotated[bytes, PUBKEY]
    power: Annotated[int, U64]
    operator: Annotated[bytes, ADDRESS]


@record
class ValidatorSet(Record):
    """The validators of a height, sorted by address."""

    validators: Annotated[tuple[Validator, ...], ListOf(Validator, MAX_VALIDATORS)]


ACC = Bytes(32, 32)  # an unsigned 256-bit fixed-point accumulator, big-endian


@record
class StakingValidator(Record):
    """A validator's staking record (state key "sv" + address).

    `tokens` GPU are bonded to it, owned by delegators in proportion to their
    `shares` of `shares` (slashing lowers tokens, not shares). Rewards for
    delegators accumulate per share in `reward_acc` (REWARD_ACC_SCALE fixed
    point); `operator_rewards` holds commission and provider income for the
    operator. `bound_licences` of the operator's node licences count for it.
    `jailed_until` is the first height an Unjail may succeed; a tombstoned
    validator never returns.
    """

    address: Annotated[bytes, ADDRESS]
    public_key: Annotated[bytes, PUBKEY]
    operator: Annotated[bytes, ADDRESS]
    commission_bps: Annotated[int, U32]
    tokens: Annotated[int, U64]
    shares: Annotated[int, U64]
    queen: Annotated[int, U8]
    bound_licences: Annotated[int, U32]
    jailed: Annotated[int, U8]
    tombstoned: Annotated[int, U8]
    jailed_until: Annotated[int, U64]
    reward_acc: Annotated[bytes, ACC]
    operator_rewards: Annotated[int, U64]
    created_height: Annotated[int, U64]


@record
class Delegation(Record):
    """A delegator's shares of a validator (state key "sd" + delegator + validator).

    `reward_acc` is the validator's accumulator when the delegation's rewards
    were last settled: pending = shares * (acc - reward_acc) // REWARD_ACC_SCALE.
    """

    shares: Annotated[int, U64]
    reward_acc: Annotated[bytes, ACC]


MAX_QUEUE_ENTRIES = 4096


@record
class UnbondingEntry(Record):
    """Stake leaving `validator` for `delegator`: `balance` GPU paid out at `completion_height`.

    `initial_balance` is what left; `balance` is what remains after slashing.
    """

    delegator: Annotated[bytes, ADDRESS]
    creation_height: Annotated[int, U64]
    completion_height: Annotated[int, U64]
    initial_balance: Annotated[int, U64]
    balance: Annotated[int, U64]


@record
class UnbondingQueue(Record):
    """A validator's unbonding entries (state key "su" + validator), oldest first."""

    entries: Annotated[tuple[UnbondingEntry, ...], ListOf(UnbondingEntry, MAX_QUEUE_ENTRIES)]


@record
class RedelegationEntry(Record):
    """Stake moved from a source validator to `target` at `creation_height`.

    Until `completion_height` an offence of the source committed before the move
    still slashes it: `shares` of the delegator's delegation to `target` came
    from it, worth `initial_balance` GPU when moved.
    """

    delegator: Annotated[bytes, ADDRESS]
    target: Annotated[bytes, ADDRESS]
    creation_height: Annotated[int, U64]
    completion_height: Annotated[int, U64]
    initial_balance: Annotated[int, U64]
    shares: Annotated[int, U64]


@record
class RedelegationQueue(Record):
    """A source validator's live redelegations (state key "sr" + source), oldest first."""

    entries: Annotated[tuple[RedelegationEntry, ...],
                       ListOf(RedelegationEntry, MAX_QUEUE_ENTRIES)]


@record
class StakingTotals(Record):
    """GPU bonded to validators and GPU unbonding (state key "st")."""

    bonded: Annotated[int, U64]
    unbonding: Annotated[int, U64]


@record
class ValidatorIndex(Record):
    """Every validator with a staking record, sorted by address (state key "si")."""

    addresses: Annotated[tuple[bytes, ...], ListOf(ADDRESS, MAX_VALIDATORS)]


REWARD_ACC_SCALE = 2**64


def acc_to_int(acc: bytes) -> int:
    """The integer value of a 256-bit accumulator."""
    return int.from_bytes(acc, "big")


def int_to_acc(value: int) -> bytes:
    """A 256-bit accumulator holding `value` (0 <= value < 2^256)."""
    return value.to_bytes(32, "big")


ZERO_ACC = bytes(32)


# --- ids ----------------------------------------------------------------------


def tx_hash(stx: SignedTx) -> Hash32:
    """Tx id: SHA-256 of the encoded signed tx."""
    return sha256(encode(stx))


def block_hash(block: Block) -> Hash32:
    """Block id: SHA-256 of the encoded header."""
    return header_hash(block.header)


def header_hash(header: Header) -> Hash32:
    """SHA-256 of the encoded header."""
    return sha256(encode(header))


def tx_root(txs: tuple[SignedTx, ...]) -> Hash32:
    """Merkle root over the encoded txs of a block."""
    return merkle_root([encode(stx) for stx in txs])


def encode_block(block: Block, tx_raws: tuple[bytes, ...]) -> bytes:
    """`encode(block)`, reusing the txs' canonical encodings instead of redoing them.

    `tx_raws[i]` must be `encode(block.txs[i])` (the mempool keeps exactly that).
    """
    if len(tx_raws) != len(block.txs):
        raise ValueError(f"{len(tx_raws)} encodings for {len(block.txs)} txs")
    return b"".join((
        _array_header(4), encode(block.header), _array_header(len(tx_raws)), *tx_raws,
        _array_header(len(block.evidence)), *(encode(e) for e in block.evidence),
        encode(block.last_commit),
    ))


def results_root(receipts: list[Receipt]) -> Hash32:
    """Merkle root over the encoded receipts of a block."""
    return merkle_root([encode(r) for r in receipts])


def evidence_root(evidence: tuple[DuplicateVoteEvidence, ...]) -> Hash32:
    """Merkle root over the encoded evidence of a block."""
    return merkle_root([encode(e) for e in evidence])


def commit_hash(commit: Commit) -> Hash32:
    """SHA-256 of the encoded commit."""
    return sha256(encode(commit))


def validator_set_hash(vset: ValidatorSet) -> Hash32:
    """SHA-256 of the encoded validator set."""
    return sha256(encode(vset))
