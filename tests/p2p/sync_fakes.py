"""Block sync test helpers: a really signed chain, a replica that verifies and applies
it as the node does, and an in-memory network of peers with scripted behaviour.

`signed_chain()` builds a chain once per test session: a genesis with three
validators of equal power, blocks made by `build_block` (one transfer each), and
commits signed by all three validators (two of three is not more than 2/3).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.records import (
    DENOM_GPU,
    VOTE_PRECOMMIT,
    Block,
    Commit,
    CommitSig,
    SignedTx,
    Transfer,
    Tx,
    Vote,
    block_hash,
)
from chain.signing import sign_tx, vote_signing_bytes
from chain.state import State
from chain.store import Head
from chain.types import BASE_UNITS_PER_GPU
from consensus.commit import EMPTY_COMMIT, validate_commit
from consensus.context import ChainRules
from consensus.errors import InvalidBlock
from consensus.producer import build_block
from consensus.transition import BlockResult, apply_block
from genesis.document import Genesis, add_account, add_validator, new_genesis
from genesis.state import genesis_head, genesis_writes
from p2p.messages import BlockResponse, Message, NoBlock, StatusMsg
from p2p.sync import BlockSyncer, SyncRejected

CHAIN_ID = "gannet-sync-test"
GENESIS_TIME_MS = 1_700_000_000_000
CHAIN_LENGTH = 200
STAKE = 1000 * BASE_UNITS_PER_GPU
VALIDATOR_KEYS = tuple(SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
FORGER_KEYS = tuple(SigningKey.from_seed(bytes([i]) * 32) for i in (4, 5, 6))
SENDER_KEY = SigningKey.from_seed(bytes([9]) * 32)
RECIPIENT = bytes([0xAB]) * 20


def address(key: SigningKey) -> bytes:
    return address_from_public_key(key.public_key)


@dataclass(frozen=True)
class SignedChain:
    """A valid chain: genesis, then block h at index h - 1 with its bytes, commit,
    the head after it and what applying it wrote."""

    genesis: Genesis
    genesis_writes: dict[bytes, bytes]
    genesis_head: Head
    blocks: tuple[Block, ...]
    raws: tuple[bytes, ...]
    commits: tuple[Commit, ...]
    heads: tuple[Head, ...]
    results: tuple[BlockResult, ...]

    @property
    def min_fee(self) -> int:
        return self.genesis.params.fee.min_fee

    def response(self, height: int) -> BlockResponse:
        """What an honest peer answers for `height`."""
        return BlockResponse(block=self.raws[height - 1], commit=self.commits[height - 1])


def make_genesis() -> Genesis:
    genesis = new_genesis(CHAIN_ID, GENESIS_TIME_MS)
    genesis = add_account(genesis, address(SENDER_KEY), 10**6 * BASE_UNITS_PER_GPU)
    for i, key in enumerate(VALIDATOR_KEYS):
        genesis = add_account(genesis, address(key), STAKE)
        genesis = add_validator(genesis, key.public_key, STAKE, address(key), f"v{i}")
    return genesis


def sign_full_commit(keys: tuple[SigningKey, ...], height: int, block_hash_: bytes,
                     signers: tuple[bytes, ...] | None = None) -> Commit:
    """A commit with one precommit per key; `signers` names the claimed validators
    (default: the keys' own addresses), so other keys can forge their signatures."""
    signers = signers or tuple(address(k) for k in keys)
    sigs = []
    for key, signer in zip(keys, signers, strict=True):
        vote = Vote(vote_type=VOTE_PRECOMMIT, height=height, round=0,
                    block_hash=block_hash_, validator=signer)
        sigs.append(CommitSig(validator=signer,
                              signature=key.sign(vote_signing_bytes(CHAIN_ID, vote))))
    return Commit(height=height, round=0, block_hash=block_hash_, signatures=tuple(sigs))


def forged_commit(commit: Commit) -> Commit:
    """`commit` with every validator's signature made by a key that is not theirs."""
    signers = tuple(s.validator for s in commit.signatures)
    return sign_full_commit(FORGER_KEYS, commit.height, commit.block_hash, signers)


def transfer(nonce: int, fee: int) -> SignedTx:
    tx = Tx(chain_id=CHAIN_ID.encode(), sender=SENDER_KEY.public_key, nonce=nonce, fee=fee,
            body=Transfer(to=RECIPIENT, amount=nonce + 1, denom=DENOM_GPU))
    return sign_tx(SENDER_KEY, tx)


@functools.cache
def signed_chain() -> SignedChain:
    """CHAIN_LENGTH valid blocks over `make_genesis()`, proposers taking turns."""
    genesis = make_genesis()
    mark, writes0 = genesis_writes(genesis)
    head0 = genesis_head(genesis, mark)
    writes, head, last_commit = dict(writes0), head0, EMPTY_COMMIT
    blocks, raws, commits, heads, results = [], [], [], [], []
    for height in range(1, CHAIN_LENGTH + 1):
        state = State(lambda key, w=writes: w.get(key) or None)
        proposer = address(VALIDATOR_KEYS[height % len(VALIDATOR_KEYS)])
        fee = genesis.params.fee.min_fee
        built = build_block(state, head, ChainRules(CHAIN_ID, genesis.params), proposer,
                            head.time_ms + 1000, last_commit, [transfer(height - 1, fee)])
        assert not built.rejected, built.rejected
        bh = block_hash(built.block)
        last_commit = sign_full_commit(VALIDATOR_KEYS, height, bh)
        writes.update(built.result.writes)
        head = Head(height=height, block_hash=bh, time_ms=built.block.header.time_ms,
                    app_hash=built.result.app_hash, results_hash=built.result.results_hash)
        blocks.append(built.block)
        raws.append(encode(built.block))
        commits.append(last_commit)
        heads.append(head)
        results.append(built.result)
    return SignedChain(genesis, dict(writes0), head0, tuple(blocks), tuple(raws),
                       tuple(commits), tuple(heads), tuple(results))


class Replica:
    """The node's side of sync: committed state as a dict of writes and a head; `apply`
    checks the commit and applies the block as the node does, `SyncRejected` if invalid;
    `verify` checks a probed block's commit as the node does."""

    def __init__(self, chain: SignedChain) -> None:
        self.chain = chain
        self.writes = dict(chain.genesis_writes)
        self.head = chain.genesis_head
        self.applied: list[int] = []
        self.on_apply: Callable[[int], None] | None = None
        self.verifiable = True  # False: as a node in the middle of committing a block

    def height(self) -> int:
        return self.head.height

    def verify(self, block: Block, commit: Commit) -> bool:
        """The node's probe check: the commit finalises `block` at our next height."""
        if not self.verifiable:
            return False
        state = State(lambda key: self.writes.get(key) or None)
        try:
            validate_commit(CHAIN_ID, state.get_validator_set(), commit, self.head.height + 1,
                            block_hash(block))
        except InvalidBlock as exc:
            raise SyncRejected(str(exc)) from exc
        return True

    async def apply(self, block: Block, raw: bytes, commit: Commit) -> None:
        assert raw == encode(block)
        state = State(lambda key: self.writes.get(key) or None)
        bh = block_hash(block)
        try:
            validate_commit(CHAIN_ID, state.get_validator_set(), commit, block.header.height, bh)
            result = apply_block(state, block, self.head,
                                 ChainRules(CHAIN_ID, self.chain.genesis.params))
        except InvalidBlock as exc:
            raise SyncRejected(str(exc)) from exc
        self.writes.update(result.writes)
        self.head = Head(height=block.header.height, block_hash=bh,
                         time_ms=block.header.time_ms, app_hash=result.app_hash,
                         results_hash=result.results_hash)
        self.applied.append(block.header.height)
        if self.on_apply is not None:
            self.on_apply(block.header.height)


# --- peers -------------------------------------------------------------------------------

Serve = Callable[[int], Message | None]  # a peer's answer to a request (None: silence)
Order = Callable[[list[Message]], list[Message]]  # how a peer orders a batch of answers


def honest(chain: SignedChain) -> Serve:
    return chain.response


def silent(_height: int) -> None:
    return None


def no_block(height: int) -> NoBlock:
    return NoBlock(height=height)


def forging(chain: SignedChain) -> Serve:
    return lambda h: replace(chain.response(h), commit=forged_commit(chain.commits[h - 1]))


def undecodable(chain: SignedChain) -> Serve:
    return lambda h: replace(chain.response(h), block=b"\xc1 is never msgpack")


@dataclass
class FakePeer:
    """A scripted peer: what it answers, its status, and what it was asked."""

    serve: Serve
    status: StatusMsg
    order: Order
    connected: bool = True
    asked: list[int] = field(default_factory=list)
    outbox: list[Message] = field(default_factory=list)


class FakeNet:
    """Peers on an in-memory network, standing in for the switch.

    `send` queues the peer's answer; the answers to all requests one syncer pass
    sends go out together right after it (`call_soon`), in the order the peer's
    `order` gives them, so tests reorder deliveries deterministically. `penalise`
    disconnects the peer and reports it gone, as the switch's ban does. `cue_behind`
    counts the syncer's calls saying a probe showed we are behind.
    """

    def __init__(self) -> None:
        self.peers: dict[bytes, FakePeer] = {}
        self.bans: list[tuple[bytes, str]] = []
        self.delivered: list[tuple[bytes, int]] = []
        self.behind_cues = 0  # times the syncer said a probe showed we are behind
        self.syncer: BlockSyncer | None = None

    def add(self, peer_id: bytes, serve: Serve, height: int, base: int = 1,
            order: Order = list) -> FakePeer:
        status = StatusMsg(height=height, round=0, step=1, base=base)
        self.peers[peer_id] = peer = FakePeer(serve=serve, status=status, order=order)
        if self.syncer is not None:
            self.syncer.on_status(peer_id, status)
        return peer

    def claim(self, peer_id: bytes, height: int) -> None:
        """The peer reports a new committed height (a new status)."""
        peer = self.peers[peer_id]
        peer.status = replace(peer.status, height=height)
        self.syncer.on_status(peer_id, peer.status)

    def cue_behind(self) -> None:
        self.behind_cues += 1

    def attach(self, syncer: BlockSyncer) -> BlockSyncer:
        self.syncer = syncer
        for peer_id, peer in self.peers.items():
            syncer.on_status(peer_id, peer.status)
        return syncer

    def send(self, peer_id: bytes, msg: Message) -> bool:
        peer = self.peers.get(peer_id)
        if peer is None or not peer.connected:
            return False
        peer.asked.append(msg.height)
        answer = peer.serve(msg.height)
        if answer is not None:
            if not peer.outbox:
                asyncio.get_running_loop().call_soon(self._flush, peer_id)
            peer.outbox.append(answer)
        return True

    def penalise(self, peer_id: bytes, reason: str) -> None:
        self.bans.append((peer_id, reason))
        self.disconnect(peer_id)

    def disconnect(self, peer_id: bytes) -> None:
        self.peers[peer_id].connected = False
        asyncio.get_running_loop().call_soon(self.syncer.on_peer_gone, peer_id)

    def _flush(self, peer_id: bytes) -> None:
        peer = self.peers[peer_id]
        batch, peer.outbox = peer.order(peer.outbox), []
        for answer in batch:
            if not peer.connected:
                return
            if isinstance(answer, BlockResponse):
                self.delivered.append((peer_id, answer.commit.height))
                self.syncer.on_block_response(peer_id, answer)
            else:
                self.syncer.on_no_block(peer_id, answer)
