"""Vote bookkeeping for one height: who voted what, and how much power stands behind it.

Rules (Tendermint, "The latest gossip on BFT consensus", Algorithm 1):
- A validator's FIRST vote for a (height, round, type) is the one that counts;
  a later identical vote is a duplicate, a later different one is a conflict and
  becomes `DuplicateVoteEvidence`, reported once per (validator, height, round, type).
- One exception, for liveness: a conflicting vote for a value that more than 1/3
  of the power already backs with first votes also counts toward THAT value's
  quorum (never toward "any value" totals), at most `MAX_EXTRA_VOTES` such votes
  per validator. An equivocator can thus no longer hide a commit from a node by
  sending it the other vote first (CometBFT reaches the same through peers'
  +2/3 claims). It is safe: it equals an equivocator that sent us only that vote,
  and with under 1/3 byzantine power no two values can both reach a quorum.
- A quorum is more than 2/3 of the total voting power (`has_quorum`); "f+1" is
  more than 1/3 of it (`has_one_third`): at least one honest validator among them.
- Votes are kept per round without wall-clock or arrival-order effects on
  anything read back: listings are sorted by validator address.

The sets assume the engine has already checked each vote's signature and that
its validator belongs to the height's set; they only count.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.records import (
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    CommitSig,
    DuplicateVoteEvidence,
    SignedVote,
    Validator,
    ValidatorSet,
)
from consensus.commit import has_quorum
from consensus.errors import MalformedVote, UnknownValidator

NIL = b""  # the block hash of a nil vote

VOTE_TYPES = (VOTE_PREVOTE, VOTE_PRECOMMIT)
MAX_EXTRA_VOTES = 2  # conflicting votes per validator that may still count (see above)


def has_one_third(power: int, total: int) -> bool:
    """More than one third of `total` ("f+1"): 3·power > total."""
    return 3 * power > total


def canonical_evidence(first: SignedVote, second: SignedVote) -> DuplicateVoteEvidence:
    """Evidence of two conflicting votes, ordered by block hash (nil sorts first)."""
    if first.vote.block_hash < second.vote.block_hash:
        return DuplicateVoteEvidence(vote_a=first, vote_b=second)
    return DuplicateVoteEvidence(vote_a=second, vote_b=first)


@dataclass(frozen=True, slots=True)
class AddResult:
    """What adding one vote did.

    `added`: the vote is the validator's first for its set and now counts.
    `evidence`: set the first time a validator's conflicting vote is seen.
    Neither: a duplicate, or a repeated conflict.
    """

    added: bool
    evidence: DuplicateVoteEvidence | None = None


class VoteSet:
    """The votes of one type for one (height, round), weighed by voting power."""

    def __init__(self, height: int, round_: int, vote_type: int, validators: ValidatorSet,
                 ) -> None:
        self.height = height
        self.round = round_
        self.vote_type = vote_type
        self._power = {v.address: v.power for v in validators.validators}
        self.total = sum(self._power.values())
        self._votes: dict[bytes, SignedVote] = {}
        self._extra: dict[bytes, dict[bytes, SignedVote]] = {}
        self._conflicted: set[bytes] = set()
        self._first_power: dict[bytes, int] = {}
        self._extra_power: dict[bytes, int] = {}
        self.voted_power = 0

    def add(self, signed: SignedVote) -> AddResult:
        """Count `signed` if it is its validator's first vote here; report a conflict once."""
        vote = signed.vote
        self._check_belongs(signed)
        first = self._votes.get(vote.validator)
        if first is None:
            self._votes[vote.validator] = signed
            power = self._power[vote.validator]
            self._first_power[vote.block_hash] = self._first_power.get(vote.block_hash, 0) + power
            self.voted_power += power
            return AddResult(added=True)
        if first.vote.block_hash == vote.block_hash:
            return AddResult(added=False)
        evidence = None
        if vote.validator not in self._conflicted:
            self._conflicted.add(vote.validator)
            evidence = canonical_evidence(first, signed)
        return AddResult(added=self._count_extra(signed), evidence=evidence)

    def _count_extra(self, signed: SignedVote) -> bool:
        """Count a conflicting vote for its value if that value has f+1 first-vote backing."""
        vote = signed.vote
        extra = self._extra.setdefault(vote.validator, {})
        if (vote.block_hash in extra or len(extra) >= MAX_EXTRA_VOTES
                or not has_one_third(self._first_power.get(vote.block_hash, 0), self.total)):
            return False
        extra[vote.block_hash] = signed
        self._extra_power[vote.block_hash] = (self._extra_power.get(vote.block_hash, 0)
                                              + self._power[vote.validator])
        return True

    def _check_belongs(self, signed: SignedVote) -> None:
        """Raise unless the vote is for this set's height, round and type, by a validator."""
        vote = signed.vote
        if (vote.height, vote.round, vote.vote_type) != (self.height, self.round, self.vote_type):
            raise ValueError(
                f"vote ({vote.height}, {vote.round}, {vote.vote_type}) added to the set of "
                f"({self.height}, {self.round}, {self.vote_type})")
        if vote.validator not in self._power:
            raise UnknownValidator(f"{vote.validator.hex()} is not a validator at {self.height}")

    def power_for(self, block_hash: bytes) -> int:
        """Power of the validators with a counted vote for `block_hash` (NIL for nil)."""
        return self._first_power.get(block_hash, 0) + self._extra_power.get(block_hash, 0)

    def has_quorum_for(self, block_hash: bytes) -> bool:
        """More than 2/3 of the power voted for `block_hash`."""
        return has_quorum(self.power_for(block_hash), self.total)

    def has_quorum_any(self) -> bool:
        """More than 2/3 of the power voted, for anything (the paper's "2f+1 of any value")."""
        return has_quorum(self.voted_power, self.total)

    def quorum_hash(self) -> bytes | None:
        """The block hash (NIL included) that more than 2/3 of the power voted for, if any.

        With under 1/3 byzantine power at most one hash can have such a quorum; the
        lowest is returned should more than 1/3 be byzantine.
        """
        for block_hash in sorted(self._first_power.keys() | self._extra_power.keys()):
            if self.has_quorum_for(block_hash):
                return block_hash
        return None

    def get(self, validator: bytes) -> SignedVote | None:
        """The counted vote of `validator`, if any."""
        return self._votes.get(validator)

    def votes(self) -> list[SignedVote]:
        """The counted votes (first votes, then any counted conflicting ones), sorted by
        validator address and block hash."""
        counted = [*self._votes.values(), *(v for e in self._extra.values() for v in e.values())]
        return sorted(counted, key=lambda s: (s.vote.validator, s.vote.block_hash))

    def commit_signatures(self, block_hash: bytes) -> tuple[CommitSig, ...]:
        """The signatures of the counted votes for `block_hash`, sorted by validator address."""
        return tuple(CommitSig(validator=s.vote.validator, signature=s.signature)
                     for s in self.votes() if s.vote.block_hash == block_hash)


class HeightVotes:
    """Every prevote and precommit of one height, by round, and who spoke in each round.

    "Who spoke" also counts proposers (`note_sender`), since the round-skip rule
    (line 55) counts f+1 messages of any kind from distinct validators.
    """

    def __init__(self, height: int, validators: ValidatorSet) -> None:
        self.height = height
        self.validators = validators
        self._by_address: dict[bytes, Validator] = {v.address: v for v in validators.validators}
        self.total = sum(v.power for v in validators.validators)
        self._sets: dict[tuple[int, int], VoteSet] = {}
        self._senders: dict[int, set[bytes]] = {}
        self._sender_power: dict[int, int] = {}

    def validator(self, address: bytes) -> Validator | None:
        """The validator with `address`, if it is in this height's set."""
        return self._by_address.get(address)

    def vote_set(self, round_: int, vote_type: int) -> VoteSet:
        """The (possibly empty) set of `vote_type` votes at `round_`."""
        if vote_type not in VOTE_TYPES:
            raise MalformedVote(f"vote type must be prevote or precommit, got {vote_type}")
        key = (round_, vote_type)
        existing = self._sets.get(key)
        if existing is not None:
            return existing
        created = VoteSet(self.height, round_, vote_type, self.validators)
        self._sets[key] = created
        return created

    def counted_vote(self, round_: int, vote_type: int, validator: bytes) -> SignedVote | None:
        """The first vote of `validator` for (`round_`, `vote_type`), if any (creates no set)."""
        existing = self._sets.get((round_, vote_type))
        return existing.get(validator) if existing is not None else None

    def prevotes(self, round_: int) -> VoteSet:
        """The prevotes of `round_`."""
        return self.vote_set(round_, VOTE_PREVOTE)

    def precommits(self, round_: int) -> VoteSet:
        """The precommits of `round_`."""
        return self.vote_set(round_, VOTE_PRECOMMIT)

    def add(self, signed: SignedVote) -> AddResult:
        """Add a vote to its round's set and note its validator as a sender of that round."""
        vote = signed.vote
        if vote.height != self.height:
            raise ValueError(f"vote for height {vote.height} added to height {self.height}")
        result = self.vote_set(vote.round, vote.vote_type).add(signed)
        self.note_sender(vote.round, vote.validator)
        return result

    def note_sender(self, round_: int, address: bytes) -> None:
        """Record that validator `address` sent some message for `round_`."""
        validator = self._by_address.get(address)
        if validator is None:
            raise UnknownValidator(f"{address.hex()} is not a validator at {self.height}")
        senders = self._senders.setdefault(round_, set())
        if address not in senders:
            senders.add(address)
            self._sender_power[round_] = self._sender_power.get(round_, 0) + validator.power

    def has_round(self, round_: int) -> bool:
        """Some validator has sent a message for `round_`."""
        return round_ in self._senders

    def sender_power(self, round_: int) -> int:
        """Power of the distinct validators that sent any message for `round_`."""
        return self._sender_power.get(round_, 0)

    def rounds(self) -> list[int]:
        """The rounds some validator sent a message for, ascending."""
        return sorted(self._senders)

    def votes_at(self, round_: int) -> list[SignedVote]:
        """Counted prevotes then precommits of `round_`, each sorted by validator address."""
        found = []
        for vote_type in VOTE_TYPES:
            existing = self._sets.get((round_, vote_type))
            if existing is not None:
                found.extend(existing.votes())
        return found
