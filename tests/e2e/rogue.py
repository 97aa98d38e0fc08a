"""A rogue peer: it dials a real node's p2p port, completes the handshake as a node
would (its own node key, a Hello for the right chain, a HelloProof over the node's
nonce), then sends crafted frames and watches what the node does about them.

`RogueLink` is one connection under one identity. Its reader keeps the node's last
status (its head) and puts what the node sends into a `Material` shared by all links
(real gossip frames to replay, validator addresses seen in votes, real proposals and
blocks), and notes when and why the node closed the link. `craft(kind, ...)` builds one
frame of a kind:

- `INVALID_KINDS` (the node must cut the sender within a second and ban its node id):
  random bytes, oversize, truncated (a real frame cut short), an unknown frame type,
  a text frame, a Hello after the handshake, a vote or a proposal for the next
  height with a bad signature, a proposal whose block does not decode, a real signed
  proposal carrying another block, a tx with a bad signature, tx bytes that do not
  decode;
- `IGNORED_KINDS` (dropped without a ban): duplicates of gossip the node sent, votes
  and proposals for past heights or heights past the next two (far future);
- `far_future_status`: a StatusMsg claiming a far-future height (see
  test_rogue_peer.py: it once stalled the node's consensus; it has its own test);
- `UNCHECKABLE_KINDS`: a vote with a bad signature two heights ahead, which the node
  cannot check yet (the test asserts only that no honest peer pays for it).

`Rogue` runs campaigns: `invalid_campaign` (a fresh identity, a burst of one invalid
kind, the cut timed from the first frame, then a reconnect under the same identity
that must be refused), `handshake_campaign` (a Hello with another chain id, a
HelloProof that does not verify) and `quiet_flood` (ignored frames paced under the
node's rate limit on one long-lived link that must stay up). `Tally` counts frames
by kind, cuts, latencies and bans.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgpack

from chain.codec import decode, encode
from chain.crypto import SigningKey
from chain.errors import DecodeError
from chain.records import (
    DENOM_GPU,
    NO_POL_ROUND,
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Proposal,
    SignedProposal,
    SignedTx,
    SignedVote,
    Transfer,
    Tx,
    Vote,
)
from p2p.handshake import (
    LocalNode,
    compute_hello_proof,
    decode_handshake_frame,
    encode_frame,
    make_hello,
)
from p2p.messages import (
    MESSAGES,
    EvidenceMsg,
    Frame,
    Hello,
    HelloProof,
    Message,
    ProposalMsg,
    StatusMsg,
    TxMsg,
    TxsMsg,
    VoteMsg,
)

INVALID_KINDS = ("random_bytes", "oversize", "truncated", "unknown_type", "text_frame",
                 "hello_again", "bad_sig_vote", "bad_sig_proposal", "undecodable_block",
                 "swapped_block", "bad_sig_tx", "undecodable_tx")
IGNORED_KINDS = ("duplicate", "far_future_vote", "far_future_proposal", "past_vote")
UNCHECKABLE_KINDS = ("next_next_bad_sig_vote",)
HANDSHAKE_KINDS = ("wrong_chain_hello", "bad_hello_proof")
NEEDS_PROPOSAL = ("bad_sig_proposal", "undecodable_block", "far_future_proposal",
                  "swapped_block")
GOSSIP_KEPT = 4096
HANDSHAKE_TIMEOUT_S = 5.0
TOPUP_S = 0.05
FAR_MARGIN = 100  # blocks past a node's last status that count as far future
MAX_U64 = 2**64 - 1
KNOWN_TAGS = frozenset(tag for tag, _ in MESSAGES.variants)


class HandshakeRefused(Exception):
    """The node closed the link before the handshake completed; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Material:
    """What the nodes sent, kept for crafting: gossip, validators, proposals."""

    gossip: deque[bytes] = field(default_factory=lambda: deque(maxlen=GOSSIP_KEPT))
    validators: set[bytes] = field(default_factory=set)
    proposals: dict[int, ProposalMsg] = field(default_factory=dict)

    def take(self, data: bytes) -> Message | None:
        """Remember one frame a node sent; the message, if it decodes."""
        try:
            message = decode(Frame, data).message
        except DecodeError:
            return None
        if isinstance(message, TxMsg | TxsMsg | VoteMsg | ProposalMsg | EvidenceMsg):
            self.gossip.append(data)
        if isinstance(message, VoteMsg):
            self.validators.add(message.vote.vote.validator)
        elif isinstance(message, ProposalMsg):
            self.validators.add(message.proposal.proposal.proposer)
            self.proposals[message.proposal.proposal.height] = message
            for old in sorted(self.proposals)[:-8]:
                del self.proposals[old]
        return message

    def ready(self, kind: str) -> bool:
        """Whether there is enough material to craft `kind`."""
        if not self.validators:
            return False
        if kind in ("duplicate", "truncated"):
            return bool(self.gossip)
        if kind == "swapped_block":
            return len({p.block for p in self.proposals.values()}) >= 2
        if kind in NEEDS_PROPOSAL:
            return bool(self.proposals)
        return True


def decodes(data: bytes) -> bool:
    """Whether `data` is a canonical frame."""
    try:
        decode(Frame, data)
    except DecodeError:
        return False
    return True


def _signed_vote(rng: random.Random, material: Material, height: int) -> VoteMsg:
    vote = Vote(vote_type=rng.choice((VOTE_PREVOTE, VOTE_PRECOMMIT)), height=height,
                round=rng.randrange(4), block_hash=rng.randbytes(32),
                validator=rng.choice(sorted(material.validators)))
    return VoteMsg(vote=SignedVote(vote=vote, signature=rng.randbytes(64)))


def _proposal(rng: random.Random, material: Material, height: int,
              block: bytes | None = None) -> ProposalMsg:
    proposal = Proposal(height=height, round=rng.randrange(4), pol_round=NO_POL_ROUND,
                        block_hash=rng.randbytes(32),
                        proposer=rng.choice(sorted(material.validators)))
    if block is None:
        block = material.proposals[max(material.proposals)].block
    return ProposalMsg(proposal=SignedProposal(proposal=proposal, signature=rng.randbytes(64)),
                       block=block)


def _far_future(rng: random.Random, head: int) -> int:
    """A height far past head + 2 (a status may be a second old): some way past, far past,
    or near the top of the u64 range."""
    return rng.choice((head + FAR_MARGIN + rng.randrange(100),
                       head + FAR_MARGIN + rng.randrange(1 << 32),
                       MAX_U64 - rng.randrange(1 << 16)))


def _undecodable(rng: random.Random, make: Callable[[], bytes]) -> bytes:
    """`make()` until it returns bytes that are not a frame."""
    while True:
        data = make()
        if not decodes(data):
            return data


def _bad_sig_tx(rng: random.Random, chain_id: str) -> TxMsg:
    tx = Tx(chain_id=chain_id.encode(), sender=SigningKey.generate().public_key,
            nonce=rng.randrange(1 << 32), fee=1 << 62,
            body=Transfer(to=rng.randbytes(20), amount=1 + rng.randrange(1000), denom=DENOM_GPU))
    return TxMsg(tx=encode(SignedTx(tx=tx, signature=rng.randbytes(64))))


def _undecodable_tx(rng: random.Random) -> TxMsg:
    while True:
        raw = rng.randbytes(1 + rng.randrange(300))
        try:
            decode(SignedTx, raw)
        except DecodeError:
            return TxMsg(tx=raw)


def _unknown_type(rng: random.Random) -> bytes:
    tag = rng.choice([t for t in range(64) if t not in KNOWN_TAGS] + [rng.randrange(64, 1 << 32)])
    return msgpack.packb([[tag, [rng.randbytes(rng.randrange(1, 64))]]])


def swapped_source(material: Material, head: int) -> ProposalMsg:
    """The real proposal a swapped_block frame reuses: the one for the next height, else
    the newest."""
    return material.proposals.get(head + 1) or material.proposals[max(material.proposals)]


def _swapped_block(rng: random.Random, material: Material, head: int) -> ProposalMsg:
    """A real signed proposal (`swapped_source`) carrying another real block."""
    real = swapped_source(material, head)
    other = rng.choice([p for h, p in material.proposals.items() if p.block != real.block])
    return ProposalMsg(proposal=real.proposal, block=other.block)


def craft(kind: str, material: Material, head: int, rng: random.Random, chain_id: str,
          max_frame_bytes: int) -> bytes | str:
    """One frame of `kind` (a str is sent as a text frame) for a node at committed height
    `head`; `material.ready(kind)` holds."""
    if kind == "random_bytes":
        return _undecodable(rng, lambda: rng.randbytes(1 + rng.randrange(512)))
    if kind == "oversize":
        return bytes(max_frame_bytes + 1 + rng.randrange(1024))
    if kind == "truncated":
        real = rng.choice(material.gossip)
        return _undecodable(rng, lambda: real[:rng.randrange(1, len(real))])
    if kind == "unknown_type":
        return _undecodable(rng, lambda: _unknown_type(rng))
    if kind == "text_frame":
        return rng.choice(("hello", '{"jsonrpc": "2.0"}', "\u00e9" * rng.randrange(1, 100)))
    if kind == "hello_again":
        local = LocalNode(SigningKey.generate(), chain_id, bytes(32), 0)
        return encode_frame(make_hello(local, rng.randbytes(32)))
    # The node's head may have moved since we learnt it: aim at each of the next three.
    if kind == "bad_sig_vote":
        return encode_frame(_signed_vote(rng, material, head + rng.randint(1, 3)))
    if kind == "bad_sig_proposal":
        return encode_frame(_proposal(rng, material, head + rng.randint(1, 3)))
    if kind == "undecodable_block":
        return encode_frame(_proposal(rng, material, head + rng.randint(1, 3),
                                      block=rng.randbytes(200)))
    if kind == "swapped_block":
        return encode_frame(_swapped_block(rng, material, head))
    if kind == "bad_sig_tx":
        return encode_frame(_bad_sig_tx(rng, chain_id))
    if kind == "undecodable_tx":
        return encode_frame(_undecodable_tx(rng))
    if kind == "duplicate":
        return rng.choice(material.gossip)
    if kind == "far_future_vote":
        return encode_frame(_signed_vote(rng, material, _far_future(rng, head)))
    if kind == "far_future_proposal":
        return encode_frame(_proposal(rng, material, _far_future(rng, head)))
    if kind == "far_future_status":
        height = _far_future(rng, head)
        return encode_frame(StatusMsg(height=height, round=0, step=1, base=1))
    if kind == "past_vote":
        return encode_frame(_signed_vote(rng, material, rng.randint(0, head)))
    if kind == "next_next_bad_sig_vote":
        return encode_frame(_signed_vote(rng, material, head + 2))
    raise ValueError(f"unknown frame kind {kind!r}")


class RogueLink:
    """One connection to a node under one node key."""

    def __init__(self, key: SigningKey, chain_id: str, genesis_hash: bytes,
                 material: Material) -> None:
        self.key = key
        self.local = LocalNode(key, chain_id, genesis_hash, 0, "rogue")
        self.material = material
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closed_at: float | None = None
        self.close_reason = ""
        self.status: StatusMsg | None = None
        self.proposal_height = 0  # the highest proposal the node sent on this link
        self.received = 0
        self._reader: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def node_id(self) -> bytes:
        return self.key.public_key

    async def connect(self, port: int, chain_id: str | None = None,
                      proof: bytes | None = None) -> None:
        """Open the link and run the handshake (optionally with another chain id in the Hello
        or a given proof signature); raises HandshakeRefused when the node closes it."""
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"ws://127.0.0.1:{port}/p2p", autoping=True,
                                                max_msg_size=64 << 20)
        local = self.local if chain_id is None else LocalNode(
            self.key, chain_id, self.local.genesis_hash, 0, "rogue")
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await self._handshake_send(encode_frame(make_hello(local, os.urandom(32))))
            peer_hello = decode_handshake_frame(await self._handshake_frame(), Hello)
            signed = compute_hello_proof(self.local, peer_hello)
            await self._handshake_send(encode_frame(
                signed if proof is None else HelloProof(signature=proof)))
            decode_handshake_frame(await self._handshake_frame(), HelloProof)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _handshake_send(self, data: bytes) -> None:
        """Send a handshake frame; a link the node already closed shows at the next read."""
        assert self.ws is not None
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            await self.ws.send_bytes(data)

    async def _handshake_frame(self) -> bytes:
        assert self.ws is not None
        msg = await self.ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            return msg.data
        raise HandshakeRefused(f"{msg.type.name}: {msg.extra or msg.data}")

    async def _read(self) -> None:
        """Keep the node's frames as material until the link closes; note when and why."""
        assert self.ws is not None
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.received += 1
                message = self.material.take(msg.data)
                if isinstance(message, StatusMsg):
                    self.status = message
                elif isinstance(message, ProposalMsg):
                    self.proposal_height = max(self.proposal_height,
                                               message.proposal.proposal.height)
                continue
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            self.closed_at = time.monotonic()
            self.close_reason = f"{msg.type.name}: {msg.extra or msg.data or ''}"
            self._closed.set()
            return

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def head(self) -> int:
        """The node's committed height: its last status, or one under the last proposal it
        sent (a node sends and relays proposals for its next height only), if newer."""
        status = self.status.height if self.status is not None else 0
        return max(status, self.proposal_height - 1)

    async def send(self, frame: bytes | str) -> bool:
        """Send one frame; False if the link was already gone. A frame the node cut off
        while it was going out (an oversize one) counts as sent."""
        assert self.ws is not None
        if self.is_closed or self.ws.closed:
            return False
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            if isinstance(frame, str):
                await self.ws.send_str(frame)
            else:
                await self.ws.send_bytes(frame)
        return True

    async def wait_closed(self, timeout_s: float) -> bool:
        """Whether the node closed the link within `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._closed.wait()
        return self.is_closed

    async def wait_material(self, kind: str, timeout_s: float) -> bool:
        """Wait until there is material for `kind`."""
        deadline = time.monotonic() + timeout_s
        while self.status is None or not self.material.ready(kind) or (
                kind == "swapped_block" and self.head + 1 not in self.material.proposals):
            if time.monotonic() > deadline or self.is_closed:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.session is not None:
            await self.session.close()


@dataclass(frozen=True, slots=True)
class Cut:
    """One campaign's outcome: the node cut the link `latency_s` after the first frame it
    could judge (`from_first_s` after the very first frame; they differ only when the
    first frames aimed at a height the node had already left, which it ignores)."""

    kind: str
    target: int
    latency_s: float
    from_first_s: float
    reason: str
    refused_again: str  # why a reconnect under the same identity was refused ('' if not)


@dataclass
class Tally:
    """Frames sent by kind, cuts seen, identities used."""

    sent: Counter[str] = field(default_factory=Counter)
    cuts: list[Cut] = field(default_factory=list)
    banned_ids: set[bytes] = field(default_factory=set)
    quiet_ids: set[bytes] = field(default_factory=set)
    other_ids: set[bytes] = field(default_factory=set)

    @property
    def frames(self) -> int:
        return sum(self.sent.values())


class Rogue:
    """Runs campaigns of crafted frames against nodes' p2p ports; counts everything."""

    def __init__(self, chain_id: str, genesis_hash: bytes, max_frame_bytes: int,
                 seed: int) -> None:
        self.chain_id = chain_id
        self.genesis_hash = genesis_hash
        self.max_frame_bytes = max_frame_bytes
        self.rng = random.Random(seed)
        self.material = Material()
        self.tally = Tally()

    def link(self, key: SigningKey | None = None) -> RogueLink:
        return RogueLink(key or SigningKey.generate(), self.chain_id, self.genesis_hash,
                         self.material)

    def craft(self, kind: str, link: RogueLink) -> bytes | str:
        return craft(kind, self.material, link.head, self.rng, self.chain_id,
                     self.max_frame_bytes)

    async def invalid_campaign(self, target: int, port: int, kind: str, burst: int,
                               cut_timeout_s: float = 5.0) -> Cut:
        """A fresh identity sends up to `burst` frames of an invalid `kind` back to back;
        the cut is timed from the first; then the same identity tries to come back."""
        link = self.link()
        try:
            await link.connect(port)
            if not await link.wait_material(kind, timeout_s=10.0):
                raise AssertionError(f"no material for {kind} from node {target} within 10 s")
            sends: list[tuple[int, float]] = []  # (proposal height of a swapped_block, when)
            started = time.monotonic()
            for i in range(burst + int(cut_timeout_s / TOPUP_S)):
                # The head we know may be a block old: a frame that went stale is ignored,
                # so after the burst one more follows every TOPUP_S until the cut.
                if i >= burst and await link.wait_closed(TOPUP_S):
                    break
                aimed = swapped_source(self.material, link.head).proposal.proposal.height \
                    if kind == "swapped_block" else 0
                if not await link.send(self.craft(kind, link)):
                    break
                sends.append((aimed, time.monotonic()))
                self.tally.sent[kind] += 1
            if not await link.wait_closed(TOPUP_S):
                raise AssertionError(f"node {target} did not cut a peer sending {kind} "
                                     f"within {cut_timeout_s:g} s")
            assert link.closed_at is not None
            judged = started
            if kind == "swapped_block":  # it is a real proposal: only a current one is judged
                newest = max(aimed for aimed, _ in sends)
                judged = min(when for aimed, when in sends if aimed == newest)
        finally:
            await link.close()
        self.tally.banned_ids.add(link.node_id)
        refused = await self._reconnect_reason(port, link.key)
        cut = Cut(kind, target, link.closed_at - judged, link.closed_at - started,
                  link.close_reason, refused)
        self.tally.cuts.append(cut)
        return cut

    async def _reconnect_reason(self, port: int, key: SigningKey) -> str:
        """Why the node refuses `key` now ('' if it let it in)."""
        again = self.link(key)
        try:
            await again.connect(port)
        except HandshakeRefused as exc:
            return exc.reason
        finally:
            await again.close()
        return ""

    async def handshake_campaign(self, target: int, port: int, kind: str,
                                 cut_timeout_s: float = 5.0) -> Cut:
        """A Hello with another chain id, or a HelloProof that does not verify."""
        link = self.link()
        started = time.monotonic()
        reason = ""
        try:
            if kind == "wrong_chain_hello":
                await link.connect(port, chain_id=self.chain_id + "-other")
            else:
                await link.connect(port, proof=self.rng.randbytes(64))
            # The node sends its own proof before it checks ours: the cut comes after.
            if not await link.wait_closed(cut_timeout_s):
                raise AssertionError(f"node {target} kept a peer after a {kind}")
            reason = link.close_reason
        except HandshakeRefused as exc:
            reason = exc.reason
        finally:
            await link.close()
        latency = time.monotonic() - started
        self.tally.sent[kind] += 1
        self.tally.other_ids.add(link.node_id)
        refused = await self._reconnect_reason(port, link.key)
        cut = Cut(kind, target, latency, latency, reason, refused)
        self.tally.cuts.append(cut)
        return cut

    async def open_quiet(self, port: int) -> RogueLink:
        """A long-lived identity for frames the node must ignore without a ban."""
        link = self.link()
        await link.connect(port)
        self.tally.quiet_ids.add(link.node_id)
        return link

    async def quiet_flood(self, link: RogueLink, kinds: tuple[str, ...], count: int,
                          frames_per_s: int) -> int:
        """Send `count` frames of `kinds` (round robin) at about `frames_per_s`; how many went
        out (fewer only if the node cut the link, which the caller then reports)."""
        for kind in kinds:
            if not await link.wait_material(kind, timeout_s=10.0):
                raise AssertionError(f"no material for {kind} within 10 s")
        started = time.monotonic()
        for i in range(count):
            kind = kinds[i % len(kinds)]
            if not await link.send(self.craft(kind, link)):
                return i
            self.tally.sent[kind] += 1
            ahead = started + (i + 1) / frames_per_s - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        return count

    async def uncheckable(self, port: int, count: int, frames_per_s: int) -> None:
        """A fresh identity sends votes with bad signatures for head + 2 (the node cannot
        check them yet); whether it is cut is not asserted, only what others do."""
        link = self.link()
        try:
            await link.connect(port)
            self.tally.other_ids.add(link.node_id)
            await self.quiet_flood(link, UNCHECKABLE_KINDS, count, frames_per_s)
        finally:
            await link.close()
