"""Block sync: catch up from peers by fetching committed blocks and their commits.

A node behind its peers asks them for blocks by height (`BlockRequest`), up to
`window` heights past its own, spread over the peers whose status says they serve
that height, at most `max_per_peer` outstanding each. A response is checked for
shape here: the block decodes strictly, it is the requested height, and the
commit names exactly that block at that height. Whether the commit carries +2/3
of the validator set's power, and whether the block applies, is the node's
`apply` callback's job, since only the node holds the state.

Blocks are applied strictly in height order. A peer that serves something invalid
is penalised, everything it sent is dropped and its heights go to other peers; a
peer that answers `NoBlock` or stays silent past the request timeout is not asked
for that height again until the timeout has passed once more. A request (or probe)
unanswered past a round-trip estimate (`RoundTrips`, RFC 6298's) is sent again,
to a claiming peer not asked yet if there is one, each time twice as late, without
marking anyone: on a lossy link one lost message must not cost a request timeout.
An answer from any peer the request went to is taken. A response nobody asked for
is ignored, not penalised: it may be a late answer to a timed-out request.

A height claim is only a claim (CometBFT's blocksync follows the same idea). The
syncer remembers, per peer id and across runs, what the peer's serving showed:

- backed: its last request ended with a block that passed the checks;
- marked: its last request for a height inside its claim ended in `NoBlock` or
  silence past the request timeout, and it served no block after that request went
  (a peer busy serving us may lose a request without losing its standing);
- unproven: never asked.

Claims count (for `is_behind`, `target_height` and the end of a run) only from
backed peers, or, while no connected peer is backed (a node that just started),
from unproven ones; a marked peer's claim never counts. A run asks backed peers;
unproven ones for heights no backed peer claims or all have just failed; marked
ones only for a height someone has just failed (under message loss honest peers
get marked too, and one that serves is backed again). It hands a height in
flight at an unproven peer to a backed one as soon as there is one. A run is
therefore caught up once it has every block the serving peers claim; a peer that
claims heights it cannot serve holds a run only while no peer has served it
anything yet (a node that just started), or, if it served real blocks first, for
a request timeout or two; and then no more.

Outside a run nothing stops: `probe` asks a peer that claims to be ahead for our
next block, and only when it serves that block with a commit the node's `verify`
accepts (+2/3 of the validator set signed it) does the syncer call `on_behind`,
the node's cue to stop consensus and run a sync. A probe that fails marks the
peer; a marked peer is probed again no sooner than `probe_retry_s` later, and a
probe it answers with a verified block makes it backed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from tqdm import tqdm

from chain.codec import decode
from chain.errors import DecodeError
from chain.records import Block, Commit, block_hash
from chain.store import BlockStore
from p2p.messages import BlockRequest, BlockResponse, Message, NoBlock, StatusMsg

log = logging.getLogger("gannet.sync")

PROGRESS_LOG_S = 5.0  # seconds between progress log lines when no bar is shown
MAX_WAIT_S = 1.0  # the driving loop looks at timeouts and progress at least this often
MAX_RECORDS = 4096  # peers whose serving record is remembered (least recently updated go)

Send = Callable[[bytes, Message], bool]
Penalise = Callable[[bytes, str], None]
Apply = Callable[[Block, bytes, Commit], Awaitable[None]]
# Checks the commit of a block at our height + 1: True if it verifies, False if it cannot
# be checked right now (the node is committing a block); raises SyncRejected if it is bad.
Verify = Callable[[Block, Commit], bool]

BACKED = "backed"
MARKED = "marked"
UNPROVEN = "unproven"


class SyncRejected(Exception):
    """A block or commit a peer served is invalid; the peer that served it is penalised."""


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """How hard sync pulls: heights in flight, patience per request, load per peer, and
    how soon a marked peer may be probed again."""

    window: int = 32
    request_timeout_s: float = 5.0
    max_per_peer: int = 8
    probe_retry_s: float = 1.0
    resend_min_s: float = 0.25  # a request is sent again no sooner than this
    resend_initial_s: float = 1.0  # the resend delay before any answer was timed


@dataclass(frozen=True, slots=True)
class _Request:
    """A block request in flight: the peer asked last, when it was first asked, until
    when an answer may come, when it is sent again if none has, how many times it
    went, and every peer it went to (an answer from any of them is taken)."""

    peer: bytes
    asked: float
    deadline: float
    resend_at: float
    sends: int = 1
    asked_of: tuple[bytes, ...] = ()

    def sent_again(self, peer: bytes, resend_at: float) -> _Request:
        asked_of = self.asked_of if peer in self.asked_of else (*self.asked_of, peer)
        return replace(self, peer=peer, resend_at=resend_at, sends=self.sends + 1,
                       asked_of=asked_of)


@dataclass(frozen=True, slots=True)
class _Probe:
    """A probe in flight: the height asked (our height + 1 then), when, its deadline,
    when it is sent again if unanswered, and how many times it went."""

    height: int
    asked: float
    deadline: float
    resend_at: float
    sends: int = 1


class RoundTrips:
    """How long peers take to answer a block request, estimated as RFC 6298 does for
    TCP: a request unanswered after SRTT + 4·RTTVAR (at least `floor_s`) is taken for
    lost and sent again, each time twice as late. Only answers to requests sent once
    are timed (Karn's rule), since a resent one's answer may be to either send.

    A lost message is no reason to doubt a peer: only the request timeout marks one.
    """

    def __init__(self, floor_s: float, initial_s: float) -> None:
        self._floor_s = floor_s
        self._initial_s = initial_s
        self._srtt: float | None = None
        self._rttvar = 0.0

    def sample(self, rtt_s: float) -> None:
        """Fold in the time one request sent once took to be answered."""
        if self._srtt is None:
            self._srtt, self._rttvar = rtt_s, rtt_s / 2
            return
        self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt_s)
        self._srtt = 0.875 * self._srtt + 0.125 * rtt_s

    def resend_after(self, sends: int = 1) -> float:
        """Seconds to wait before sending again a request that has gone `sends` times."""
        base = self._initial_s if self._srtt is None else self._srtt + 4 * self._rttvar
        return max(self._floor_s, base) * 2 ** (sends - 1)


@dataclass(frozen=True, slots=True)
class _Record:
    """How a peer's last request ended: with a good block (`served`) or not, and when."""

    served: bool
    at: float


@dataclass(frozen=True, slots=True)
class _Fetched:
    """A response that passed the shape checks, waiting for its turn to be applied."""

    peer: bytes
    block: Block
    raw: bytes
    commit: Commit


# --- serving and checking one block ---------------------------------------------------


def serve_block_request(store: BlockStore, request: BlockRequest) -> BlockResponse | NoBlock:
    """The stored block at the requested height (its canonical bytes, as stored) and the
    commit that finalised it, or `NoBlock` when the store lacks either."""
    raw = store.get_block_raw(request.height)
    commit = store.get_commit(request.height)
    if raw is None or commit is None:
        return NoBlock(height=request.height)
    return BlockResponse(block=raw, commit=commit)


def check_response(height: int, response: BlockResponse) -> Block:
    """The block a response to a request for `height` carries.

    Raises `SyncRejected` unless the block bytes decode strictly, the block is at
    `height`, and the commit is for `height` and names exactly this block.
    """
    try:
        block = decode(Block, response.block)
    except DecodeError as exc:
        raise SyncRejected(f"block {height} does not decode: {exc}") from exc
    if block.header.height != height:
        raise SyncRejected(f"block height: expected {height}, got {block.header.height}")
    if response.commit.height != height:
        raise SyncRejected(f"commit height: expected {height}, got {response.commit.height}")
    want = block_hash(block)
    if response.commit.block_hash != want:
        raise SyncRejected(f"commit of block {height} names another block: expected "
                           f"{want.hex()}, got {response.commit.block_hash.hex()}")
    return block


# --- the syncer ------------------------------------------------------------------------


class BlockSyncer:
    """Fetches blocks from peers and hands them to the node in height order.

    The node's peer handler feeds it peers' statuses, responses and departures
    (`on_*`), probes peers that claim to be ahead (`probe`, `expire_probes`), and
    `sync_until_caught_up` drives requests and applies blocks. All methods run on
    the node's event loop.
    """

    def __init__(self, send: Send, penalise: Penalise, apply: Apply,
                 our_height: Callable[[], int], config: SyncConfig = SyncConfig(),
                 show_progress: bool | None = None, verify: Verify | None = None,
                 on_behind: Callable[[], None] | None = None) -> None:
        self._send = send
        self._penalise = penalise
        self._apply = apply
        self._our_height = our_height
        self._verify = verify
        self._on_behind = on_behind
        self.config = config
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self.syncing = False
        self._peers: dict[bytes, StatusMsg] = {}
        self._records: OrderedDict[bytes, _Record] = OrderedDict()
        self._probes: dict[bytes, _Probe] = {}
        self._pending: dict[int, _Request] = {}
        self._fetched: dict[int, _Fetched] = {}
        self._failed: dict[int, dict[bytes, float]] = {}  # height -> peer -> when it failed
        self._turn = -1  # round-robin position among equally loaded peers
        self.round_trips = RoundTrips(config.resend_min_s, config.resend_initial_s)
        self._wake = asyncio.Event()

    # --- what peers tell us -------------------------------------------------------------

    def standing(self, peer_id: bytes) -> str:
        """BACKED, MARKED or UNPROVEN: what the peer's serving has shown so far."""
        record = self._records.get(peer_id)
        if record is None:
            return UNPROVEN
        return BACKED if record.served else MARKED

    def _counted(self) -> list[StatusMsg]:
        """The claims that count: backed peers', or unproven ones' while none is backed."""
        by_standing: dict[str, list[StatusMsg]] = {BACKED: [], UNPROVEN: [], MARKED: []}
        for peer_id, status in self._peers.items():
            by_standing[self.standing(peer_id)].append(status)
        return by_standing[BACKED] or by_standing[UNPROVEN]

    @property
    def target_height(self) -> int:
        """The highest committed height a counted claim reports (ours if none is higher)."""
        return max([self._our_height(), *(s.height for s in self._counted())])

    def is_behind(self, margin: int = 1) -> bool:
        """Whether a counted claim is at least our height + margin + 1."""
        ours = self._our_height()
        return any(s.height >= ours + margin + 1 for s in self._counted())

    def on_status(self, peer_id: bytes, status: StatusMsg) -> None:
        """Remember where a peer says it is: which heights it claims to serve."""
        self._peers[peer_id] = status
        self._wake.set()

    def on_block_response(self, peer_id: bytes, response: BlockResponse) -> None:
        """Keep a response to our request for its commit's height; penalise a bad one."""
        height = response.commit.height
        request = self._pending.get(height)
        if request is None or peer_id not in request.asked_of:
            self._on_probe_response(peer_id, response)
            return  # else not asked of this peer: a late or duplicate answer
        del self._pending[height]
        try:
            block = check_response(height, response)
        except SyncRejected as exc:
            self._reject(peer_id, str(exc))
            return
        now = time.monotonic()
        if request.sends == 1:
            self.round_trips.sample(now - request.asked)
        self._note(peer_id, served=True, now=now)
        self._fetched[height] = _Fetched(peer_id, block, response.block, response.commit)
        self._wake.set()

    def on_no_block(self, peer_id: bytes, msg: NoBlock) -> None:
        """A peer lacks a height we asked it for: ask another peer."""
        now = time.monotonic()
        probe = self._probes.get(peer_id)
        if probe is not None and probe.height == msg.height:
            del self._probes[peer_id]
            self._note_failure(peer_id, msg.height, probe.asked, now)
            return
        request = self._pending.get(msg.height)
        if request is None or peer_id not in request.asked_of:
            return
        self._drop_asked(msg.height, request, peer_id)
        self._mark_failed(msg.height, peer_id, now)
        self._note_failure(peer_id, msg.height, request.asked, now)
        self._wake.set()

    def on_peer_gone(self, peer_id: bytes) -> None:
        """Forget a disconnected peer's claim (not its record); its requests in flight go
        to other peers."""
        self._peers.pop(peer_id, None)
        self._probes.pop(peer_id, None)
        for height, request in [(h, r) for h, r in self._pending.items()
                                if peer_id in r.asked_of]:
            self._drop_asked(height, request, peer_id)
        self._wake.set()

    def _drop_asked(self, height: int, request: _Request, peer_id: bytes) -> None:
        """No answer for `height` will come from `peer_id`: wait for the other peers the
        request went to, or, if none, let the height be asked again."""
        rest = tuple(p for p in request.asked_of if p != peer_id)
        if rest:
            self._pending[height] = replace(request, peer=rest[-1], asked_of=rest)
        else:
            del self._pending[height]

    # --- probing, while consensus runs -------------------------------------------------

    def probe(self, peer_id: bytes) -> bool:
        """Ask a peer that claims our next height for that block; whether a request went.

        Nothing else happens until it answers: a claim alone never stops consensus.
        Not while a run is going (the run asks), not twice at once, and a marked peer
        not within `probe_retry_s` of its last failure.
        """
        status = self._peers.get(peer_id)
        height = self._our_height() + 1
        if self.syncing or peer_id in self._probes or status is None:
            return False
        if not status.base <= height <= status.height:
            return False
        now = time.monotonic()
        record = self._records.get(peer_id)
        if record is not None and not record.served and (
                now - record.at < self.config.probe_retry_s):
            return False
        if not self._send(peer_id, BlockRequest(height=height)):
            return False
        self._probes[peer_id] = _Probe(height, now, now + self.config.request_timeout_s,
                                       now + self.round_trips.resend_after())
        return True

    def expire_probes(self) -> None:
        """Probes past their deadline count as failures: the peer did not serve its claim.
        One unanswered past its resend time is sent again (the request or the answer may
        have been lost); one for a height we have by now is dropped, showing nothing."""
        now = time.monotonic()
        next_height = self._our_height() + 1
        for peer_id, probe in sorted(self._probes.items()):
            if probe.deadline <= now:
                del self._probes[peer_id]
                log.debug("probe timed out height=%d peer=%s", probe.height, peer_id.hex()[:16])
                self._note_failure(peer_id, probe.height, probe.asked, now)
            elif probe.height != next_height:
                del self._probes[peer_id]
            elif probe.resend_at <= now and self._send(peer_id, BlockRequest(height=probe.height)):
                sends = probe.sends + 1
                self._probes[peer_id] = replace(
                    probe, sends=sends, resend_at=now + self.round_trips.resend_after(sends))

    def _on_probe_response(self, peer_id: bytes, response: BlockResponse) -> None:
        """A block answering our probe: if it is our next block and its commit verifies,
        the peer is backed, the block is kept for the run, and we are behind. During a
        run (which a probe sent before it may answer into) the block is kept as any the
        run fetched: the run checks it when it applies it."""
        probe = self._probes.get(peer_id)
        height = response.commit.height
        if probe is None or probe.height != height:
            return
        del self._probes[peer_id]
        if probe.sends == 1:
            self.round_trips.sample(time.monotonic() - probe.asked)
        if height != self._our_height() + 1:
            return  # we have it by now: the answer shows nothing about being behind
        try:
            block = check_response(height, response)
            if not self.syncing and self._verify is not None and (
                    not self._verify(block, response.commit)):
                return  # cannot be checked right now; the next status probes again
        except SyncRejected as exc:
            self._reject(peer_id, f"probe: {exc}")
            return
        self._note(peer_id, served=True, now=time.monotonic())
        self._fetched.setdefault(height, _Fetched(peer_id, block, response.block,
                                                  response.commit))
        self._wake.set()
        if not self.syncing:
            log.info("peer=%s served block %d with a commit: catching up",
                     peer_id.hex()[:16], height)
            if self._on_behind is not None:
                self._on_behind()

    # --- what serving showed -----------------------------------------------------------

    def _note(self, peer_id: bytes, served: bool, now: float) -> None:
        """Record how a request to the peer ended (the oldest records go past MAX_RECORDS)."""
        self._records.pop(peer_id, None)
        self._records[peer_id] = _Record(served, now)
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

    def _note_failure(self, peer_id: bytes, height: int, asked: float, now: float) -> None:
        """The peer did not serve `height`, asked of it at `asked`: mark it, unless the
        height is outside its claim by now or it served a block after that request went
        (a peer busy serving us may lose one request; asked again, it serves or is marked).
        """
        status = self._peers.get(peer_id)
        if status is not None and not status.base <= height <= status.height:
            return  # its claim moved: not a claim it failed
        record = self._records.get(peer_id)
        if record is not None and record.served and record.at > asked:
            return
        if self.standing(peer_id) != MARKED:
            log.info("marking peer=%s: it did not serve height=%d it claims; its claims "
                     "stop counting until it serves a block", peer_id.hex()[:16], height)
        self._note(peer_id, served=False, now=now)

    # --- driving -------------------------------------------------------------------------

    async def sync_until_caught_up(self, settle_s: float = 1.0) -> int:
        """Fetch and apply blocks until no counted claim has been ahead of us for
        `settle_s` seconds; return how many blocks were applied.

        Exceptions from `apply` other than `SyncRejected` (a store failure) end sync.
        """
        assert not self.syncing, "sync_until_caught_up is already running"
        self.syncing = True
        self._wake = asyncio.Event()  # of this run's event loop
        progress = _Progress(self.show_progress, self._our_height(), self.target_height,
                             len(self._peers))
        applied = 0
        settled_since: float | None = None
        try:
            while True:
                self._wake.clear()  # before looking, so no event between look and wait is lost
                now = time.monotonic()
                self._forget_below(self._our_height() + 1)
                self._expire(now)
                self._schedule(now)
                if await self._apply_next():
                    applied += 1
                    progress.update(self._our_height(), self.target_height)
                    await asyncio.sleep(0)  # let responses in while blocks keep coming
                    continue
                progress.update(self._our_height(), self.target_height)
                if self.is_behind(margin=0):
                    settled_since = None
                elif settled_since is None:
                    settled_since = now
                elif now - settled_since >= settle_s:
                    return applied
                await self._wait(self._next_wakeup(now, settled_since, settle_s))
        finally:
            self.syncing = False
            self._pending.clear()
            self._fetched.clear()
            self._failed.clear()
            progress.close(self._our_height(), applied)

    async def _apply_next(self) -> bool:
        """Apply the block at our height + 1 if it has arrived; whether one was applied."""
        height = self._our_height() + 1
        fetched = self._fetched.pop(height, None)
        if fetched is None:
            return False
        try:
            await self._apply(fetched.block, fetched.raw, fetched.commit)
        except SyncRejected as exc:
            self._reject(fetched.peer, f"block {height} rejected: {exc}")
            return False
        assert self._our_height() == height, "apply must advance our height by one block"
        return True

    def _schedule(self, now: float) -> None:
        """Request every height of the window that is neither in flight nor fetched, and
        send again each request unanswered past its resend time; a height in flight at an
        unproven peer goes to a backed one as soon as one can take it (the unproven peer's
        late answer is then ignored)."""
        first = self._our_height() + 1
        last = min(first + self.config.window - 1, self.target_height)
        load = Counter(r.peer for r in self._pending.values())
        for height in range(first, last + 1):
            held = self._pending.get(height)
            if height in self._fetched:
                continue
            if held is not None and not self._may_take_over(held):
                if held.resend_at <= now:
                    self._resend(height, held, load, now)
                continue
            peer = self._request(height, load, now, backed_only=held is not None)
            if peer is None:
                continue
            if held is not None:
                load[held.peer] -= 1
            self._pending[height] = _Request(
                peer, now, now + self.config.request_timeout_s,
                now + self.round_trips.resend_after(), asked_of=(peer,))
            load[peer] += 1

    def _resend(self, height: int, held: _Request, load: Counter[bytes], now: float) -> None:
        """Send an unanswered request again: to a peer not asked yet if one can take it,
        else to the one asked last. Nobody is marked for it: a message was likely lost."""
        peer = self._pick_peer(height, load, now, exclude=held.asked_of)
        if peer is None or not self._send(peer, BlockRequest(height=height)):
            peer = held.peer
            if not self._send(peer, BlockRequest(height=height)):
                peer = None
        resend_at = now + self.round_trips.resend_after(held.sends + 1)
        if peer is None:  # not connected: on_peer_gone hands the height on
            self._pending[height] = replace(held, resend_at=resend_at)
            return
        load[held.peer] -= 1
        load[peer] += 1
        self._pending[height] = held.sent_again(peer, resend_at)
        log.debug("block request resent height=%d peer=%s sends=%d", height,
                  peer.hex()[:16], held.sends + 1)

    def _may_take_over(self, held: _Request) -> bool:
        """Whether a backed peer should take a height over from the unproven one holding it."""
        return self.standing(held.peer) == UNPROVEN and any(
            self.standing(p) == BACKED for p in self._peers)

    def _request(self, height: int, load: Counter[bytes], now: float,
                 backed_only: bool = False) -> bytes | None:
        """Send a request for `height` to the peer `_pick_peer` names; who got it."""
        while (peer := self._pick_peer(height, load, now)) is not None:
            if backed_only and self.standing(peer) != BACKED:
                return None
            if self._send(peer, BlockRequest(height=height)):
                return peer
            self._mark_failed(height, peer, now)  # not connected (or its queue is full)
        return None

    def _pick_peer(self, height: int, load: Counter[bytes], now: float,
                   exclude: tuple[bytes, ...] = ()) -> bytes | None:
        """The least loaded peer that claims `height`, has room and has not just failed it,
        in this order of preference: a backed one (if one is only busy, wait for it); an
        unproven one, if no backed peer claims the height or every one that does has just
        failed it; a marked one only if someone has just failed the height (a lossy link
        marks honest peers too: asked again, they serve and are backed again). Ties go
        round in id order, so the load spreads and the choice is reproducible. Peers in
        `exclude` are not picked."""
        failed = self._failed.get(height, {})
        retry_after = self.config.request_timeout_s
        claim = [p for p, s in self._peers.items()
                 if s.base <= height <= s.height and p not in exclude]
        fresh = [p for p in claim if now - failed.get(p, -retry_after) >= retry_after]
        by_standing: dict[str, list[bytes]] = {BACKED: [], UNPROVEN: [], MARKED: []}
        for peer in fresh:
            by_standing[self.standing(peer)].append(peer)
        if by_standing[BACKED]:
            pool = by_standing[BACKED]
        elif by_standing[UNPROVEN]:
            pool = by_standing[UNPROVEN]
        else:
            pool = by_standing[MARKED] if failed else []
        candidates = [p for p in pool if load[p] < self.config.max_per_peer]
        if not candidates:
            return None
        least = min(load[p] for p in candidates)
        tied = sorted(p for p in candidates if load[p] == least)
        self._turn += 1
        return tied[self._turn % len(tied)]

    def _expire(self, now: float) -> None:
        """Requests past their deadline go back to be asked of another peer."""
        for height, request in [(h, r) for h, r in self._pending.items() if r.deadline <= now]:
            del self._pending[height]
            for peer in request.asked_of:
                self._mark_failed(height, peer, now)
                self._note_failure(peer, height, request.asked, now)
            log.debug("block request timed out height=%d peer=%s", height, request.peer.hex()[:16])

    def _mark_failed(self, height: int, peer: bytes, now: float) -> None:
        self._failed.setdefault(height, {})[peer] = now

    def _forget_below(self, height: int) -> None:
        """Drop requests, responses and failures for heights we already have."""
        for book in (self._pending, self._fetched, self._failed):
            for h in [h for h in book if h < height]:
                del book[h]

    def _reject(self, peer: bytes, reason: str) -> None:
        """Penalise a peer that served invalid data and drop everything it sent."""
        log.warning("penalising peer=%s: %s", peer.hex()[:16], reason)
        self._note(peer, served=False, now=time.monotonic())
        self._penalise(peer, f"block sync: {reason}")
        self.on_peer_gone(peer)
        for height in [h for h, f in self._fetched.items() if f.peer == peer]:
            del self._fetched[height]

    def _next_wakeup(self, now: float, settled_since: float | None, settle_s: float) -> float:
        """Seconds until the next request deadline, retry or settle time (at most MAX_WAIT_S)."""
        times = [min(r.deadline, r.resend_at) for r in self._pending.values()]
        retry_after = self.config.request_timeout_s
        times.extend(t + retry_after for failed in self._failed.values() for t in failed.values()
                     if t + retry_after > now)
        if settled_since is not None:
            times.append(settled_since + settle_s)
        return max(0.0, min([now + MAX_WAIT_S, *times]) - now)

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)


class _Progress:
    """Sync progress: a tqdm bar on a terminal, otherwise a log line every PROGRESS_LOG_S."""

    def __init__(self, bar: bool, height: int, target: int, peers: int) -> None:
        self._start = self._last_time = time.monotonic()
        self._last_height = height
        self._bar = None
        if bar:
            self._bar = tqdm(total=max(target, height), initial=height, unit="block",
                             desc="sync", file=sys.stderr, dynamic_ncols=True)
        log.info("sync started height=%d target=%d peers=%d", height, target, peers)

    def update(self, height: int, target: int) -> None:
        """Show that we are at `height` of `target`."""
        if self._bar is not None:
            self._bar.total = max(target, height)
            self._bar.update(height - self._bar.n)
            return
        now = time.monotonic()
        if now - self._last_time >= PROGRESS_LOG_S:
            rate = (height - self._last_height) / max(now - self._last_time, 1e-9)
            log.info("syncing height=%d target=%d blocks_per_s=%.1f", height, target, rate)
            self._last_time, self._last_height = now, height

    def close(self, height: int, applied: int) -> None:
        """Close the bar and log the outcome."""
        if self._bar is not None:
            self._bar.close()
        elapsed = time.monotonic() - self._start
        log.info("sync done height=%d applied=%d blocks_per_s=%.1f", height, applied,
                 applied / max(elapsed, 1e-9))
