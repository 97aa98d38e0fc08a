"""What the switch tests share: a recording handler, fast configs, sample messages of
every wire type, switches that always stop, polling with a deadline, and a raw peer
that speaks the handshake by hand so a test can then send anything at all."""

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from chain.address import address_from_public_key
from chain.crypto import SigningKey
from chain.records import (
    NO_POL_ROUND,
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    Proposal,
    Vote,
)
from chain.signing import sign_proposal, sign_vote
from p2p.handshake import (
    LocalNode,
    compute_hello_proof,
    decode_handshake_frame,
    encode_frame,
    make_hello,
)
from p2p.messages import (
    BlockRequest,
    BlockResponse,
    EvidenceMsg,
    Hello,
    HelloProof,
    Message,
    NoBlock,
    ProposalMsg,
    StatusMsg,
    TxMsg,
    VoteMsg,
)
from p2p.peer import PeerInfo
from p2p.switch import Switch, SwitchConfig

CHAIN_ID = "gannet-p2p-test"
GENESIS_HASH = bytes(range(32))
STATUS = StatusMsg(height=7, round=0, step=1, base=1)


def fast_config(**overrides: Any) -> SwitchConfig:
    """A config for tests: a free port, short timeouts, quick reconnects, no pex."""
    base = SwitchConfig(port=0, handshake_timeout_s=2, ban_s=60, reconnect_min_s=0.05,
                        reconnect_max_s=0.2, ping_interval_s=0.5, idle_timeout_s=5, pex=False,
                        pex_interval_s=30)
    return replace(base, **overrides)


@dataclass
class RecordingHandler:
    """A PeerHandler that records everything; `react` may raise for a message."""

    status: StatusMsg = STATUS
    react: Callable[[Message], None] | None = None
    messages: list[tuple[bytes, Message]] = field(default_factory=list)
    infos: list[PeerInfo] = field(default_factory=list)
    connected: list[bytes] = field(default_factory=list)
    disconnected: list[bytes] = field(default_factory=list)

    async def on_message(self, peer: PeerInfo, message: Message) -> None:
        self.messages.append((peer.node_id, message))
        self.infos.append(peer)
        if self.react is not None:
            self.react(message)

    def on_connected(self, peer: PeerInfo) -> None:
        self.connected.append(peer.node_id)

    def on_disconnected(self, peer: PeerInfo) -> None:
        self.disconnected.append(peer.node_id)

    def local_status(self) -> StatusMsg:
        return self.status

    def received(self, kind: type | None = None) -> list[Message]:
        """The messages received, optionally only those of one type."""
        return [m for _, m in self.messages if kind is None or isinstance(m, kind)]


@dataclass
class Node:
    """A switch with its key and recording handler."""

    switch: Switch
    handler: RecordingHandler
    key: SigningKey

    @property
    def address(self) -> str:
        """`<id hex>@127.0.0.1:<port>` (known once started)."""
        return f"{self.switch.node_id.hex()}@127.0.0.1:{self.switch.port}"

    def peer_ids(self) -> set[bytes]:
        return {p.node_id for p in self.switch.peers()}


def make_node(config: SwitchConfig | None = None, key: SigningKey | None = None,
              handler: RecordingHandler | None = None, chain_id: str = CHAIN_ID,
              genesis_hash: bytes = GENESIS_HASH, moniker: str = "") -> Node:
    """A switch that is not started yet."""
    key = key if key is not None else SigningKey.generate()
    handler = handler if handler is not None else RecordingHandler()
    switch = Switch(key, chain_id, genesis_hash, config or fast_config(), handler, moniker)
    return Node(switch, handler, key)


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    """Start the switches; always stop every one of them, even after a failure."""
    started: list[Node] = []
    try:
        for node in nodes:
            await node.switch.start()
            started.append(node)
        yield
    finally:
        await asyncio.gather(*(node.switch.stop() for node in started))


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0,
                   what: str = "condition") -> None:
    """Poll `condition` every 10 ms until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_linked(a: Node, b: Node, timeout: float = 3.0) -> None:
    """Wait until `a` and `b` each list the other as a connected peer."""
    await wait_for(lambda: b.switch.node_id in a.peer_ids() and a.switch.node_id in b.peer_ids(),
                   timeout=timeout, what="link up")


def sample_messages(key: SigningKey | None = None) -> list[Message]:
    """One valid message of every type the handler receives, with real signatures."""
    key = key if key is not None else SigningKey.from_seed(bytes(32))
    validator = address_from_public_key(key.public_key)
    block_hash = bytes([7]) * 32
    prevote = sign_vote(key, CHAIN_ID, Vote(VOTE_PREVOTE, 5, 0, block_hash, validator))
    other = sign_vote(key, CHAIN_ID, Vote(VOTE_PREVOTE, 5, 0, bytes([8]) * 32, validator))
    proposal = sign_proposal(key, CHAIN_ID, Proposal(5, 0, NO_POL_ROUND, block_hash, validator))
    commit = Commit(4, 0, block_hash, (CommitSig(validator, bytes(64)),))
    return [
        TxMsg(tx=b"tx-bytes-" + os.urandom(8)),
        ProposalMsg(proposal=proposal, block=b"block-bytes"),
        VoteMsg(vote=sign_vote(key, CHAIN_ID, Vote(VOTE_PRECOMMIT, 5, 0, block_hash, validator))),
        EvidenceMsg(evidence=DuplicateVoteEvidence(prevote, other)),
        StatusMsg(height=9, round=1, step=2, base=1),
        BlockRequest(height=3),
        BlockResponse(block=b"block-3", commit=commit),
        NoBlock(height=99),
    ]


class RawPeer:
    """A hand-driven peer: it runs the handshake step by step, then sends raw frames."""

    def __init__(self, key: SigningKey | None = None, chain_id: str = CHAIN_ID,
                 genesis_hash: bytes = GENESIS_HASH, listen_port: int = 0) -> None:
        self.key = key if key is not None else SigningKey.generate()
        self.local = LocalNode(self.key, chain_id, genesis_hash, listen_port)
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.peer_hello: Hello | None = None

    @property
    def node_id(self) -> bytes:
        return self.key.public_key

    async def open(self, port: int) -> aiohttp.ClientWebSocketResponse:
        """Open the WebSocket to a switch on 127.0.0.1:`port`."""
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"ws://127.0.0.1:{port}/p2p", autoping=True,
                                                max_msg_size=64 << 20)
        return self.ws

    async def hello(self) -> Hello:
        """Send our Hello and read the switch's."""
        assert self.ws is not None
        self.nonce = os.urandom(32)
        await self.ws.send_bytes(encode_frame(make_hello(self.local, self.nonce)))
        self.peer_hello = decode_handshake_frame(await self.receive_bytes(), Hello)
        return self.peer_hello

    async def prove(self, signature: bytes | None = None) -> HelloProof:
        """Send our proof (or a given signature) and read the switch's."""
        assert self.ws is not None and self.peer_hello is not None
        proof = compute_hello_proof(self.local, self.peer_hello)
        if signature is not None:
            proof = HelloProof(signature=signature)
        await self.ws.send_bytes(encode_frame(proof))
        return decode_handshake_frame(await self.receive_bytes(), HelloProof)

    async def handshake(self, port: int) -> None:
        """Open and complete the handshake."""
        await self.open(port)
        await self.hello()
        await self.prove()

    async def receive_bytes(self, timeout: float = 3.0) -> bytes:
        """The next binary frame; fails on anything else."""
        assert self.ws is not None
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"expected a binary frame, got {msg.type!r} {msg.data!r} "
                                  f"{msg.extra!r}")
        return msg.data

    async def wait_closed(self, timeout: float = 3.0) -> tuple[int | None, str]:
        """Read until the switch closes the link; returns the close code and reason."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return msg.data, msg.extra or ""
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                return self.ws.close_code, ""
        raise AssertionError("link not closed in time")

    async def close(self) -> None:
        """Close the link and the session."""
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
