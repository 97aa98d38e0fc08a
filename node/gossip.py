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
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from chain.codec import decode
from chain.errors import DecodeError, InvalidTxSignature, MempoolError
from chain.records import Block, SignedProposal, SignedVote, ValidatorSet, block_hash
from chain.signing import verify_proposal_signature, verify_vote_signature
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


class NodePeers:
    """The node's `p2p.switch.PeerHandler`."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._keys_height = -1
        self._keys: dict[bytes, bytes] = {}
        self._proposers: Any = None
        self._ahead_since: dict[bytes, float] = {}
        self._stuck_since: dict[bytes, tuple[tuple[int, int, int] | None, float]] = {}

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

    def on_disconnected(self, peer: PeerInfo) -> None:
        self._ahead_since.pop(peer.node_id, None)
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
        if relay and checked:
            self._relay(peer, message)
        if self.node.driver is not None:
            self.node.driver.submit(PeerProposal(peer=peer.node_id, proposal=message.proposal,
                                                 block=block, raw=message.block))

    def _on_round_state(self, peer: PeerInfo, message: RoundStateMsg) -> None:
        """A peer's round, sent because we looked stuck: take each part, relay nothing."""
        for proposal in message.proposals:
            self._on_proposal(peer, proposal, relay=False)
        for vote in message.votes:
            self._on_vote(peer, VoteMsg(vote=vote), relay=False)

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
