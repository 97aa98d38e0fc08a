"""A deterministic simulated network of consensus engines, for tests.

Every node runs a real `consensus.engine.Engine` with real Ed25519 keys. A seeded
`random.Random` decides message delays, drops and delivery order; simulated time
drives timeouts, so a run is a pure function of its seed and parameters.

    net = SimNetwork([1, 1, 1, 1], seed=7, behaviours={3: Behaviour(silent=True)})
    assert net.run_heights(3, deadline_ms=60_000)
    net.check_safety()

Network model: before `gst_ms` messages may be dropped (`drop_rate`) and take up
to `max_delay_ms`; from GST on nothing is dropped and delays are at most
`delay_after_gst_ms` (partial synchrony). `cut` pairs (partitions) drop
everything between two nodes until healed; with `churn_ms`, until GST the nodes
are split into two random sides every `churn_ms`, and the sides cannot talk.
Every `regossip_ms` each node re-sends what a Tendermint gossip routine would:
its current proposal and recent votes, and to peers at a lower height the
proposal and precommits of its decision there (catch-up), so lost messages are
eventually replaced.

Byzantine behaviours (`Behaviour`): silent (never sends or receives), an
equivocating proposer (two different blocks for one round, one to each half of
its peers), conflicting votes (a second vote for another value, sent to the
other half or to everyone), and voting for everything (a prevote and a
precommit for every proposal it sees, whatever it voted before).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chain.address import address_from_public_key
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    VOTE_PRECOMMIT,
    Block,
    Commit,
    DuplicateVoteEvidence,
    Header,
    Proposal,
    SignedProposal,
    SignedVote,
    Validator,
    ValidatorSet,
    Vote,
    block_hash,
)
from chain.signing import sign_proposal, sign_vote
from chain.types import ZERO_HASH
from consensus.commit import EMPTY_COMMIT
from consensus.engine import (
    BroadcastProposal,
    BroadcastVote,
    Decide,
    Engine,
    FoundEvidence,
    Output,
    ScheduleTimeout,
    Timeout,
    TimeoutConfig,
)
from consensus.errors import DoubleSignRefused, InvalidMessage
from consensus.votes import NIL, VOTE_TYPES

SIM_CHAIN_ID = "gannet-sim"
FAST_TIMEOUTS = TimeoutConfig(propose_ms=300, propose_delta_ms=100, prevote_ms=100,
                              prevote_delta_ms=50, precommit_ms=100, precommit_delta_ms=50)

Message = SignedVote | tuple[SignedProposal, Block]


def make_key(index: int) -> SigningKey:
    """The deterministic key of simulated validator `index`."""
    return SigningKey.from_seed(sha256(f"gannet-sim-validator-{index}".encode()))


def make_validator_set(keys: list[SigningKey], powers: list[int]) -> ValidatorSet:
    """A validator set of `keys` with `powers`, sorted by address."""
    validators = [Validator(address=address_from_public_key(k.public_key), public_key=k.public_key,
                            power=p, operator=address_from_public_key(k.public_key))
                  for k, p in zip(keys, powers, strict=True)]
    return ValidatorSet(validators=tuple(sorted(validators, key=lambda v: v.address)))


def rotating_proposer(vset: ValidatorSet, height: int) -> Callable[[int], bytes]:
    """A simple proposer schedule: validators in address order, shifted by height and round."""
    validators = vset.validators
    return lambda round_: validators[(height + round_) % len(validators)].address


def make_block(height: int, round_: int, proposer: bytes, prev_hash: bytes,
               salt: bytes = b"", chain_id: str = SIM_CHAIN_ID) -> Block:
    """A small, structurally complete block; `salt` makes a different block for one slot."""
    payload = sha256(b"sim-block" + proposer + round_.to_bytes(4, "big") + salt)
    header = Header(version=1, chain_id=chain_id.encode(), height=height,
                    time_ms=height * 1000 + round_, prev_hash=prev_hash,
                    last_commit_hash=ZERO_HASH, tx_root=payload, app_hash=ZERO_HASH,
                    results_hash=ZERO_HASH, validators_hash=ZERO_HASH,
                    next_validators_hash=ZERO_HASH, evidence_hash=ZERO_HASH, proposer=proposer)
    return Block(header=header, txs=(), evidence=(), last_commit=EMPTY_COMMIT)


class SimSigner:
    """Signs with `key`, refusing a second, different signature for one slot (as the node's
    guarded signer does); `refusals` counts refusals, which honest engines never cause."""

    def __init__(self, key: SigningKey, chain_id: str = SIM_CHAIN_ID) -> None:
        self.key = key
        self.chain_id = chain_id
        self.address = address_from_public_key(key.public_key)
        self._signed: dict[tuple, object] = {}
        self.refusals = 0

    def _guard(self, slot: tuple, unsigned: object) -> None:
        """Raise DoubleSignRefused if `slot` was signed with something else."""
        previous = self._signed.setdefault(slot, unsigned)
        if previous != unsigned:
            self.refusals += 1
            raise DoubleSignRefused(f"slot {slot} already signed")

    def sign_vote(self, vote: Vote) -> SignedVote:
        """The vote signed, unless it conflicts with an earlier one."""
        self._guard(("vote", vote.height, vote.round, vote.vote_type), vote)
        return sign_vote(self.key, self.chain_id, vote)

    def sign_proposal(self, proposal: Proposal) -> SignedProposal:
        """The proposal signed, unless it conflicts with an earlier one."""
        self._guard(("proposal", proposal.height, proposal.round), proposal)
        return sign_proposal(self.key, self.chain_id, proposal)


class SimApp:
    """An application whose blocks are `make_block`s on its head; any block on the head
    whose hash is not in `invalid` is valid. `validations` lists every hash it judged."""

    def __init__(self, address: bytes, invalid: set[bytes] | None = None,
                 chain_id: str = SIM_CHAIN_ID) -> None:
        self.address = address
        self.chain_id = chain_id
        self.head_hash: bytes = ZERO_HASH
        self.invalid = invalid if invalid is not None else set()
        self.validations: list[bytes] = []

    def propose_block(self, height: int, round_: int) -> Block:
        """A fresh block for (height, round) on the head."""
        return make_block(height, round_, self.address, self.head_hash, chain_id=self.chain_id)

    def validate_block(self, block: Block) -> bool:
        """Valid iff it extends the head, is for our chain and is not marked invalid."""
        key = block_hash(block)
        self.validations.append(key)
        return (key not in self.invalid and block.header.prev_hash == self.head_hash
                and block.header.chain_id == self.chain_id.encode())


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a byzantine node deviates (all False/None: honest).

    `conflicting_votes`: "split" sends each vote to one half of the peers and a
    conflicting one to the other half; "all" sends both to everyone.
    """

    silent: bool = False
    equivocate: bool = False
    conflicting_votes: str | None = None
    vote_everything: bool = False

    @property
    def honest(self) -> bool:
        """No deviation at all."""
        return not (self.silent or self.equivocate or self.conflicting_votes
                    or self.vote_everything)


HONEST = Behaviour()


@dataclass
class SimNode:
    """One simulated node: its key, engine, application and what it observed."""

    index: int
    key: SigningKey
    address: bytes
    behaviour: Behaviour
    engine: Engine
    app: SimApp
    signer: SimSigner
    decisions: dict[int, Decide] = field(default_factory=dict)
    evidence: list[DuplicateVoteEvidence] = field(default_factory=list)
    invalid_messages: list[InvalidMessage] = field(default_factory=list)
    proposals: dict[tuple[int, bytes], tuple[SignedProposal, Block]] = field(default_factory=dict)
    journal: list[tuple[str, Any, Any]] = field(default_factory=list)


class SimNetwork:
    """N engines on a seeded, simulated network (see the module docstring)."""

    def __init__(self, powers: list[int], seed: int, *,
                 behaviours: dict[int, Behaviour] | None = None, gst_ms: int = 0,
                 max_delay_ms: int = 200, delay_after_gst_ms: int = 20, drop_rate: float = 0.0,
                 regossip_ms: int = 500, commit_delay_ms: int = 10, churn_ms: int = 0,
                 timeouts: TimeoutConfig = FAST_TIMEOUTS, record: bool = False,
                 invalid: set[bytes] | None = None) -> None:
        self.rng = random.Random(seed)
        self.keys = [make_key(i) for i in range(len(powers))]
        self.vset = make_validator_set(self.keys, powers)
        self.gst_ms, self.max_delay_ms = gst_ms, max_delay_ms
        self.delay_after_gst_ms, self.drop_rate = delay_after_gst_ms, drop_rate
        self.regossip_ms, self.commit_delay_ms = regossip_ms, commit_delay_ms
        self.record = record
        self.invalid = invalid if invalid is not None else set()
        self.now_ms = 0
        self.cut: set[tuple[int, int]] = set()
        self.churn_ms = churn_ms
        self._side: dict[int, int] = {}
        self._queue: list[tuple[int, int, str, tuple]] = []
        self._seq = 0
        behaviours = behaviours or {}
        self.nodes = [self._make_node(i, behaviours.get(i, HONEST), timeouts)
                      for i in range(len(powers))]
        for node in self.live_nodes():
            self._at(0, "start", (node.index, 1))
            self._at(self.rng.randint(1, regossip_ms), "gossip", (node.index,))
        if churn_ms > 0:
            self._at(0, "churn", ())

    def _make_node(self, index: int, behaviour: Behaviour, timeouts: TimeoutConfig) -> SimNode:
        key = self.keys[index]
        address = address_from_public_key(key.public_key)
        app = SimApp(address, self.invalid)
        signer = SimSigner(key)
        engine = Engine(SIM_CHAIN_ID, app, signer, timeouts)
        return SimNode(index=index, key=key, address=address, behaviour=behaviour,
                       engine=engine, app=app, signer=signer)

    # --- who is who ------------------------------------------------------------------

    def live_nodes(self) -> list[SimNode]:
        """Nodes that take part (every node but the silent ones)."""
        return [n for n in self.nodes if not n.behaviour.silent]

    def honest_nodes(self) -> list[SimNode]:
        """Nodes that follow the protocol."""
        return [n for n in self.nodes if n.behaviour.honest]

    def isolate(self, *indices: int) -> None:
        """Cut every link of the given nodes (a partition until `heal`)."""
        for i in indices:
            for j in range(len(self.nodes)):
                if i != j:
                    self.cut.update({(i, j), (j, i)})

    def heal(self) -> None:
        """Restore every link."""
        self.cut.clear()

    # --- running ---------------------------------------------------------------------

    def run(self, until_ms: int, stop: Callable[[], bool] = lambda: False) -> bool:
        """Process events in time order up to `until_ms`; True as soon as `stop()` holds."""
        while self._queue and self._queue[0][0] <= until_ms:
            if stop():
                return True
            time_ms, _, kind, args = heapq.heappop(self._queue)
            self.now_ms = time_ms
            getattr(self, f"_on_{kind}")(*args)
        self.now_ms = max(self.now_ms, until_ms)
        return stop()

    def run_heights(self, heights: int, deadline_ms: int) -> bool:
        """Run until every honest node decided heights 1..`heights` (False at the deadline)."""
        return self.run(deadline_ms, lambda: self.all_decided(heights))

    def all_decided(self, heights: int) -> bool:
        """Every honest node decided every height up to `heights`."""
        return all(h in n.decisions for n in self.honest_nodes() for h in range(1, heights + 1))

    def check_safety(self) -> None:
        """No two honest nodes decided different blocks at one height (AssertionError)."""
        by_height: dict[int, set[bytes]] = {}
        for node in self.honest_nodes():
            for height, decide in node.decisions.items():
                by_height.setdefault(height, set()).add(decide.commit.block_hash)
        forks = {h: hashes for h, hashes in by_height.items() if len(hashes) > 1}
        assert not forks, f"honest nodes decided different blocks: {forks}"

    def _at(self, time_ms: int, kind: str, args: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time_ms, self._seq, kind, args))

    # --- events ----------------------------------------------------------------------

    def _on_start(self, index: int, height: int) -> None:
        node = self.nodes[index]
        proposer_of = rotating_proposer(self.vset, height)
        self._feed(node, "start", (height, self.vset, proposer_of),
                   lambda: node.engine.start_height(height, self.vset, proposer_of))

    def _on_deliver(self, index: int, message: Message) -> None:
        node = self.nodes[index]
        if isinstance(message, SignedVote):
            self._feed(node, "vote", message, lambda: node.engine.on_vote(message))
            return
        signed, block = message
        key = (signed.proposal.height, signed.proposal.block_hash)
        self._feed(node, "proposal", message, lambda: node.engine.on_proposal(signed, block))
        if node.behaviour.vote_everything and key not in node.proposals:
            self._vote_for(node, signed.proposal)
        node.proposals.setdefault(key, message)

    def _vote_for(self, node: SimNode, proposal: Proposal) -> None:
        """A byzantine prevote and precommit for `proposal`, sent to every peer."""
        for vote_type in VOTE_TYPES:
            vote = Vote(vote_type=vote_type, height=proposal.height, round=proposal.round,
                        block_hash=proposal.block_hash, validator=node.address)
            signed = sign_vote(node.key, SIM_CHAIN_ID, vote)
            for peer in self._peers(node):
                self._send(node.index, peer, signed)

    def _on_timeout(self, index: int, timeout: Timeout) -> None:
        node = self.nodes[index]
        self._feed(node, "timeout", timeout, lambda: node.engine.on_timeout(timeout))

    def _on_churn(self) -> None:
        """Before GST: split the nodes into two random sides that cannot talk."""
        if self.now_ms >= self.gst_ms:
            self._side.clear()
            return
        self._side = {n.index: self.rng.randrange(2) for n in self.nodes}
        self._at(min(self.now_ms + self.churn_ms, self.gst_ms), "churn", ())

    def _on_gossip(self, index: int) -> None:
        node = self.nodes[index]
        self._at(self.now_ms + self.regossip_ms, "gossip", (index,))
        current = self._current_gossip(node)
        for peer in self.live_nodes():
            if peer.index == index:
                continue
            for message in current + self._catchup_gossip(node, peer):
                self._send(node.index, peer.index, message)

    def _feed(self, node: SimNode, kind: str, payload: Any, call: Callable[[], list[Output]],
              ) -> None:
        """Give the engine one input; record it, keep invalid-message errors, act on outputs."""
        try:
            outputs = call()
        except InvalidMessage as exc:
            node.invalid_messages.append(exc)
            outputs = exc
        if self.record:
            node.journal.append((kind, payload, outputs))
        if not isinstance(outputs, InvalidMessage):
            self._act(node, outputs)

    # --- outputs ----------------------------------------------------------------------

    def _act(self, node: SimNode, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, BroadcastProposal):
                self._broadcast_proposal(node, output.proposal, output.block)
            elif isinstance(output, BroadcastVote):
                self._broadcast_vote(node, output.vote)
            elif isinstance(output, ScheduleTimeout):
                self._at(self.now_ms + output.duration_ms, "timeout", (node.index, output.timeout))
            elif isinstance(output, Decide):
                self._decided(node, output)
            elif isinstance(output, FoundEvidence):
                node.evidence.append(output.evidence)

    def _decided(self, node: SimNode, decide: Decide) -> None:
        height = decide.block.header.height
        assert height not in node.decisions, f"node {node.index} decided height {height} twice"
        node.decisions[height] = decide
        node.app.head_hash = decide.commit.block_hash
        self._at(self.now_ms + self.commit_delay_ms, "start", (node.index, height + 1))

    def _peers(self, node: SimNode) -> list[int]:
        return [p.index for p in self.live_nodes() if p.index != node.index]

    def _halves(self, node: SimNode) -> tuple[list[int], list[int]]:
        peers = self._peers(node)
        return peers[: len(peers) // 2], peers[len(peers) // 2:]

    def _broadcast_proposal(self, node: SimNode, signed: SignedProposal, block: Block) -> None:
        node.proposals.setdefault((signed.proposal.height, signed.proposal.block_hash),
                                  (signed, block))
        if not node.behaviour.equivocate:
            for peer in self._peers(node):
                self._send(node.index, peer, (signed, block))
            return
        first, second = self._halves(node)
        other = self._other_proposal(node, signed)
        for peer in first:
            self._send(node.index, peer, (signed, block))
        for peer in second:
            self._send(node.index, peer, other)

    def _other_proposal(self, node: SimNode, signed: SignedProposal,
                        ) -> tuple[SignedProposal, Block]:
        """The equivocating proposer's second block and proposal for the same round."""
        p = signed.proposal
        block = make_block(p.height, p.round, node.address, node.app.head_hash, salt=b"evil")
        proposal = Proposal(height=p.height, round=p.round, pol_round=p.pol_round,
                            block_hash=block_hash(block), proposer=node.address)
        other = (sign_proposal(node.key, SIM_CHAIN_ID, proposal), block)
        node.proposals.setdefault((p.height, proposal.block_hash), other)
        return other

    def _broadcast_vote(self, node: SimNode, signed: SignedVote) -> None:
        mode = node.behaviour.conflicting_votes
        if mode is None:
            for peer in self._peers(node):
                self._send(node.index, peer, signed)
            return
        vote = signed.vote
        other = sign_vote(node.key, SIM_CHAIN_ID, Vote(
            vote_type=vote.vote_type, height=vote.height, round=vote.round,
            block_hash=self._conflicting_target(node, vote), validator=vote.validator))
        if mode == "all":
            for peer in self._peers(node):
                pair = [signed, other]
                self.rng.shuffle(pair)
                for message in pair:
                    self._send(node.index, peer, message)
            return
        first, second = self._halves(node)
        for peer in first:
            self._send(node.index, peer, signed)
        for peer in second:
            self._send(node.index, peer, other)

    def _conflicting_target(self, node: SimNode, vote: Vote) -> bytes:
        """Another block of this height the node knows of, else nil (or a made-up hash)."""
        known = sorted(h for (height, h) in node.proposals if height == vote.height)
        for candidate in known:
            if candidate != vote.block_hash:
                return candidate
        return NIL if vote.block_hash != NIL else sha256(b"made-up" + bytes([vote.round % 256]))

    def _send(self, src: int, dst: int, message: Message) -> None:
        if (src, dst) in self.cut or self._side.get(src) != self._side.get(dst):
            return
        if self.now_ms < self.gst_ms:
            if self.rng.random() < self.drop_rate:
                return
            delay = self.rng.randint(1, self.max_delay_ms)
        else:
            delay = self.rng.randint(1, self.delay_after_gst_ms)
        self._at(self.now_ms + delay, "deliver", (dst, message))

    # --- gossip ------------------------------------------------------------------------

    def _current_gossip(self, node: SimNode) -> list[Message]:
        """The node's current proposal, its votes of this and the previous round and of
        the proposal's pol round, and the commit of its current height if decided."""
        engine = node.engine
        messages: list[Message] = []
        held = engine.current_proposal()
        rounds = {engine.round, max(engine.round - 1, 0)}
        if held is not None:
            messages.append(held)
            if held[0].proposal.pol_round < engine.round:
                rounds.add(held[0].proposal.pol_round)
        for round_ in sorted(rounds):
            messages.extend(engine.votes_at(round_))
        if engine.height in node.decisions:
            messages.extend(self._decision_messages(node, engine.height))
        return messages

    def _catchup_gossip(self, node: SimNode, peer: SimNode) -> list[Message]:
        """For a peer at a height we decided: that height's commit and decided proposal."""
        height = peer.engine.height
        if height >= node.engine.height or height not in node.decisions:
            return []
        return self._decision_messages(node, height)

    def _decision_messages(self, node: SimNode, height: int) -> list[Message]:
        decide = node.decisions[height]
        messages: list[Message] = list(commit_votes(decide.commit))
        held = node.proposals.get((height, decide.commit.block_hash))
        if held is not None:
            messages.insert(0, held)
        return messages


def commit_votes(commit: Commit) -> list[SignedVote]:
    """The signed precommits a commit is made of."""
    return [SignedVote(vote=Vote(vote_type=VOTE_PRECOMMIT, height=commit.height,
                                 round=commit.round, block_hash=commit.block_hash,
                                 validator=sig.validator), signature=sig.signature)
            for sig in commit.signatures]
