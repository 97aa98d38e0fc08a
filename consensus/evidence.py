"""Duplicate-vote evidence as a consensus rule, and the pool that feeds it to proposers.

A validator that signs two different votes of one type for one height and
round has equivocated. A block may carry the two signed votes as
`DuplicateVoteEvidence`; every node checks it with `validate_evidence` and
records each offence once, so it can never be committed twice. Slashing and
tombstoning the offender are NOT done here: the token-economy rules will act
on the recorded offence.

Evidence is accepted while it is at most the network's
`params.staking.evidence_max_age_blocks` heights old (less than the unbonding
period, so the stake is still there to slash).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Annotated

from chain.codec import ADDRESS, HASH, U8, U32, U64, Record, decode, encode, record
from chain.hashing import sha256
from chain.records import VOTE_PRECOMMIT, VOTE_PREVOTE, DuplicateVoteEvidence, Validator, Vote
from chain.signing import verify_vote_signature
from chain.state import EVIDENCE_PREFIX, State
from chain.types import Hash32
from consensus.errors import InvalidEvidence
from consensus.params import StakingParams
from consensus.validators import validator_set_at

# The default network's figure (21 days at the default block time); a node passes
# its genesis' `params.staking.evidence_max_age_blocks`.
DEFAULT_MAX_EVIDENCE_AGE = StakingParams().evidence_max_age_blocks
DEFAULT_MAX_PENDING = 10_000


@record
class Offence(Record):
    """What one piece of evidence proves: `validator` equivocated at (height, round, type)."""

    validator: Annotated[bytes, ADDRESS]
    height: Annotated[int, U64]
    round: Annotated[int, U32]
    vote_type: Annotated[int, U8]


OFFENCE_KEY_LEN = 20 + 8 + 4 + 1


@record
class CommittedEvidence(Record):
    """State entry of a committed offence: the block height and the evidence's hash."""

    committed_at: Annotated[int, U64]
    evidence_hash: Annotated[bytes, HASH]


def offence_of(evidence: DuplicateVoteEvidence) -> Offence:
    """The offence evidence claims (taken from its first vote)."""
    vote = evidence.vote_a.vote
    return Offence(validator=vote.validator, height=vote.height, round=vote.round,
                   vote_type=vote.vote_type)


def evidence_hash(evidence: DuplicateVoteEvidence) -> Hash32:
    """SHA-256 of the encoded evidence."""
    return sha256(encode(evidence))


def offence_key(offence: Offence) -> bytes:
    """Fixed-width state key suffix: validator(20) height(8) round(4) type(1).

    Validator first, so one validator's offences sit together in key order.
    """
    return (offence.validator + offence.height.to_bytes(8, "big")
            + offence.round.to_bytes(4, "big") + bytes([offence.vote_type]))


def offence_from_key(key: bytes) -> Offence:
    """The offence an offence key (without the state prefix) names."""
    if len(key) != OFFENCE_KEY_LEN:
        raise ValueError(f"an offence key is {OFFENCE_KEY_LEN} bytes, got {len(key)}")
    return Offence(validator=key[:20], height=int.from_bytes(key[20:28], "big"),
                   round=int.from_bytes(key[28:32], "big"), vote_type=key[32])


# --- the rule --------------------------------------------------------------------


def validate_evidence(chain_id: str, state: State, evidence: DuplicateVoteEvidence,
                      block_height: int, max_age: int) -> None:
    """Raise `InvalidEvidence` unless `evidence` may be included in block `block_height`.

    Rules, in order: both votes name one validator, height, round and a known
    type; their block hashes differ and come in canonical order (vote_a's hash
    sorts first, nil = b"" lowest); the height is below `block_height` and at
    most `max_age` heights older; the offence is not already committed; the
    validator is in the set that signs that height; both signatures verify.
    """
    a, b = evidence.vote_a.vote, evidence.vote_b.vote
    validate_conflict(a, b)
    if a.height >= block_height:
        raise InvalidEvidence(f"evidence height {a.height} is not below block height "
                              f"{block_height}")
    if block_height - a.height > max_age:
        raise InvalidEvidence(f"evidence is too old: height {a.height}, block height "
                              f"{block_height}, max age {max_age}")
    committed = evidence_committed_at(state, offence_of(evidence))
    if committed is not None:
        raise InvalidEvidence(f"offence already committed at height {committed}")
    validator = _validator_at(state, a.validator, a.height)
    for name, signed in (("vote_a", evidence.vote_a), ("vote_b", evidence.vote_b)):
        if not verify_vote_signature(chain_id, signed, validator.public_key):
            raise InvalidEvidence(f"{name} signature does not verify")


def validate_conflict(a: Vote, b: Vote) -> None:
    """Raise `InvalidEvidence` unless `a` and `b` conflict and come in canonical order."""
    same = [("validator", a.validator, b.validator), ("height", a.height, b.height),
            ("round", a.round, b.round), ("vote type", a.vote_type, b.vote_type)]
    for name, x, y in same:
        if x != y:
            raise InvalidEvidence(f"votes differ in {name}: {_show(x)} vs {_show(y)}")
    if a.vote_type not in (VOTE_PREVOTE, VOTE_PRECOMMIT):
        raise InvalidEvidence(f"unknown vote type {a.vote_type}")
    if a.block_hash == b.block_hash:
        raise InvalidEvidence("votes do not conflict: same block hash")
    if a.block_hash > b.block_hash:
        raise InvalidEvidence("votes not in canonical order: vote_a's block hash must sort first")


def _validator_at(state: State, address: bytes, height: int) -> Validator:
    vset = validator_set_at(state, height)
    for validator in () if vset is None else vset.validators:
        if validator.address == address:
            return validator
    raise InvalidEvidence(f"{address.hex()} is not a validator at height {height}")


def validate_block_evidence(chain_id: str, state: State,
                            evidence: tuple[DuplicateVoteEvidence, ...], block_height: int,
                            max_age: int) -> None:
    """Raise `InvalidEvidence` (naming the index) unless every piece is valid and new.

    A block may prove each offence only once.
    """
    seen: set[Offence] = set()
    for index, piece in enumerate(evidence):
        offence = offence_of(piece)
        if offence in seen:
            raise InvalidEvidence("duplicate evidence of one offence in the block", index)
        seen.add(offence)
        try:
            validate_evidence(chain_id, state, piece, block_height, max_age)
        except InvalidEvidence as exc:
            raise InvalidEvidence(exc.reason, index) from exc


# --- state ---------------------------------------------------------------------------


def record_evidence(state: State, evidence: DuplicateVoteEvidence, height: int) -> None:
    """Record that block `height` committed `evidence` (slashing acts on it elsewhere)."""
    state.put(EVIDENCE_PREFIX + offence_key(offence_of(evidence)),
              CommittedEvidence(committed_at=height, evidence_hash=evidence_hash(evidence)))


def get_committed_evidence(state: State, offence: Offence) -> CommittedEvidence | None:
    """The committed-evidence entry of `offence`, or None."""
    return state.get(EVIDENCE_PREFIX + offence_key(offence), CommittedEvidence)


def evidence_committed_at(state: State, offence: Offence) -> int | None:
    """The height of the block that committed evidence of `offence`, or None."""
    entry = get_committed_evidence(state, offence)
    return None if entry is None else entry.committed_at


ScanState = Callable[[bytes], Iterator[tuple[bytes, bytes]]]


def committed_evidence(scan: ScanState, validator: bytes | None = None
                       ) -> list[tuple[Offence, CommittedEvidence]]:
    """Committed offences (of `validator`, or all), ordered by validator, height, round, type.

    `scan(prefix)` yields committed (state key, value) pairs under a prefix in key
    order, e.g. `BlockStore.iter_state`. The evidence itself is in the block at
    `committed_at`, found by its hash.
    """
    prefix = EVIDENCE_PREFIX + (validator or b"")
    return [(offence_from_key(key[len(EVIDENCE_PREFIX):]), decode(CommittedEvidence, raw))
            for key, raw in scan(prefix)]


# --- the pool ---------------------------------------------------------------------------


def _order(offence: Offence) -> tuple[int, bytes, int, int]:
    return (offence.height, offence.validator, offence.round, offence.vote_type)


class EvidencePool:
    """Valid evidence waiting for a block, one piece per offence (in memory only).

    The node adds what its engine or peers report, proposes `pending(...)`, and
    after each commit marks the included pieces and prunes the expired ones.
    At most `max_pending` pieces wait; more are refused until some leave.
    """

    def __init__(self, chain_id: str, max_age: int = DEFAULT_MAX_EVIDENCE_AGE,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.chain_id = chain_id
        self.max_age = max_age
        self.max_pending = max_pending
        self._pending: dict[Offence, DuplicateVoteEvidence] = {}
        self._committed: set[Offence] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, state: State, evidence: DuplicateVoteEvidence, head_height: int) -> bool:
        """Validate and keep `evidence`; False if its offence is known or the pool is full.

        `state` is the committed state at `head_height`. Evidence of the height in
        progress (head + 1) is checked for the block after it, the first that may
        include it. Raises `InvalidEvidence` for invalid evidence.
        """
        offence = offence_of(evidence)
        if offence in self._pending or offence in self._committed:
            return False
        block_height = head_height + (2 if offence.height > head_height else 1)
        validate_evidence(self.chain_id, state, evidence, block_height, self.max_age)
        if len(self._pending) >= self.max_pending:
            return False
        self._pending[offence] = evidence
        return True

    def pending(self, max_n: int, block_height: int) -> tuple[DuplicateVoteEvidence, ...]:
        """Up to `max_n` pieces a block at `block_height` may include, by (height, validator,
        round, type)."""
        ready = sorted((o for o in self._pending
                        if o.height < block_height and block_height - o.height <= self.max_age),
                       key=_order)
        return tuple(self._pending[o] for o in ready[:max_n])

    def mark_committed(self, evidence: Iterable[DuplicateVoteEvidence]) -> None:
        """Forget pieces a block committed, and refuse their offences from now on."""
        for piece in evidence:
            offence = offence_of(piece)
            self._pending.pop(offence, None)
            self._committed.add(offence)

    def prune(self, block_height: int) -> None:
        """Drop what is too old for a block at `block_height` (pending and remembered)."""
        def expired(o: Offence) -> bool:
            return block_height - o.height > self.max_age

        for offence in [o for o in self._pending if expired(o)]:
            del self._pending[offence]
        self._committed = {o for o in self._committed if not expired(o)}


def _show(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)
