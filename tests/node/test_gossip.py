"""The node's peer handler: stuck peers get our round directly; forged data does not pass."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.records import VOTE_PREVOTE, Validator, ValidatorSet, Vote
from chain.signing import sign_vote
from node import gossip
from node.consensus import PeerVote, RoundSnapshot
from node.gossip import NodePeers
from p2p.errors import Misbehaviour
from p2p.messages import RoundStateMsg, StatusMsg, VoteMsg
from p2p.switch import PeerInfo

CHAIN = "gossip-test"
KEY = SigningKey.from_seed(bytes(range(32)))
ADDRESS = address_from_public_key(KEY.public_key)
VSET = ValidatorSet(validators=(Validator(address=ADDRESS, public_key=KEY.public_key,
                                          power=10, operator=ADDRESS),))


def _vote(height: int, round_: int = 0) -> Any:
    return sign_vote(KEY, CHAIN, Vote(vote_type=VOTE_PREVOTE, height=height, round=round_,
                                      block_hash=b"", validator=ADDRESS))


@dataclass
class FakeSwitch:
    peer_list: list[PeerInfo] = field(default_factory=list)
    sent: list[tuple[bytes, Any]] = field(default_factory=list)
    broadcasts: list[Any] = field(default_factory=list)

    def peers(self) -> list[PeerInfo]:
        return self.peer_list

    def send(self, peer_id: bytes, message: Any) -> bool:
        self.sent.append((peer_id, message))
        return True

    def broadcast(self, message: Any, exclude: bytes | None = None) -> int:
        self.broadcasts.append(message)
        return 1


@dataclass
class FakeDriver:
    snapshot: RoundSnapshot
    queued: list[Any] = field(default_factory=list)
    catch_ups: int = 0

    def submit(self, item: Any) -> bool:
        self.queued.append(item)
        return True

    def request_catch_up(self) -> None:
        self.catch_ups += 1


@dataclass
class FakeHead:
    height: int


@dataclass
class FakeEngine:
    height: int


class FakeNode:
    chain_id = CHAIN
    syncer: Any = None

    def __init__(self, head: int) -> None:
        self.head = FakeHead(head)
        self.engine = FakeEngine(head + 1)
        self.switch = FakeSwitch()
        self.driver = FakeDriver(RoundSnapshot(height=head + 1, round=0, step=2,
                                               proposal=None, votes=(_vote(head + 1),)))

    def validators_for_next_height(self) -> tuple[ValidatorSet, Any]:
        return VSET, lambda _round: ADDRESS


def _peer(status: StatusMsg | None) -> PeerInfo:
    return PeerInfo(node_id=b"p" * 32, host="127.0.0.1", port=1, outbound=True, moniker="p",
                    connected_at=0.0, score=0, status=status)


def test_a_peer_stuck_in_our_round_gets_it_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    node = FakeNode(head=5)
    handler = NodePeers(node)
    node.switch.peer_list = [_peer(StatusMsg(height=5, round=0, step=2, base=1))]
    clock = [100.0]
    monkeypatch.setattr(gossip.time, "monotonic", lambda: clock[0])
    handler.help_stuck_peers()
    assert node.switch.sent == []  # first sight of this status
    clock[0] += gossip.STUCK_S - 0.1
    handler.help_stuck_peers()
    assert node.switch.sent == []
    clock[0] += 0.2
    handler.help_stuck_peers()
    ((peer_id, message),) = node.switch.sent
    assert peer_id == b"p" * 32
    assert isinstance(message, RoundStateMsg) and message.votes == node.driver.snapshot.votes


def test_a_peer_that_moves_on_or_is_elsewhere_gets_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    node = FakeNode(head=5)
    handler = NodePeers(node)
    clock = [0.0]
    monkeypatch.setattr(gossip.time, "monotonic", lambda: clock[0])
    for step in (1, 2, 3):  # progresses every tick
        node.switch.peer_list = [_peer(StatusMsg(height=5, round=0, step=step, base=1))]
        handler.help_stuck_peers()
        clock[0] += gossip.STUCK_S
    node.switch.peer_list = [_peer(StatusMsg(height=9, round=0, step=1, base=1))]  # ahead
    for _ in range(3):
        handler.help_stuck_peers()
        clock[0] += gossip.STUCK_S
    assert node.switch.sent == []


def test_round_state_votes_are_checked_and_queued_without_relay() -> None:
    node = FakeNode(head=5)
    handler = NodePeers(node)
    peer = _peer(None)
    good = _vote(6, round_=1)  # one we do not hold yet
    asyncio.run(handler.on_message(peer, RoundStateMsg(proposals=(), votes=(good,))))
    assert node.driver.queued == [PeerVote(peer=peer.node_id, vote=good)]
    assert node.switch.broadcasts == []
    forged = type(good)(vote=good.vote, signature=bytes(64))
    with pytest.raises(Misbehaviour):
        asyncio.run(handler.on_message(peer, RoundStateMsg(proposals=(), votes=(forged,))))


def test_votes_outside_the_next_two_heights_are_dropped_silently() -> None:
    node = FakeNode(head=5)
    handler = NodePeers(node)
    for height in (3, 5, 8):
        asyncio.run(handler.on_message(_peer(None), VoteMsg(vote=_vote(height))))
    assert node.driver.queued == [] and node.switch.broadcasts == []


class FakeAdmission:
    def __init__(self, outcomes: dict[bytes, BaseException | None]) -> None:
        self.outcomes = outcomes
        self.seen: list[bytes] = []

    async def submit(self, raw: bytes) -> bytes:
        self.seen.append(raw)
        outcome = self.outcomes.get(raw)
        if outcome is not None:
            raise outcome
        return b"h" * 32


def test_gossiped_tx_batches_are_admitted_and_forgeries_cost_the_sender() -> None:
    from chain.errors import InvalidTxSignature, TxAlreadyKnown
    from p2p.messages import TxsMsg

    node = FakeNode(head=5)
    node.admission = FakeAdmission({b"known": TxAlreadyKnown("known"),
                                    b"forged": InvalidTxSignature("bad signature")})
    handler = NodePeers(node)
    asyncio.run(handler.on_message(_peer(None), TxsMsg(txs=(b"new", b"known"))))
    assert node.admission.seen == [b"new", b"known"]
    with pytest.raises(Misbehaviour, match="bad signature"):
        asyncio.run(handler.on_message(_peer(None), TxsMsg(txs=(b"ok", b"forged", b"ok2"))))
    assert node.admission.seen[-3:] == [b"ok", b"forged", b"ok2"]  # the good ones still count


def test_only_votes_checked_here_are_relayed() -> None:
    """A vote two heights ahead cannot be checked yet: queued, never relayed, since a peer a
    block ahead would check it and ban us for a forgery we passed on (found by
    tests/e2e/test_rogue_peer.py: honest validators banned each other and the chain halted)."""
    node = FakeNode(head=5)
    handler = NodePeers(node)
    forged_ahead = type(_vote(7))(vote=_vote(7).vote, signature=bytes(64))
    asyncio.run(handler.on_message(_peer(None), VoteMsg(vote=forged_ahead)))
    asyncio.run(handler.on_message(_peer(None), VoteMsg(vote=_vote(7))))
    assert node.switch.broadcasts == []
    assert [item.vote for item in node.driver.queued] == [forged_ahead, _vote(7)]
    asyncio.run(handler.on_message(_peer(None), VoteMsg(vote=_vote(6))))
    assert node.switch.broadcasts == [VoteMsg(vote=_vote(6))]


def test_a_signed_proposal_carrying_another_block_is_refused_not_relayed() -> None:
    from chain.records import NO_POL_ROUND, Proposal, block_hash
    from chain.signing import sign_proposal
    from p2p.messages import ProposalMsg
    from tests.consensus.sim import make_block

    node = FakeNode(head=5)
    handler = NodePeers(node)
    block = make_block(6, 0, ADDRESS, bytes(32), chain_id=CHAIN)
    signed = sign_proposal(KEY, CHAIN, Proposal(height=6, round=0, pol_round=NO_POL_ROUND,
                                                block_hash=block_hash(block), proposer=ADDRESS))
    for other in (make_block(6, 0, ADDRESS, bytes(32), salt=b"x", chain_id=CHAIN),
                  make_block(7, 0, ADDRESS, bytes(32), chain_id=CHAIN)):
        with pytest.raises(Misbehaviour, match="carries block") as info:
            asyncio.run(handler.on_message(_peer(None),
                                           ProposalMsg(proposal=signed, block=encode(other))))
        assert info.value.ban
    assert node.switch.broadcasts == [] and node.driver.queued == []
    real = ProposalMsg(proposal=signed, block=encode(block))
    asyncio.run(handler.on_message(_peer(None), real))
    assert node.switch.broadcasts == [real] and len(node.driver.queued) == 1


# --- status claims: probed, never a catch-up on their own --------------------------------------


def _node_with_syncer() -> tuple[FakeNode, list[bytes]]:
    """A node at height 0 whose syncer checks probed blocks against a really signed chain."""
    from p2p.sync import BlockSyncer
    from tests.p2p.sync_fakes import Replica, signed_chain

    node = FakeNode(head=0)
    replica = Replica(signed_chain())
    bans: list[bytes] = []
    node.syncer = BlockSyncer(node.switch.send, lambda peer, _reason: bans.append(peer),
                              replica.apply, replica.height, show_progress=False,
                              verify=replica.verify, on_behind=node.driver.request_catch_up)
    return node, bans


FAR = StatusMsg(height=2**63, round=0, step=1, base=1)


def test_a_far_future_status_gets_one_probe_and_no_catch_up() -> None:
    from p2p.messages import BlockRequest, NoBlock

    node, bans = _node_with_syncer()
    handler = NodePeers(node)
    peer = _peer(FAR)
    node.switch.peer_list = [peer]
    for _ in range(3):
        asyncio.run(handler.on_message(peer, FAR))
    assert node.switch.sent == [(peer.node_id, BlockRequest(height=1))]  # one at a time
    assert node.driver.catch_ups == 0 and node.driver.queued == []
    asyncio.run(handler.on_message(peer, NoBlock(height=1)))  # it cannot serve its claim
    asyncio.run(handler.on_message(peer, FAR))
    assert len(node.switch.sent) == 1 and node.syncer.standing(peer.node_id) == "marked"
    assert node.driver.catch_ups == 0 and bans == []


def test_a_peer_that_serves_our_next_block_with_its_commit_cues_a_catch_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2p.messages import BlockRequest
    from tests.p2p.sync_fakes import signed_chain

    node, bans = _node_with_syncer()
    handler = NodePeers(node)
    one_ahead = StatusMsg(height=1, round=0, step=1, base=1)
    peer = _peer(one_ahead)
    node.switch.peer_list = [peer]
    clock = [50.0]
    monkeypatch.setattr(gossip.time, "monotonic", lambda: clock[0])
    asyncio.run(handler.on_message(peer, one_ahead))
    handler.check_behind()
    assert node.switch.sent == []  # one block ahead: it may just have decided first
    clock[0] += gossip.BEHIND_GRACE_S + 0.1
    handler.check_behind()
    assert node.switch.sent == [(peer.node_id, BlockRequest(height=1))]
    assert node.driver.catch_ups == 0
    asyncio.run(handler.on_message(peer, signed_chain().response(1)))
    assert node.driver.catch_ups == 1 and bans == []
    assert node.syncer.standing(peer.node_id) == "backed"


def test_a_status_is_ignored_without_a_syncer() -> None:
    node = FakeNode(head=5)
    handler = NodePeers(node)
    asyncio.run(handler.on_message(_peer(FAR), FAR))
    assert node.switch.sent == [] and node.driver.catch_ups == 0


# --- catch-up: a lagging peer gets what its step lacks, promptly and boundedly -----------------


def _precommit(height: int, round_: int = 0) -> Any:
    from chain.records import VOTE_PRECOMMIT

    return sign_vote(KEY, CHAIN, Vote(vote_type=VOTE_PRECOMMIT, height=height, round=round_,
                                      block_hash=b"", validator=ADDRESS))


def _proposal_msg(height: int, round_: int = 0) -> Any:
    from chain.records import NO_POL_ROUND, Proposal, block_hash
    from chain.signing import sign_proposal
    from p2p.messages import ProposalMsg
    from tests.consensus.sim import make_block

    block = make_block(height, round_, ADDRESS, bytes(32), chain_id=CHAIN)
    signed = sign_proposal(KEY, CHAIN, Proposal(height=height, round=round_,
                                                pol_round=NO_POL_ROUND,
                                                block_hash=block_hash(block), proposer=ADDRESS))
    return ProposalMsg(proposal=signed, block=encode(block))


def _snapshot(height: int, round_: int, votes: tuple[Any, ...], proposal: Any) -> RoundSnapshot:
    return RoundSnapshot(height=height, round=round_, step=3, proposal=proposal, votes=votes)


def test_catch_up_items_follow_the_peers_round_and_step() -> None:
    proposal = _proposal_msg(6, round_=1)
    votes = (_vote(6, 0), _precommit(6, 0), _vote(6, 1), _precommit(6, 1))
    snap = _snapshot(6, 1, votes, proposal)
    commit = (_precommit(5),)

    def items(height: int, round_: int, step: int) -> list[Any]:
        status = StatusMsg(height=height, round=round_, step=step, base=1)
        return gossip.catch_up_items(status, 5, snap, commit)

    # same round, still proposing: the proposal and every vote of the round
    assert items(5, 1, 1) == [proposal, _vote(6, 1), _precommit(6, 1)]
    # prevoted: no proposal; precommitted: no prevotes of its round either
    assert items(5, 1, 2) == [_vote(6, 1), _precommit(6, 1)]
    assert items(5, 1, 3) == [_precommit(6, 1)]
    # an earlier round: its waited-for votes and all of the later round, not our proposal
    assert items(5, 0, 3) == [_precommit(6, 0), _vote(6, 1), _precommit(6, 1)]
    assert items(5, 2, 1) == []  # ahead in rounds
    assert items(4, 0, 3) == list(commit)  # a height behind: our last block's precommits
    assert items(3, 0, 3) == [] and items(6, 0, 1) == []  # block sync's job / ahead


def _catch_up_node() -> tuple[FakeNode, PeerInfo]:
    node = FakeNode(head=5)
    node.engine.round, node.engine.step = 0, 2  # type: ignore[attr-defined]
    node.driver.snapshot = _snapshot(6, 0, (_vote(6), _precommit(6)), None)
    peer = _peer(StatusMsg(height=5, round=0, step=2, base=1))
    node.switch.peer_list = [peer]
    return node, peer


def test_a_lagging_peer_gets_what_it_lacks_after_lag_and_at_most_once_per_resend() -> None:
    node, peer = _catch_up_node()
    handler = NodePeers(node)
    t = 100.0
    handler.catch_up_peers(t)
    assert node.switch.sent == []  # the peer's step and our votes are new: gossip's turn
    assert [type(m).__name__ for m in node.switch.broadcasts] == ["StatusMsg"]
    handler.catch_up_peers(t + gossip.LAG_S)
    ((peer_id, message),) = node.switch.sent
    assert peer_id == peer.node_id
    assert message == RoundStateMsg(proposals=(), votes=(_vote(6), _precommit(6)))
    handler.catch_up_peers(t + gossip.LAG_S + gossip.RESEND_S / 2)
    assert len(node.switch.sent) == 1  # sent a moment ago
    handler.catch_up_peers(t + gossip.LAG_S + gossip.RESEND_S + 0.001)
    assert len(node.switch.sent) == 2  # still lagging: maybe that copy was lost too
    assert len(node.switch.broadcasts) == 1  # our status did not change: announced once


def test_a_peer_that_moves_on_or_sent_us_the_vote_is_not_sent_it() -> None:
    node, peer = _catch_up_node()
    handler = NodePeers(node)
    handler.catch_up_peers(0.0)
    asyncio.run(handler.on_message(peer, VoteMsg(vote=_precommit(6))))  # it has this one
    moved = _peer(StatusMsg(height=5, round=0, step=3, base=1))
    node.switch.peer_list = [moved]
    handler.catch_up_peers(gossip.LAG_S)  # its new step is fresh
    assert node.switch.sent == []
    handler.catch_up_peers(2 * gossip.LAG_S)
    assert node.switch.sent == []  # precommitted: prevotes are not waited for; it has ours


def test_catch_up_votes_per_tick_are_bounded() -> None:
    node, _ = _catch_up_node()
    votes = tuple(_vote(6, r) for r in range(1, gossip.MAX_CATCH_UP_VOTES + 10))
    node.driver.snapshot = _snapshot(6, 1, votes, None)
    handler = NodePeers(node)
    handler.catch_up_peers(0.0)
    handler.catch_up_peers(gossip.LAG_S)
    ((_, first),) = node.switch.sent
    assert first.votes == votes[:gossip.MAX_CATCH_UP_VOTES]
    handler.catch_up_peers(gossip.LAG_S + 0.01)
    assert node.switch.sent[1][1].votes == votes[gossip.MAX_CATCH_UP_VOTES:]


def test_round_state_parts_we_hold_are_not_queued_again() -> None:
    node = FakeNode(head=5)
    handler = NodePeers(node)
    held = node.driver.snapshot.votes[0]
    asyncio.run(handler.on_message(_peer(None), RoundStateMsg(proposals=(), votes=(held,))))
    assert node.driver.queued == []


def test_a_closed_handler_never_ticks_again() -> None:
    """Shutdown closes the handler first: its catch-up timer must not read a closed store."""
    node = FakeNode(head=5)
    peers = NodePeers(node)
    calls: list[float] = []
    peers.catch_up_peers = calls.append  # type: ignore[method-assign]
    peers._tick()
    assert len(calls) == 1  # open: a tick catches peers up
    peers.close()
    peers._tick()  # a timer that fired anyway does nothing
    assert len(calls) == 1 and peers._ticker is None
