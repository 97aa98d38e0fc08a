"""The consensus driver: runs the BFT engine inside a node.

One task handles every input in arrival order: peer proposals and votes, fired
timeouts, height starts and catch-ups. Received inputs are written to the WAL
before the engine sees them, so a restarted node can replay its unfinished
height; own proposals and votes are written to the WAL with fsync (the signer
has already fsynced its sign state) before they leave the node. A decision is
committed in one store batch, the height is ended in the WAL, and the next
height starts `block_time_ms` after the previous one started.

The engine runs on a worker thread so RPC and gossip keep flowing while a block
executes; only this task ever calls it, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from chain.codec import decode, encode
from chain.errors import DecodeError
from chain.hashing import sha256
from chain.records import Block, SignedProposal, SignedVote, block_hash
from chain.signing import sign_vote
from consensus.engine import (
    BroadcastProposal,
    BroadcastVote,
    Decide,
    Engine,
    FoundEvidence,
    Output,
    ScheduleTimeout,
    Timeout,
)
from consensus.errors import InvalidMessage
from consensus.wal import WAL, WalProposal, WalTimeout, WalVote, encode_frame, segment_paths
from p2p.messages import Message, ProposalMsg, VoteMsg

log = logging.getLogger("gannet.consensus")
INBOX_LIMIT = 20_000


class Network(Protocol):
    """What the driver needs from the p2p switch."""

    def broadcast(self, message: Message, exclude: bytes | None = None) -> int: ...

    def ban(self, peer_id: bytes, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PeerProposal:
    peer: bytes | None
    proposal: SignedProposal
    block: Block
    raw: bytes


@dataclass(frozen=True, slots=True)
class PeerVote:
    peer: bytes | None
    vote: SignedVote


@dataclass(frozen=True, slots=True)
class TimerFired:
    timeout: Timeout


@dataclass(frozen=True, slots=True)
class StartHeight:
    height: int


@dataclass(frozen=True, slots=True)
class CatchUp:
    pass


Input = PeerProposal | PeerVote | TimerFired | StartHeight | CatchUp


@dataclass(frozen=True, slots=True)
class RoundSnapshot:
    """What the engine holds for its current round: for re-gossip and catch-up."""

    height: int
    round: int
    step: int
    proposal: ProposalMsg | None
    votes: tuple[SignedVote, ...]


EMPTY_SNAPSHOT = RoundSnapshot(height=0, round=0, step=0, proposal=None, votes=())


class ConsensusDriver:
    """Feeds the engine and carries out its outputs for one node."""

    def __init__(self, node: Any, engine: Engine, wal: WAL, network: Network,
                 block_time_ms: int) -> None:
        self.node = node
        self.engine = engine
        self.wal = wal
        self.network = network
        self.block_time_s = block_time_ms / 1000
        self._inbox: asyncio.Queue[Input] = asyncio.Queue(INBOX_LIMIT)
        self._height_started = time.monotonic()
        self._timers: set[asyncio.TimerHandle] = set()
        self._catching_up = False
        self.snapshot = EMPTY_SNAPSHOT
        if engine.signer is not None:
            engine.signer = ProposalFirstSigner(engine.signer, wal, node.app, self._crash_point)

    # --- inputs ------------------------------------------------------------------

    def submit(self, item: Input) -> bool:
        """Queue an input; False (dropped) when the inbox is full (gossip resends it)."""
        try:
            self._inbox.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("consensus inbox full: dropping %s", type(item).__name__)
            return False
        return True

    def request_catch_up(self) -> None:
        """Fetch blocks peers have committed and we have not, then resume consensus."""
        if not self._catching_up:
            self._catching_up = True
            self.submit(CatchUp())

    # --- life cycle ----------------------------------------------------------------

    async def run(self, stopped: asyncio.Event) -> None:
        """Replay the WAL, start the next height, and handle inputs until `stopped`."""
        _ended, entries = await asyncio.to_thread(self.wal.replay)
        await self._start_height(self.node.head.height + 1)
        await self._replay(entries)
        getter: asyncio.Task | None = None
        stop_waiter = asyncio.ensure_future(stopped.wait())
        try:
            while not stopped.is_set():
                getter = asyncio.ensure_future(self._inbox.get())
                done, _ = await asyncio.wait({getter, stop_waiter},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    break
                await self._handle(getter.result())
                getter = None
        finally:
            for task in (getter, stop_waiter):
                if task is not None and not task.done():
                    task.cancel()
            for timer in self._timers:
                timer.cancel()

    async def _replay(self, entries: list[Any]) -> None:
        """Feed the WAL's entries for the unfinished height back into the engine."""
        height = self.node.head.height + 1
        fed = 0
        for entry in entries:
            item = _input_of(entry)
            if item is None or _height_of(item) != height:
                continue
            await self._handle(item, from_wal=True)
            fed += 1
        if fed:
            log.info("replayed wal height=%d entries=%d round=%d step=%d", height, fed,
                     self.engine.round, self.engine.step)

    # --- handling ------------------------------------------------------------------

    async def _handle(self, item: Input, from_wal: bool = False) -> None:
        if isinstance(item, StartHeight):
            if item.height == self.node.head.height + 1 and item.height > self.engine.height:
                await self._start_height(item.height)
            return
        if isinstance(item, CatchUp):
            await self._catch_up()
            return
        if not from_wal:
            self._log_input(item)
        try:
            outputs = await self._call(self._feed, item)
        except InvalidMessage as exc:
            peer = getattr(item, "peer", None)
            log.warning("invalid consensus message from %s: %s",
                        peer.hex()[:16] if peer else "wal", exc)
            if peer is not None:
                self.network.ban(peer, f"invalid consensus message: {exc}")
            return
        await self._act(outputs)

    def _feed(self, item: Input) -> list[Output]:
        if isinstance(item, PeerProposal):
            if item.block.header.height == self.node.head.height + 1:
                self.node.app.validate_block(item.block, item.raw)  # cached for the engine
            return self.engine.on_proposal(item.proposal, item.block)
        if isinstance(item, PeerVote):
            return self.engine.on_vote(item.vote)
        return self.engine.on_timeout(item.timeout)

    def _log_input(self, item: Input) -> None:
        """Write a received input to the WAL (no fsync: only own messages need one)."""
        if isinstance(item, PeerProposal):
            entry: Any = WalProposal(proposal=item.proposal, block=item.raw, own=0)
        elif isinstance(item, PeerVote):
            entry = WalVote(vote=item.vote, own=0)
        else:
            t = item.timeout
            entry = WalTimeout(height=t.height, round=t.round, step=t.step)
        if _height_of(item) >= self.engine.height:
            self.wal.write(entry)

    async def _start_height(self, height: int) -> None:
        self._height_started = time.monotonic()
        vset, proposer_of = self.node.validators_for_next_height()
        outputs = await self._call(self.engine.start_height, height, vset, proposer_of)
        await self._act(outputs)

    async def _call(self, fn: Callable[..., list[Output]], *args: Any) -> list[Output]:
        """Run one engine call on a worker thread and refresh the round snapshot.

        The snapshot is taken on the same thread right after the call, so other
        tasks read a consistent, immutable view instead of the engine's live state.
        """
        def call() -> tuple[list[Output], RoundSnapshot]:
            outputs = fn(*args)
            return outputs, self._take_snapshot()

        outputs, self.snapshot = await asyncio.to_thread(call)
        return outputs

    def _take_snapshot(self) -> RoundSnapshot:
        engine = self.engine
        rounds = sorted({max(engine.round - 1, 0), engine.round})
        votes = tuple(vote for r in rounds for vote in engine.votes_at(r))
        proposal = None
        current = engine.current_proposal()
        if current is not None:
            executed = self.node.app.executed(current[0].proposal.block_hash)
            if executed is not None:
                proposal = ProposalMsg(proposal=current[0], block=executed.raw)
        return RoundSnapshot(height=engine.height, round=engine.round, step=engine.step,
                             proposal=proposal, votes=votes)

    # --- outputs -------------------------------------------------------------------

    async def _act(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, BroadcastVote):
                height = out.vote.vote.height
                entry: Any = WalVote(vote=out.vote, own=1)
                self._crash_point("after-sign", height)
                self._crash_point("mid-wal", height, torn=entry)
                await asyncio.to_thread(self.wal.write_sync, entry)
                self._crash_point("after-wal", height)
                self.network.broadcast(VoteMsg(vote=out.vote))
                if self.node.equivocate is not None:
                    self._equivocate(out.vote)
            elif isinstance(out, BroadcastProposal):
                height = out.proposal.proposal.height
                raw = self._raw_of(out.block)
                if not self._journaled(out.proposal):
                    self._crash_point("proposal-after-sign", height)
                    await asyncio.to_thread(self.wal.write_sync,
                                            WalProposal(proposal=out.proposal, block=raw, own=1))
                self._crash_point("proposal-after-wal", height)
                self.network.broadcast(ProposalMsg(proposal=out.proposal, block=raw))
            elif isinstance(out, ScheduleTimeout):
                self._schedule(out.timeout, out.duration_ms)
            elif isinstance(out, FoundEvidence):
                self.node.evidence_found(out.evidence)
            elif isinstance(out, Decide):
                await self._decide(out)

    def _journaled(self, signed: SignedProposal) -> bool:
        """Whether the signer already wrote this own proposal to the WAL."""
        signer = self.engine.signer
        return isinstance(signer, ProposalFirstSigner) and signer.journaled == signed

    def _crash_point(self, point: str, height: int, torn: Any = None) -> None:
        """TEST FAULT: die here (as kill -9 would) when GANNET_FAULT_CRASH names this point
        and height. With `torn`, first append the first half of that entry's WAL frame,
        unsynced: a write the crash cut short."""
        crash = self.node.crash_at
        if crash is None or not crash.applies(point, height):
            return
        log.warning("TEST FAULT: crashing at %s height=%d", point, height)
        if torn is not None:
            frame = encode_frame(torn)
            with open(segment_paths(self.wal.directory)[-1], "ab") as segment:
                segment.write(frame[:len(frame) // 2])  # the WAL handle flushed all before it
        os._exit(CRASH_EXIT_CODE)

    def _equivocate(self, signed: SignedVote) -> None:
        """TEST FAULT: also send a conflicting vote, signed around the double-sign guard."""
        vote = signed.vote
        if not self.node.equivocate.applies(vote.height):
            return
        other = sha256(b"equivocation" + vote.block_hash) if vote.block_hash else sha256(b"x")
        conflicting = sign_vote(self.node.validator_key, self.node.chain_id,
                                replace(vote, block_hash=other))
        log.warning("TEST FAULT: equivocating at height=%d round=%d type=%d", vote.height,
                    vote.round, vote.vote_type)
        self.network.broadcast(VoteMsg(vote=conflicting))

    def _raw_of(self, block: Block) -> bytes:
        executed = self.node.app.executed(block_hash(block))
        return executed.raw if executed is not None else encode(block)

    def _schedule(self, timeout: Timeout, duration_ms: int) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(handle)
            self.submit(TimerFired(timeout))

        handle = loop.call_later(duration_ms / 1000, fire)
        self._timers.add(handle)

    async def _decide(self, decision: Decide) -> None:
        height = decision.block.header.height
        if height != self.node.head.height + 1:
            return  # a catch-up committed this height already
        self._crash_point("before-commit-batch", height)
        await self.node.commit_decided(decision.block, decision.commit)
        self._crash_point("after-commit-batch", height)
        await asyncio.to_thread(self.wal.end_height, height)
        self._after_height()

    def _after_height(self) -> None:
        """Start the next height one block time after this one started."""
        next_height = self.node.head.height + 1
        elapsed = time.monotonic() - self._height_started
        delay = max(0.0, self.block_time_s - elapsed)
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(handle)
            self.submit(StartHeight(next_height))

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    async def _catch_up(self) -> None:
        before = self.node.head.height
        try:
            await self.node.syncer.sync_until_caught_up(settle_s=0.2)
        finally:
            self._catching_up = False
        after = self.node.head.height
        if after > before:
            log.info("caught up height=%d (+%d blocks)", after, after - before)
            await asyncio.to_thread(self.wal.end_height, after)
            await self._start_height(after + 1)


class ProposalFirstSigner:
    """The validator's signer as the engine sees it: an own proposal goes to the WAL
    (fsynced, with its block) as soon as it is signed, before the engine signs anything
    after it - its own prevote for that block comes in the same engine call.

    Without that, a crash after the prevote was signed but before the proposal reached
    the WAL leaves a signed prevote for a block that exists nowhere: after a restart
    the node can neither propose it again (the rebuilt block differs, so the signer
    refuses) nor prevote anything else in that round, and with exactly +2/3 of the
    power up the round never ends. With the proposal in the WAL, the replay hands the
    engine its block back and the signer its stored prevote.

    Only the driver's task writes the WAL, and it waits on the engine call that signs
    here, so this write never races another.
    """

    def __init__(self, inner: Any, wal: WAL, app: Any,
                 crash_point: Callable[[str, int], None]) -> None:
        self._inner = inner
        self._wal = wal
        self._app = app
        self._crash_point = crash_point
        self.address: bytes = inner.address
        self.journaled: SignedProposal | None = None  # the last proposal written here

    def sign_vote(self, vote: Any) -> SignedVote:
        return self._inner.sign_vote(vote)

    def sign_proposal(self, proposal: Any) -> SignedProposal:
        """Sign (or DoubleSignRefused), then journal it if its block was built or checked
        here (else the driver journals it before sending, as any own message)."""
        signed = self._inner.sign_proposal(proposal)
        executed = self._app.executed(proposal.block_hash)
        if executed is not None:
            self._crash_point("proposal-after-sign", proposal.height)
            self._wal.write_sync(WalProposal(proposal=signed, block=executed.raw, own=1))
            self.journaled = signed
        return signed


@dataclass(frozen=True, slots=True)
class EquivocationFault:
    """Test-only fault: the heights at which this validator double-signs on purpose.

    Set by the environment variable GANNET_FAULT_EQUIVOCATE: "all", or heights
    separated by commas. A real validator never sets it; the node logs a warning
    at start when it is set.
    """

    heights: frozenset[int] | None  # None: every height

    @classmethod
    def from_env(cls, value: str | None) -> EquivocationFault | None:
        if not value:
            return None
        if value.strip() == "all":
            return cls(None)
        try:
            return cls(frozenset(int(part) for part in value.split(",")))
        except ValueError as exc:
            raise ValueError(f"{EQUIVOCATE_ENV} must be 'all' or heights like '5,9', "
                             f"got {value!r}") from exc

    def applies(self, height: int) -> bool:
        return self.heights is None or height in self.heights


EQUIVOCATE_ENV = "GANNET_FAULT_EQUIVOCATE"
CRASH_ENV = "GANNET_FAULT_CRASH"
# Where GANNET_FAULT_CRASH can stop a node, in the order a height meets them. The vote
# points fire at the node's first own vote of the height, the proposal points at its first
# own proposal, the commit points at its decision:
# - after-sign: the vote is signed and the sign state fsynced; nothing in the WAL, nothing sent.
# - mid-wal: half of the vote's WAL frame is written (not fsynced): a torn tail.
# - after-wal: the vote is durable in the WAL; nothing sent.
# - proposal-after-sign: an own proposal is signed, nothing in the WAL (nothing else signed).
# - proposal-after-wal: the proposal is durable in the WAL (and the prevote for it that the
#   engine signs in the same call is signed); nothing sent.
# - before-commit-batch: decided, nothing of the block in the store.
# - after-commit-batch: block, commit, receipts, state and head are durable; the WAL has not
#   ended the height.
# There is no point "between block save and state save": `BlockStore.commit_block` writes
# the block, its commit, the tx index, every state write and the new head in ONE synced,
# transactional write batch, so a crash leaves all of them or none of them on disk.
CRASH_POINTS = ("after-sign", "mid-wal", "after-wal", "proposal-after-sign",
                "proposal-after-wal", "before-commit-batch", "after-commit-batch")
CRASH_EXIT_CODE = 99


@dataclass(frozen=True, slots=True)
class CrashFault:
    """Test-only fault: exit with CRASH_EXIT_CODE at `point` of any of `heights`."""

    point: str
    heights: frozenset[int]

    def applies(self, point: str, height: int) -> bool:
        return point == self.point and height in self.heights

    def __str__(self) -> str:
        return f"{self.point}:{','.join(map(str, sorted(self.heights)))}"


def crash_point_from_env(value: str | None) -> CrashFault | None:
    """Test-only fault GANNET_FAULT_CRASH="<point>:<height>[,<height>...]": exit (as kill -9
    would, status CRASH_EXIT_CODE) at `point` (one of CRASH_POINTS) of the first of those
    heights the node reaches. A restart with the same value would crash again at the same
    height when it replays it: restart with the heights still to come."""
    if not value:
        return None
    point, _, heights = value.partition(":")
    parts = heights.split(",")
    if point not in CRASH_POINTS or not all(part.isdigit() for part in parts):
        raise ValueError(f"{CRASH_ENV} must be <point>:<height>[,<height>...] with point one "
                         f"of {', '.join(CRASH_POINTS)}; got {value!r}")
    return CrashFault(point, frozenset(int(part) for part in parts))


def _input_of(entry: Any) -> Input | None:
    """The driver input a WAL entry replays as (None for height markers)."""
    if isinstance(entry, WalProposal):
        with contextlib.suppress(DecodeError):  # a CRC-valid but unreadable block: skip it
            return PeerProposal(peer=None, proposal=entry.proposal,
                                block=decode(Block, entry.block), raw=entry.block)
        return None
    if isinstance(entry, WalVote):
        return PeerVote(peer=None, vote=entry.vote)
    if isinstance(entry, WalTimeout):
        return TimerFired(Timeout(height=entry.height, round=entry.round, step=entry.step))
    return None


def _height_of(item: Input) -> int:
    if isinstance(item, PeerProposal):
        return item.proposal.proposal.height
    if isinstance(item, PeerVote):
        return item.vote.vote.height
    if isinstance(item, TimerFired):
        return item.timeout.height
    return -1

