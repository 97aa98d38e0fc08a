"""What a node does with each peer message, and what it re-announces periodically.

Checks that need only the message and the validator set (decoding, signatures of
current-height votes and proposals, a proposal's block being the one signed, tx
signatures) happen here, before anything is queued, so a peer that sends forged
data is cut off at once. Messages that pass are relayed to the other peers and
handed to consensus, the mempool, the evidence pool or block sync; votes and
proposals for the height after the next cannot be checked yet, so they are
handed on but never relayed (an honest node passes on only what it checked).

A peer's status is a claim. A claim ahead of us (two heights, or one for longer
than BEHIND_GRACE_S) gets that peer probed for our next block (`BlockSyncer.probe`)
while consensus goes on; only a block served with a commit that verifies stops
consensus for a catch-up (see p2p/sync.py), so a peer that claims heights it
cannot serve never keeps a validator from voting.

A message lost on a link is not lost for good: every CATCH_UP_TICK_S the node tells
its peers its round and step when they changed, and sends each peer that has sat in
one step of our height for LAG_S what that step still lacks (`catch_up_items`),
directly, each item at most once per RESEND_S (`catch_up_peers`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from chain.codec import decode
from chain.errors import DecodeError, InvalidTxSignature, MempoolError
from chain.records import (
    STEP_PREVOTE,
    STEP_PROPOSE,
    VOTE_PREVOTE,
    Block,
    SignedProposal,
    SignedVote,
    ValidatorSet,
    block_hash,
)
from chain.signing import verify_proposal_signature, verify_vote_signature
from consensus.commit import precommit_for
from consensus.errors import InvalidEvidence
from node.consensus import PeerProposal, PeerVote
from p2p.errors import Misbehaviour
from p2p.messages import (
    MAX_ROUND_STATE_VOTES,
    BlockRequest,
    BlockResponse,
    EvidenceMsg,
    Message,
    NoBlock,
    ProposalMsg,
    RoundStateMsg,
    StatusMsg,
    TxMsg,
    TxsMsg,
    VoteMsg,
)
from p2p.switch import PeerInfo
from p2p.sync import serve_block_request

log = logging.getLogger("gannet.gossip")
BEHIND_GRACE_S = 1.0
STUCK_S = 2.0
CATCH_UP_TICK_S = 0.1  # how often peers' needs are looked at (and our status announced)
LAG_S = 0.15  # a peer lacks an item once both it sat in its step and we held the item this long
RESEND_S = 0.3  # an item goes to one peer at most once per this (plus its bytes' share below)
CATCH_UP_BYTES_PER_S = 8 << 20  # a proposal is resent no faster than this rate allows
MAX_CATCH_UP_VOTES = 64  # votes per peer per tick

CatchUpItem = ProposalMsg | SignedVote


class PeerCatchUp:
    """What we know of one peer's needs: its step since when, what it sent us, what
    we sent it and when."""

    def __init__(self) -> None:
        self.key: tuple[int, int, int] | None = None
        self.since = 0.0
        self.has: set[Any] = set()
        self.sent: dict[Any, float] = {}


class NodePeers:
    """The node's `p2p.switch.PeerHandler`."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._keys_height = -1
        self._keys: dict[bytes, bytes] = {}
        self._proposers: Any = None
        self._ahead_since: dict[bytes, float] = {}
        self._stuck_since: dict[bytes, tuple[tuple[int, int, int] | None, float]] = {}
        self._catch_up: dict[bytes, PeerCatchUp] = {}
        self._held: dict[Any, float] = {}
        self._announced: tuple[int, int, int] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._closed = False
        self._commit_votes: tuple[int, tuple[SignedVote, ...]] = (-1, ())

    # --- PeerHandler ----------------------------------------------------------------

    async def on_message(self, peer: PeerInfo, message: Message) -> None:
        """Check, route and relay one message from `peer`."""
        if isinstance(message, VoteMsg):
            self._on_vote(peer, message)
        elif isinstance(message, ProposalMsg):
            self._on_proposal(peer, message)
        elif isinstance(message, TxsMsg):
            await self._on_txs(message.txs)
        elif isinstance(message, TxMsg):
            await self._on_txs((message.tx,))
        elif isinstance(message, EvidenceMsg):
            self._on_evidence(peer, message)
        elif isinstance(message, StatusMsg):
            self._on_status(peer, message)
        elif isinstance(message, RoundStateMsg):
            self._on_round_state(peer, message)
        elif isinstance(message, BlockRequest):
            self.node.switch.send(peer.node_id, serve_block_request(self.node.store, message))
        elif isinstance(message, BlockResponse):
            self.node.syncer.on_block_response(peer.node_id, message)
        elif isinstance(message, NoBlock):
            self.node.syncer.on_no_block(peer.node_id, message)

    def on_connected(self, peer: PeerInfo) -> None:
        """Bring a new peer up to date with the current round."""
        for message in round_messages(self.node):
            self.node.switch.send(peer.node_id, message)
        if self._ticker is None and not self._closed:
            self._ticker = asyncio.get_running_loop().call_later(CATCH_UP_TICK_S, self._tick)

    def on_disconnected(self, peer: PeerInfo) -> None:
        self._ahead_since.pop(peer.node_id, None)
        self._catch_up.pop(peer.node_id, None)
        self._stuck_since.pop(peer.node_id, None)
        if self.node.syncer is not None:
            self.node.syncer.on_peer_gone(peer.node_id)

    def local_status(self) -> StatusMsg:
        return local_status(self.node)

    # --- consensus messages ------------------------------------------------------------

    def _on_vote(self, peer: PeerInfo, message: VoteMsg, relay: bool = True) -> None:
        """Check a vote for the next height and relay it; one for the height after is
        queued unchecked and never relayed (a peer that is a block ahead would check
        it, and blame us for a forgery we passed on)."""
        vote = message.vote.vote
        if not self._relevant(vote.height):
            return
        checked = vote.height == self.node.head.height + 1
        if checked:
            self._check_vote(message.vote)
            self._peer_has(peer.node_id, message.vote)
        if relay and checked:
            self._relay(peer, message)
        if self.node.driver is not None:
            self.node.driver.submit(PeerVote(peer=peer.node_id, vote=message.vote))

    def _on_proposal(self, peer: PeerInfo, message: ProposalMsg, relay: bool = True) -> None:
        """Check a proposal for the next height (signature, and that the block is the one
        signed) and relay it; one for the height after is queued unchecked, never relayed."""
        proposal = message.proposal.proposal
        if not self._relevant(proposal.height):
            return
        try:
            block = decode(Block, message.block)
        except DecodeError as exc:
            raise Misbehaviour(f"undecodable proposed block: {exc}") from exc
        checked = proposal.height == self.node.head.height + 1
        if checked:
            self._check_proposal(message.proposal, block)
            self._peer_has(peer.node_id, message.proposal)
        if relay and checked:
            self._relay(peer, message)
        if self.node.driver is not None:
            self.node.driver.submit(PeerProposal(peer=peer.node_id, proposal=message.proposal,
                                                 block=block, raw=message.block))

    def _on_round_state(self, peer: PeerInfo, message: RoundStateMsg) -> None:
        """A peer's round, sent because we looked stuck or lacking: take each part we do
        not hold yet (in our round snapshot), relay nothing."""
        snapshot = self.node.driver.snapshot if self.node.driver is not None else None
        held: set[Any] = set()
        if snapshot is not None and snapshot.height == self.node.head.height + 1:
            held.update(snapshot.votes)
            if snapshot.proposal is not None:
                held.add(snapshot.proposal.proposal)
        for proposal in message.proposals:
            if proposal.proposal not in held:
                self._on_proposal(peer, proposal, relay=False)
        for vote in message.votes:
            if vote not in held:
                self._on_vote(peer, VoteMsg(vote=vote), relay=False)

    def _peer_has(self, peer_id: bytes, item: Any) -> None:
        """`peer_id` sent us `item`: it need not get it back."""
        state = self._catch_up.get(peer_id)
        if state is not None:
            state.has.add(item)

    # --- catch-up of peers that lack part of our round -------------------------------------

    def close(self) -> None:
        """Stop the catch-up timer for good (the node is shutting down)."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _tick(self) -> None:
        """Timer: catch peers up, then run again while any peer is connected."""
        self._ticker = None
        if self._closed:
            return
        try:
            self.catch_up_peers(time.monotonic())
        except Exception:  # a bug here must not stop the timer for good
            log.exception("round catch-up failed")
        if self.node.switch is not None and self.node.switch.peers():
            self._ticker = asyncio.get_running_loop().call_later(CATCH_UP_TICK_S, self._tick)

    def catch_up_peers(self, now: float) -> None:
        """Announce our status if it changed; send each lagging peer what it lacks.

        A peer lacks an item of `catch_up_items` for its status when its status has
        not changed for LAG_S, we have held the item for LAG_S (its gossip had its
        chance), it did not send us the item, and we did not send it the item in the
        last `resend_interval_s`. At most one proposal and MAX_CATCH_UP_VOTES votes go
        to a peer per tick, in one RoundStateMsg.
        """
        node = self.node
        status = local_status(node)
        key = (status.height, status.round, status.step)
        if key != self._announced:
            node.switch.broadcast(status)
            self._announced = key
        if self._commit_votes[0] != node.head.height:
            self._commit_votes = (node.head.height, last_commit_votes(node))
        commit_votes = self._commit_votes[1]
        snapshot = node.driver.snapshot if node.driver is not None else None
        current: list[Any] = list(commit_votes)
        if snapshot is not None and snapshot.height == node.head.height + 1:
            current.extend(snapshot.votes)
            if snapshot.proposal is not None:
                current.append(snapshot.proposal.proposal)
        self._held = {item: self._held.get(item, now) for item in current}
        for peer in sorted(node.switch.peers(), key=lambda p: p.node_id):
            if peer.status is None:
                continue
            state = self._catch_up.setdefault(peer.node_id, PeerCatchUp())
            items = catch_up_items(peer.status, node.head.height, snapshot, commit_votes)
            message = self._lacking(state, peer.status, items, now)
            if message is not None and node.switch.send(peer.node_id, message):
                for item in (*message.proposals, *message.votes):
                    state.sent[_item_key(item)] = now

    def _lacking(self, state: PeerCatchUp, status: StatusMsg, items: list[CatchUpItem],
                 now: float) -> RoundStateMsg | None:
        """The items of `items` this peer lacks now (see `catch_up_peers`), or None."""
        key = (status.height, status.round, status.step)
        if key != state.key:
            state.key, state.since = key, now
        keys = {_item_key(item) for item in items}
        state.has &= keys
        state.sent = {k: t for k, t in state.sent.items() if k in keys}
        if now - state.since < LAG_S:
            return None
        proposals: list[ProposalMsg] = []
        votes: list[SignedVote] = []
        for item in items:
            k = _item_key(item)
            if k in state.has or now - self._held.get(k, now) < LAG_S:
                continue
            if now - state.sent.get(k, now - 1e9) < resend_interval_s(item):
                continue
            if isinstance(item, ProposalMsg):
                proposals = [item]
            elif len(votes) < MAX_CATCH_UP_VOTES:
                votes.append(item)
        if not proposals and not votes:
            return None
        return RoundStateMsg(proposals=tuple(proposals), votes=tuple(votes))

    def help_stuck_peers(self) -> None:
        """Send our round directly to peers whose consensus status has not moved lately.

        A peer stuck at our height may have dropped (and deduplicated away) a vote
        it needs; Tendermint's liveness assumes every vote eventually arrives.
        """
        node = self.node
        now = time.monotonic()
        state: RoundStateMsg | None = None
        for peer in node.switch.peers():
            status = peer.status
            if status is None or status.height + 1 != node.engine.height:
                self._stuck_since.pop(peer.node_id, None)
                continue
            key = (status.height, status.round, status.step)
            seen_key, since = self._stuck_since.get(peer.node_id, (None, now))
            if seen_key != key:
                self._stuck_since[peer.node_id] = (key, now)
            elif now - since >= STUCK_S:
                state = state or round_state(node)
                if state is not None:
                    node.switch.send(peer.node_id, state)
                self._stuck_since[peer.node_id] = (key, now)

    def _relevant(self, height: int) -> bool:
        """Consensus messages for the next two heights matter; older ones are stale."""
        return self.node.head.height < height <= self.node.head.height + 2

    def _check_vote(self, signed: SignedVote) -> None:
        key = self._validator_keys().get(signed.vote.validator)
        if key is None:
            raise Misbehaviour("vote by a validator outside the set", ban=False)
        if not verify_vote_signature(self.node.chain_id, signed, key):
            raise Misbehaviour("vote signature does not verify")

    def _check_proposal(self, signed: SignedProposal, block: Block) -> None:
        """A validator signed the proposal, and the block is the one it names.

        The signature covers the block hash, not the block: a real proposal carrying
        another block passes the signature check, and the engine's ban for it would
        fall on whoever relayed it.
        """
        proposal = signed.proposal
        key = self._validator_keys().get(proposal.proposer)
        if key is None:
            raise Misbehaviour("proposal by a validator outside the set", ban=False)
        if not verify_proposal_signature(self.node.chain_id, signed, key):
            raise Misbehaviour("proposal signature does not verify")
        if block.header.height != proposal.height or block_hash(block) != proposal.block_hash:
            raise Misbehaviour(f"proposal names block {proposal.block_hash.hex()} at height "
                               f"{proposal.height}; it carries block {block_hash(block).hex()} "
                               f"at height {block.header.height}")

    def _validator_keys(self) -> dict[bytes, bytes]:
        height = self.node.head.height
        if height != self._keys_height:
            vset: ValidatorSet = self.node.validators_for_next_height()[0]
            self._keys = {v.address: v.public_key for v in vset.validators}
            self._keys_height = height
        return self._keys

    def _relay(self, peer: PeerInfo, message: Message) -> None:
        self.node.switch.broadcast(message, exclude=peer.node_id)

    # --- txs, evidence, status ------------------------------------------------------------

    async def _on_txs(self, raws: tuple[bytes, ...]) -> None:
        """Admit gossiped txs in one batch; forged or undecodable ones cost the sender."""
        results = await asyncio.gather(*(self.node.admission.submit(raw) for raw in raws),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, DecodeError | InvalidTxSignature):
                raise Misbehaviour(f"invalid tx: {result}")
            if isinstance(result, BaseException) and not isinstance(result, MempoolError):
                raise result
            # MempoolError: known, outbid or out of nonce order: normal in gossip

    def _on_evidence(self, peer: PeerInfo, message: EvidenceMsg) -> None:
        try:
            added = self.node.add_evidence(message.evidence)
        except InvalidEvidence as exc:
            raise Misbehaviour(f"invalid evidence: {exc}", ban=False) from exc
        if added:
            self._relay(peer, message)

    def _on_status(self, peer: PeerInfo, status: StatusMsg) -> None:
        """Note a peer's claim; probe it at once if it claims two heights past ours."""
        node = self.node
        if node.syncer is None:
            return
        node.syncer.on_status(peer.node_id, status)
        if status.height <= node.head.height:
            self._ahead_since.pop(peer.node_id, None)
            return
        self._ahead_since.setdefault(peer.node_id, time.monotonic())
        if status.height >= node.head.height + 2:
            node.syncer.probe(peer.node_id)
        else:
            self.check_behind()

    def check_behind(self) -> None:
        """Probe each peer that has stayed ahead of our head for BEHIND_GRACE_S.

        A peer one block ahead usually means it decided a moment before us; only
        if that lasts do we ask it for the block instead of waiting for the votes.
        The probe stops nothing: the syncer cues a catch-up only if the peer serves
        the block with a commit that verifies.
        """
        node = self.node
        if node.syncer is None:
            return
        now = time.monotonic()
        statuses = {peer.node_id: peer.status for peer in node.switch.peers()}
        for peer_id, since in sorted(self._ahead_since.items()):
            status = statuses.get(peer_id)
            if status is None or status.height <= node.head.height:
                del self._ahead_since[peer_id]
            elif now - since > BEHIND_GRACE_S:
                node.syncer.probe(peer_id)


def local_status(node: Any) -> StatusMsg:
    """Our committed height, consensus round and step, and the lowest block we serve."""
    engine = node.engine
    return StatusMsg(height=node.head.height, round=engine.round, step=engine.step,
                     base=1 if node.head.height else 0)


def round_messages(node: Any) -> list[Message]:
    """The current round's proposal and the votes we hold for this and the last round."""
    snapshot = node.driver.snapshot if node.driver is not None else None
    if snapshot is None or snapshot.height != node.head.height + 1:
        return []
    messages: list[Message] = [] if snapshot.proposal is None else [snapshot.proposal]
    messages.extend(VoteMsg(vote=v) for v in snapshot.votes)
    return messages


def round_state(node: Any) -> RoundStateMsg | None:
    """Our round's proposal and votes in one direct message, for a peer stuck in it."""
    snapshot = node.driver.snapshot if node.driver is not None else None
    if snapshot is None or snapshot.height != node.head.height + 1:
        return None
    proposals = () if snapshot.proposal is None else (snapshot.proposal,)
    return RoundStateMsg(proposals=proposals, votes=snapshot.votes[:MAX_ROUND_STATE_VOTES])


def catch_up_items(status: StatusMsg, head_height: int, snapshot: Any,
                   commit_votes: tuple[SignedVote, ...]) -> list[CatchUpItem]:
    """What a peer in `status` may lack of what we hold, by the rule:

    - a peer a height behind us lacks our last block's precommits (`commit_votes`);
    - a peer at our height in round r lacks our proposal if it is r's and the peer
      is still in its propose step; it lacks our votes of rounds after r, and those
      of r that its step waits for (prevotes until it precommitted, precommits always).
    Peers elsewhere (ahead, or further behind: block sync's job) lack nothing we send.
    """
    if status.height + 1 == head_height:
        return list(commit_votes)
    if (status.height != head_height or snapshot is None
            or snapshot.height != head_height + 1):
        return []
    items: list[CatchUpItem] = []
    proposal = snapshot.proposal
    if (proposal is not None and proposal.proposal.proposal.round == status.round
            and status.step == STEP_PROPOSE):
        items.append(proposal)
    for vote in snapshot.votes:
        later = vote.vote.round > status.round
        waited = vote.vote.round == status.round and (
            vote.vote.vote_type != VOTE_PREVOTE or status.step <= STEP_PREVOTE)
        if later or waited:
            items.append(vote)
    return items


def last_commit_votes(node: Any) -> tuple[SignedVote, ...]:
    """The precommits of our last block's commit, as the votes they are."""
    store = getattr(node, "store", None)
    commit = store.get_commit(node.head.height) if store is not None and node.head.height else None
    if commit is None:
        return ()
    return tuple(SignedVote(vote=precommit_for(commit, sig.validator), signature=sig.signature)
                 for sig in commit.signatures)


def resend_interval_s(item: CatchUpItem) -> float:
    """RESEND_S, plus a proposal's share of CATCH_UP_BYTES_PER_S (big blocks go rarely)."""
    if isinstance(item, ProposalMsg):
        return RESEND_S + len(item.block) / CATCH_UP_BYTES_PER_S
    return RESEND_S


def _item_key(item: CatchUpItem) -> Any:
    """A proposal is known by its signed proposal (hashing the block bytes is no help)."""
    return item.proposal if isinstance(item, ProposalMsg) else item


def regossip(node: Any) -> None:
    """Periodic duty: announce status, resend round messages, probe peers that are ahead
    (and count the probes they left unanswered as failures)."""
    switch = node.switch
    if switch is None:
        return
    switch.broadcast(local_status(node))
    for message in round_messages(node):
        switch.broadcast(message)
    node.peers_handler.help_stuck_peers()
    if node.syncer is not None:
        node.syncer.expire_probes()
    node.peers_handler.check_behind()
