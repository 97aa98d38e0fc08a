"""The Tendermint BFT engine: Algorithm 1 of "The latest gossip on BFT consensus"
(Buchman, Kwon, Milosevic 2018) as a deterministic state machine.

Inputs are proposals, votes and timeouts; each call returns the outputs it caused
(messages to broadcast, timeouts to schedule, a decision, evidence). The engine
does no I/O and reads no clock: given the same inputs, the same application
answers and the same signer, it returns the same outputs, so a write-ahead log
of its inputs replays it exactly.

Line numbers in comments refer to Algorithm 1 of the paper. Deviations:
- Line 49 decides on a block known by hash from any valid proposal of the
  height, not only the proposal of the deciding round (the hash fixes the block);
  a proposer's second, conflicting proposal for a round is kept for that purpose
  only when f+1 of the power precommitted its block.
- A conflicting vote may count toward its own value's quorum (`consensus.votes`).
- After a decision the engine stays at its height (`decided`) until the driver
  calls `start_height` for the next one; it keeps counting votes meanwhile.
- Each validator may open at most MAX_CATCHUP_ROUNDS rounds beyond the next one,
  and the next height's messages are buffered up to fixed bounds (memory).

Our own proposal and votes are counted as soon as we sign them; a signer that
refuses (`DoubleSignRefused`, e.g. on a WAL replay) makes us send nothing for
that step, and the step still moves on as if we had sent it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from chain.records import (
    NO_POL_ROUND,
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    STEP_PROPOSE,
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Block,
    Commit,
    DuplicateVoteEvidence,
    Proposal,
    SignedProposal,
    SignedVote,
    ValidatorSet,
    Vote,
    block_hash,
)
from chain.signing import verify_proposal_signature, verify_vote_signature
from consensus.errors import (
    BadMessageSignature,
    DoubleSignRefused,
    InvalidMessage,
    MalformedProposal,
    MalformedVote,
    UnknownValidator,
    WrongProposer,
)
from consensus.votes import NIL, VOTE_TYPES, HeightVotes, has_one_third

log = logging.getLogger("gannet.consensus")

MAX_BUFFERED_VOTES = 10_000  # votes held for the next height before it starts
MAX_BUFFERED_PROPOSALS = 64  # proposals (with their blocks) held for the next height
MAX_CATCHUP_ROUNDS = 2  # rounds beyond round+1 each validator may open (cometbft's catchup)
NO_ROUND = -1  # the paper's -1: no locked or valid round

STEP_NAMES = {STEP_PROPOSE: "propose", STEP_PREVOTE: "prevote", STEP_PRECOMMIT: "precommit"}


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Step timeouts: each round waits `base + delta * round` ms (they grow until GST)."""

    propose_ms: int = 1000
    propose_delta_ms: int = 500
    prevote_ms: int = 500
    prevote_delta_ms: int = 250
    precommit_ms: int = 500
    precommit_delta_ms: int = 250

    def duration_ms(self, step: int, round_: int) -> int:
        """How long the `step` timeout of round `round_` lasts."""
        if step == STEP_PROPOSE:
            return self.propose_ms + self.propose_delta_ms * round_
        if step == STEP_PREVOTE:
            return self.prevote_ms + self.prevote_delta_ms * round_
        if step == STEP_PRECOMMIT:
            return self.precommit_ms + self.precommit_delta_ms * round_
        raise ValueError(f"no timeout for step {step}")


@dataclass(frozen=True, slots=True)
class Timeout:
    """A timeout of one step of one round of one height."""

    height: int
    round: int
    step: int


@dataclass(frozen=True, slots=True)
class BroadcastProposal:
    """Send our signed proposal and its block to every peer."""

    proposal: SignedProposal
    block: Block


@dataclass(frozen=True, slots=True)
class BroadcastVote:
    """Send our signed vote to every peer."""

    vote: SignedVote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Call `on_timeout(timeout)` after `duration_ms`."""

    timeout: Timeout
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Decide:
    """`block` is final; `commit` holds the +2/3 precommits that finalised it."""

    block: Block
    commit: Commit


@dataclass(frozen=True, slots=True)
class FoundEvidence:
    """A validator signed two conflicting votes (votes in canonical order)."""

    evidence: DuplicateVoteEvidence


Output = BroadcastProposal | BroadcastVote | ScheduleTimeout | Decide | FoundEvidence

Message = SignedVote | tuple[SignedProposal, Block]

T = TypeVar("T")
S = TypeVar("S")


class Application(Protocol):
    """The block source and judge the engine consults."""

    def propose_block(self, height: int, round_: int) -> Block:
        """A fresh block for `height` (we are the proposer and hold no valid value)."""
        ...

    def validate_block(self, block: Block) -> bool:
        """True iff `block` is fully valid on top of the current head."""
        ...


class Signer(Protocol):
    """Our validator key, behind a guard against double signing."""

    address: bytes

    def sign_vote(self, vote: Vote) -> SignedVote:
        """`vote` signed, or DoubleSignRefused."""
        ...

    def sign_proposal(self, proposal: Proposal) -> SignedProposal:
        """`proposal` signed, or DoubleSignRefused."""
        ...


class Engine:
    """One node's Tendermint state for the current height (the paper's process p).

    Validation: a message for the current height that no honest validator could
    have sent raises `InvalidMessage`; messages for past heights and heights beyond
    the next are ignored; messages for the next height are buffered (bounded) and
    replayed by `start_height`.
    """

    def __init__(self, chain_id: str, app: Application, signer: Signer | None,
                 timeouts: TimeoutConfig) -> None:
        self.chain_id = chain_id
        self.app = app
        self.signer = signer
        self.timeouts = timeouts
        self.height = 0
        self.round = 0
        self.step = STEP_PROPOSE
        self.decided = False
        self.locked_round = NO_ROUND
        self.valid_round = NO_ROUND
        self._started = False
        self._votes = HeightVotes(0, ValidatorSet(validators=()))
        self._proposer_of: Callable[[int], bytes] = _no_proposer
        self._reset_height_state()
        self._buffer: list[Message] = []
        self._buffered_keys: set[SignedVote | SignedProposal] = set()
        self._buffered_proposals = 0

    def _reset_height_state(self) -> None:
        """Forget everything about the previous height (locks, proposals, votes)."""
        self.round, self.step, self.decided = 0, STEP_PROPOSE, False
        self.locked_round, self.valid_round = NO_ROUND, NO_ROUND
        self._locked_hash: bytes | None = None
        self._valid_value: Block | None = None
        self._proposals: dict[int, tuple[SignedProposal, Block]] = {}
        self._blocks: dict[bytes, Block] = {}
        self._validity: dict[bytes, bool] = {}
        self._catchup: dict[bytes, int] = {}
        self._polka_done = self._prevote_timer_set = self._precommit_timer_set = False

    # --- inputs -----------------------------------------------------------------

    def start_height(self, height: int, validators: ValidatorSet,
                     proposer_of: Callable[[int], bytes]) -> list[Output]:
        """Enter `height` at round 0 with its validator set, then replay buffered messages.

        `proposer_of(round)` names each round's proposer. It is asked at every round
        start and for every validly signed proposal of an admitted round, so it
        should be cheap for any round (memoise the weighted round robin).
        """
        if self._started and height <= self.height:
            raise ValueError(f"start_height({height}) at height {self.height}: heights only grow")
        if sum(v.power for v in validators.validators) <= 0:
            raise ValueError(f"height {height} has no voting power")
        buffered = self._take_buffer(height)
        self.height, self._started = height, True
        self._reset_height_state()
        self._votes = HeightVotes(height, validators)
        self._proposer_of = proposer_of
        out = self._start_round(0)
        out.extend(self._advance())
        for message in buffered:
            out.extend(self._replay(message))
        return out

    def on_proposal(self, signed: SignedProposal, block: Block) -> list[Output]:
        """Take in a proposal and its block; raise `InvalidMessage` if no honest node sends it."""
        proposal = signed.proposal
        if not self._is_current(proposal.height):
            self._buffer_message(proposal.height, (signed, block))
            return []
        self._check_proposal_shape(proposal, block)
        if self._votes.validator(proposal.proposer) is None:
            raise UnknownValidator(f"proposer {proposal.proposer.hex()} is not a validator")
        if not self._admits_round(proposal.round, proposal.proposer):
            return []
        held = self._proposals.get(proposal.round)
        if held is not None and held[0] == signed:
            return []  # the very proposal we hold
        self._check_proposal_signature(signed)
        expected = self._proposer_of(proposal.round)
        if proposal.proposer != expected:
            raise WrongProposer(f"round {proposal.round} proposer: expected {expected.hex()}, "
                                f"got {proposal.proposer.hex()}")
        if held is not None:
            return self._on_second_proposal(signed, block)
        self._store_proposal(signed, block)
        return self._advance()

    def _on_second_proposal(self, signed: SignedProposal, block: Block) -> list[Output]:
        """A proposer that equivocates keeps its first proposal for the round's rules.

        The other block is still remembered when f+1 of the power precommitted it
        in some round (an honest validator saw it valid and polka'd), so a commit
        for it can be decided (line 49) by a node that first saw the other one.
        """
        key = signed.proposal.block_hash
        if key in self._blocks or not self._has_precommit_support(key):
            return []
        log.info("height %d round %d: proposer %s equivocated; keeping block %s for a commit",
                 self.height, signed.proposal.round, signed.proposal.proposer.hex(), key.hex())
        self._blocks[key] = block
        return self._advance()

    def _has_precommit_support(self, key: bytes) -> bool:
        """f+1 of the power precommitted `key` in some round of this height."""
        return any(has_one_third(self._votes.precommits(r).power_for(key), self._votes.total)
                   for r in self._votes.rounds())

    def on_vote(self, signed: SignedVote) -> list[Output]:
        """Take in a prevote or precommit; raise `InvalidMessage` if no honest node sends it."""
        vote = signed.vote
        if not self._is_current(vote.height):
            self._buffer_message(vote.height, signed)
            return []
        if vote.vote_type not in VOTE_TYPES:
            raise MalformedVote(f"vote type must be prevote or precommit, got {vote.vote_type}")
        validator = self._votes.validator(vote.validator)
        if validator is None:
            raise UnknownValidator(f"voter {vote.validator.hex()} is not a validator")
        if not self._admits_round(vote.round, vote.validator):
            return []
        if self._votes.counted_vote(vote.round, vote.vote_type, vote.validator) == signed:
            return []  # the very vote we count already: no need to verify it again
        if not verify_vote_signature(self.chain_id, signed, validator.public_key):
            raise BadMessageSignature(f"vote of {vote.validator.hex()} at height {vote.height} "
                                      f"round {vote.round} does not verify")
        return self._take_vote(signed)

    def on_timeout(self, timeout: Timeout) -> list[Output]:
        """Lines 57-65: a timeout of the current round moves the step on; others are stale."""
        current = (timeout.height, timeout.round) == (self.height, self.round)
        if not self._started or self.decided or not current:
            return []
        if timeout.step == STEP_PROPOSE and self.step == STEP_PROPOSE:
            self.step = STEP_PREVOTE  # line 57
            out = self._cast(VOTE_PREVOTE, NIL)
        elif timeout.step == STEP_PREVOTE and self.step == STEP_PREVOTE:
            self.step = STEP_PRECOMMIT  # line 61
            out = self._cast(VOTE_PRECOMMIT, NIL)
        elif timeout.step == STEP_PRECOMMIT and self._precommit_timer_set:
            out = self._start_round(self.round + 1)  # line 65
        else:
            return []
        out.extend(self._advance())
        return out

    # --- read-only views ----------------------------------------------------------

    def votes_at(self, round_: int) -> list[SignedVote]:
        """Counted prevotes then precommits of `round_` at this height, by validator address."""
        return self._votes.votes_at(round_)

    def current_proposal(self) -> tuple[SignedProposal, Block] | None:
        """The proposal (and block) we hold for the current round, if any."""
        return self._proposals.get(self.round)

    def round_state(self) -> dict:
        """A JSON-friendly summary of where this node stands in the height."""
        held = self._proposals.get(self.round)
        return {
            "height": self.height,
            "round": self.round,
            "step": self.step,
            "step_name": STEP_NAMES[self.step],
            "decided": self.decided,
            "locked_round": self.locked_round,
            "valid_round": self.valid_round,
            "proposal": held[0].proposal.block_hash.hex() if held is not None else None,
            "total_power": self._votes.total,
            "rounds": [{"round": r,
                        "prevote_power": self._votes.prevotes(r).voted_power,
                        "precommit_power": self._votes.precommits(r).voted_power}
                       for r in self._votes.rounds()],
        }

    # --- message checks -------------------------------------------------------------

    def _is_current(self, height: int) -> bool:
        """Messages of the height we are in are processed; others are buffered or dropped."""
        return self._started and height == self.height

    def _check_proposal_shape(self, proposal: Proposal, block: Block) -> None:
        """A proposal names its block's hash and height and a pol round before its own."""
        if proposal.pol_round != NO_POL_ROUND and proposal.pol_round >= proposal.round:
            raise MalformedProposal(f"pol round {proposal.pol_round} is not before round "
                                    f"{proposal.round}")
        if block_hash(block) != proposal.block_hash:
            raise MalformedProposal(f"proposal names block {proposal.block_hash.hex()}, "
                                    f"the block hashes to {block_hash(block).hex()}")
        if block.header.height != self.height:
            raise MalformedProposal(f"block height: expected {self.height}, "
                                    f"got {block.header.height}")

    def _check_proposal_signature(self, signed: SignedProposal) -> None:
        """The proposal is signed by its proposer's key."""
        validator = self._votes.validator(signed.proposal.proposer)
        assert validator is not None  # checked by on_proposal
        if not verify_proposal_signature(self.chain_id, signed, validator.public_key):
            raise BadMessageSignature(
                f"proposal of {signed.proposal.proposer.hex()} for height "
                f"{signed.proposal.height} round {signed.proposal.round} does not verify")

    def _admits_round(self, round_: int, sender: bytes) -> bool:
        """Rounds up to the next one, and rounds someone already spoke in, are open.

        Beyond them each validator may open MAX_CATCHUP_ROUNDS rounds, so one
        validator voting in far-away rounds cannot grow our memory without bound,
        while f+1 honest validators ahead of us still reach us (line 55).
        """
        if round_ <= self.round + 1 or self._votes.has_round(round_):
            return True
        return self._catchup.get(sender, 0) < MAX_CATCHUP_ROUNDS

    def _open_round(self, round_: int, sender: bytes) -> None:
        """Note that `sender` speaks in `round_`, charging it a catchup round if it opens one."""
        if round_ > self.round + 1 and not self._votes.has_round(round_):
            self._catchup[sender] = self._catchup.get(sender, 0) + 1
        self._votes.note_sender(round_, sender)

    def _is_valid(self, key: bytes, block: Block) -> bool:
        """The paper's valid(v): the application's verdict on `block` (hash `key`), asked
        once per hash."""
        verdict = self._validity.get(key)
        if verdict is None:
            verdict = bool(self.app.validate_block(block))
            self._validity[key] = verdict
        return verdict

    # --- state changes ----------------------------------------------------------------

    def _store_proposal(self, signed: SignedProposal, block: Block) -> None:
        """Hold a checked proposal for its round and its block by hash."""
        proposal = signed.proposal
        self._open_round(proposal.round, proposal.proposer)
        self._proposals[proposal.round] = (signed, block)
        self._blocks.setdefault(proposal.block_hash, block)

    def _take_vote(self, signed: SignedVote) -> list[Output]:
        """Count a checked vote; report a conflict; run the rules if it counts."""
        self._open_round(signed.vote.round, signed.vote.validator)
        result = self._votes.add(signed)
        out: list[Output] = []
        if result.evidence is not None:
            out.append(FoundEvidence(result.evidence))
        if result.added:
            out.extend(self._advance())
        return out

    def _start_round(self, round_: int) -> list[Output]:
        """StartRound (line 11): propose if it is our turn, else wait for a proposal."""
        self.round, self.step = round_, STEP_PROPOSE
        self._polka_done = self._prevote_timer_set = self._precommit_timer_set = False
        if self._is_validator() and self._proposer_of(round_) == self.signer.address:
            out = self._propose()
            if out:
                return out
        return [self._schedule(STEP_PROPOSE)]

    def _propose(self) -> list[Output]:
        """Lines 14-19: re-propose the valid value with its round, else a fresh block."""
        if self._valid_value is not None:
            block, pol_round = self._valid_value, self.valid_round
        else:
            block, pol_round = self.app.propose_block(self.height, self.round), NO_POL_ROUND
        key = block_hash(block)
        proposal = Proposal(height=self.height, round=self.round, pol_round=pol_round,
                            block_hash=key, proposer=self.signer.address)
        signed = self._sign(self.signer.sign_proposal, proposal)
        if signed is None:
            return []
        self._validity.setdefault(key, True)  # our own block: built valid, or valid before
        self._store_proposal(signed, block)
        return [BroadcastProposal(proposal=signed, block=block)]

    def _cast(self, vote_type: int, target: bytes) -> list[Output]:
        """Sign and broadcast our vote for `target`, counting it ourselves too."""
        if not self._is_validator():
            return []
        vote = Vote(vote_type=vote_type, height=self.height, round=self.round,
                    block_hash=target, validator=self.signer.address)
        signed = self._sign(self.signer.sign_vote, vote)
        if signed is None:
            return []
        result = self._votes.add(signed)
        out: list[Output] = [BroadcastVote(vote=signed)]
        if result.evidence is not None:
            out.append(FoundEvidence(result.evidence))
        return out

    def _sign(self, sign: Callable[[T], S], unsigned: T) -> S | None:
        """`sign(unsigned)`, or None when the signer refuses (logged, nothing is sent)."""
        try:
            return sign(unsigned)
        except DoubleSignRefused as exc:
            log.warning("signer refused %s at height %d round %d: %s",
                        type(unsigned).__name__, self.height, self.round, exc)
            return None

    def _is_validator(self) -> bool:
        """We hold a key of this height's validator set (else we only follow)."""
        return self.signer is not None and self._votes.validator(self.signer.address) is not None

    def _schedule(self, step: int) -> ScheduleTimeout:
        """The timeout of `step` in the current round."""
        return ScheduleTimeout(timeout=Timeout(height=self.height, round=self.round, step=step),
                               duration_ms=self.timeouts.duration_ms(step, self.round))

    # --- the upon rules ---------------------------------------------------------------

    def _advance(self) -> list[Output]:
        """Fire every upon-rule whose condition holds, first match first, until none does."""
        out: list[Output] = []
        rules = (self._upon_commit, self._upon_higher_round, self._upon_proposal,
                 self._upon_polka_value, self._upon_polka_nil, self._upon_polka_any,
                 self._upon_precommit_any)
        while self._started and not self.decided and any(rule(out) for rule in rules):
            pass
        return out

    def _upon_commit(self, out: list[Output]) -> bool:
        """Line 49: +2/3 precommits for a valid block in any round: decide it."""
        for round_ in self._votes.rounds():
            precommits = self._votes.precommits(round_)
            target = precommits.quorum_hash()
            if target is None or target == NIL:
                continue
            block = self._blocks.get(target)
            if block is None or not self._is_valid(target, block):
                continue
            commit = Commit(height=self.height, round=round_, block_hash=target,
                            signatures=precommits.commit_signatures(target))
            self.decided = True
            out.append(Decide(block=block, commit=commit))
            return True
        return False

    def _upon_higher_round(self, out: list[Output]) -> bool:
        """Line 55: f+1 of the power speaks in a higher round: jump to the highest such."""
        higher = [r for r in self._votes.rounds() if r > self.round
                  and has_one_third(self._votes.sender_power(r), self._votes.total)]
        if not higher:
            return False
        out.extend(self._start_round(max(higher)))
        return True

    def _upon_proposal(self, out: list[Output]) -> bool:
        """Lines 22 and 28: prevote the round's proposal if our lock allows it, else nil."""
        held = self._proposals.get(self.round)
        if self.step != STEP_PROPOSE or held is None:
            return False
        proposal, block = held[0].proposal, held[1]
        locked_on_it = self._locked_hash == proposal.block_hash
        if proposal.pol_round == NO_POL_ROUND:
            free = self.locked_round == NO_ROUND or locked_on_it
        elif self._votes.prevotes(proposal.pol_round).has_quorum_for(proposal.block_hash):
            free = self.locked_round <= proposal.pol_round or locked_on_it
        else:
            return False  # line 28 waits for the polka of the pol round
        target = proposal.block_hash if free and self._is_valid(proposal.block_hash, block) else NIL
        self.step = STEP_PREVOTE
        out.extend(self._cast(VOTE_PREVOTE, target))
        return True

    def _upon_polka_value(self, out: list[Output]) -> bool:
        """Line 36: +2/3 prevotes for the valid proposal of this round: lock (once) and
        precommit it if still prevoting; remember it as the valid value either way."""
        held = self._proposals.get(self.round)
        if self.step == STEP_PROPOSE or self._polka_done or held is None:
            return False
        target, block = held[0].proposal.block_hash, held[1]
        if (not self._votes.prevotes(self.round).has_quorum_for(target)
                or not self._is_valid(target, block)):
            return False
        self._polka_done = True
        if self.step == STEP_PREVOTE:
            self.locked_round, self._locked_hash = self.round, target
            self.step = STEP_PRECOMMIT
            out.extend(self._cast(VOTE_PRECOMMIT, target))
        self.valid_round, self._valid_value = self.round, block
        return True

    def _upon_polka_nil(self, out: list[Output]) -> bool:
        """Line 44: +2/3 prevotes for nil while prevoting: precommit nil."""
        if self.step != STEP_PREVOTE or not self._votes.prevotes(self.round).has_quorum_for(NIL):
            return False
        self.step = STEP_PRECOMMIT
        out.extend(self._cast(VOTE_PRECOMMIT, NIL))
        return True

    def _upon_polka_any(self, out: list[Output]) -> bool:
        """Line 34: +2/3 prevotes for anything while prevoting: start the prevote timeout once."""
        if (self.step != STEP_PREVOTE or self._prevote_timer_set
                or not self._votes.prevotes(self.round).has_quorum_any()):
            return False
        self._prevote_timer_set = True
        out.append(self._schedule(STEP_PREVOTE))
        return True

    def _upon_precommit_any(self, out: list[Output]) -> bool:
        """Line 47: +2/3 precommits for anything in this round: start the precommit timeout once."""
        if self._precommit_timer_set or not self._votes.precommits(self.round).has_quorum_any():
            return False
        self._precommit_timer_set = True
        out.append(self._schedule(STEP_PRECOMMIT))
        return True

    # --- the next height's messages ------------------------------------------------------

    def _buffer_message(self, height: int, message: Message) -> None:
        """Hold a message for the next height (bounded, without duplicates); drop others."""
        if height != self.height + 1:
            return
        key = message if isinstance(message, SignedVote) else message[0]
        if key in self._buffered_keys:
            return
        is_proposal = not isinstance(message, SignedVote)
        if is_proposal and self._buffered_proposals >= MAX_BUFFERED_PROPOSALS:
            return
        if not is_proposal and len(self._buffer) - self._buffered_proposals >= MAX_BUFFERED_VOTES:
            return
        self._buffered_keys.add(key)
        self._buffer.append(message)
        self._buffered_proposals += is_proposal

    def _take_buffer(self, height: int) -> list[Message]:
        """The buffered messages of `height`, in arrival order; the buffer empties."""
        buffered = self._buffer
        self._buffer, self._buffered_keys, self._buffered_proposals = [], set(), 0
        return [m for m in buffered if _message_height(m) == height]

    def _replay(self, message: Message) -> list[Output]:
        """Feed a buffered message; an invalid one is dropped (its sender is long gone)."""
        try:
            if isinstance(message, SignedVote):
                return self.on_vote(message)
            return self.on_proposal(*message)
        except InvalidMessage as exc:
            log.info("dropping a buffered message for height %d: %s", self.height, exc)
            return []


def _message_height(message: Message) -> int:
    """The height a vote or proposal is for."""
    if isinstance(message, SignedVote):
        return message.vote.height
    return message[0].proposal.height


def _no_proposer(round_: int) -> bytes:
    """Before the first height starts there is no proposer."""
    raise ValueError("the engine has not started a height")
