"""The peer-to-peer wire: every frame is one canonical `Frame` record.

A frame is `[tag, message]` (a codec OneOf), sent as one binary WebSocket
message. Decoding is the codec's strict decoding, so a frame that is not exactly
one canonical message of a known type is a `DecodeError` (and costs the sender
its connection). Blocks and txs travel as their canonical bytes so a receiver
can hash and re-serve them without re-encoding.

Handshake (`Hello`, `HelloProof`) comes first on every connection; after it:
- gossip: `TxMsg`, `TxsMsg` (a batch), `ProposalMsg`, `VoteMsg`, `EvidenceMsg`
  (flooded, deduplicated);
- state: `StatusMsg` (a peer's committed height, consensus round and step,
  lowest block it serves), sent on connect, on every new height and periodically;
- round catch-up: `RoundStateMsg`, the proposal and votes of a round, sent
  directly (never deduplicated) to a peer whose status shows it stuck in the
  round: gossip deduplication means a message a peer once dropped is never
  flooded to it again, and Tendermint's liveness needs every vote delivered;
- block sync: `BlockRequest` → `BlockResponse` or `NoBlock`;
- peer exchange: `PexRequest` → `PexAddrs`.
"""

from __future__ import annotations

from typing import Annotated

from chain.codec import (
    HASH,
    PUBKEY,
    SIGNATURE,
    U8,
    U32,
    U64,
    Bytes,
    ListOf,
    OneOf,
    Record,
    record,
)
from chain.records import (
    CHAIN_ID,
    Commit,
    DuplicateVoteEvidence,
    SignedProposal,
    SignedVote,
)

PROTOCOL_VERSION = 1
NONCE_LEN = 32
MAX_TX_BYTES = 1 << 20
MAX_BLOCK_BYTES = 16 << 20
MAX_PEX_ADDRS = 64
MAX_HOST_LEN = 253
MAX_MONIKER_LEN = 64


# --- handshake ----------------------------------------------------------------


@record
class Hello(Record):
    """First frame each side sends: who it is, which network, and a fresh nonce.

    `listen_port` is where the sender accepts connections (0: it does not), so
    the receiver can offer it to others in peer exchange.
    """

    version: Annotated[int, U32]
    chain_id: Annotated[bytes, CHAIN_ID]
    genesis_hash: Annotated[bytes, HASH]
    node_id: Annotated[bytes, PUBKEY]
    nonce: Annotated[bytes, Bytes(NONCE_LEN, NONCE_LEN)]
    listen_port: Annotated[int, U32]
    moniker: Annotated[bytes, Bytes(0, MAX_MONIKER_LEN)]


@record
class HelloProof(Record):
    """Second frame: the sender's node key signs the PEER's nonce (proves the node id)."""

    TYPE_TAG = b"p2p-hello"
    signature: Annotated[bytes, SIGNATURE]


# --- gossip -------------------------------------------------------------------


@record
class TxMsg(Record):
    """A signed transaction as its canonical bytes (a `SignedTx` encoding)."""

    tx: Annotated[bytes, Bytes(1, MAX_TX_BYTES)]


MAX_TXS_PER_MSG = 1024
MAX_TXS_MSG_BYTES = 1 << 20  # what a sender packs into one TxsMsg (frames stay small)


@record
class TxsMsg(Record):
    """Signed transactions as their canonical bytes, gossiped together.

    Txs arrive in bursts; one frame per tx would spend a peer's frame budget
    (and the per-frame overhead) on what one frame carries as well.
    """

    txs: Annotated[tuple[bytes, ...], ListOf(Bytes(1, MAX_TX_BYTES), MAX_TXS_PER_MSG)]


@record
class ProposalMsg(Record):
    """A signed proposal and the canonical bytes of the block it proposes."""

    proposal: SignedProposal
    block: Annotated[bytes, Bytes(1, MAX_BLOCK_BYTES)]


@record
class VoteMsg(Record):
    """A signed prevote or precommit."""

    vote: SignedVote


@record
class EvidenceMsg(Record):
    """Evidence of a validator signing two conflicting votes."""

    evidence: DuplicateVoteEvidence


@record
class StatusMsg(Record):
    """Where a peer is: committed `height`, consensus `round`/`step` at height + 1,
    and `base`, the lowest height whose block it can serve."""

    height: Annotated[int, U64]
    round: Annotated[int, U32]
    step: Annotated[int, U8]
    base: Annotated[int, U64]


MAX_ROUND_STATE_VOTES = 4 * 1024


@record
class RoundStateMsg(Record):
    """The sender's proposal (at most one) and votes for its current height's rounds."""

    proposals: Annotated[tuple[ProposalMsg, ...], ListOf(ProposalMsg, 1)]
    votes: Annotated[tuple[SignedVote, ...], ListOf(SignedVote, MAX_ROUND_STATE_VOTES)]


# --- block sync ---------------------------------------------------------------


@record
class BlockRequest(Record):
    """Ask for the committed block at `height` and the commit that finalised it."""

    height: Annotated[int, U64]


@record
class BlockResponse(Record):
    """A committed block (canonical bytes) and +2/3 precommits for it."""

    block: Annotated[bytes, Bytes(1, MAX_BLOCK_BYTES)]
    commit: Commit


@record
class NoBlock(Record):
    """The peer has no block at `height`."""

    height: Annotated[int, U64]


# --- peer exchange -------------------------------------------------------------


@record
class PeerAddr(Record):
    """A dialable peer: node id (public key), host and port."""

    node_id: Annotated[bytes, PUBKEY]
    host: Annotated[bytes, Bytes(1, MAX_HOST_LEN)]
    port: Annotated[int, U32]


@record
class PexRequest(Record):
    """Ask a peer for addresses of other peers."""


@record
class PexAddrs(Record):
    """Addresses of peers the sender knows (at most MAX_PEX_ADDRS)."""

    addrs: Annotated[tuple[PeerAddr, ...], ListOf(PeerAddr, MAX_PEX_ADDRS)]


MESSAGES = OneOf((
    (1, Hello),
    (2, HelloProof),
    (10, TxMsg),
    (11, ProposalMsg),
    (12, VoteMsg),
    (13, EvidenceMsg),
    (14, StatusMsg),
    (15, RoundStateMsg),
    (16, TxsMsg),
    (20, BlockRequest),
    (21, BlockResponse),
    (22, NoBlock),
    (30, PexRequest),
    (31, PexAddrs),
))

Message = (Hello | HelloProof | TxMsg | TxsMsg | ProposalMsg | VoteMsg | EvidenceMsg | StatusMsg
           | RoundStateMsg | BlockRequest | BlockResponse | NoBlock | PexRequest | PexAddrs)


@record
class Frame(Record):
    """One wire frame: a tagged message."""

    message: Annotated[Message, MESSAGES]


def tx_batches(raws: list[bytes]) -> list[TxsMsg]:
    """`raws` packed in order into messages of at most MAX_TXS_PER_MSG txs and about
    MAX_TXS_MSG_BYTES bytes each (a single larger tx still gets its own message)."""
    batches: list[TxsMsg] = []
    current: list[bytes] = []
    size = 0
    for raw in raws:
        if current and (len(current) == MAX_TXS_PER_MSG or size + len(raw) > MAX_TXS_MSG_BYTES):
            batches.append(TxsMsg(txs=tuple(current)))
            current, size = [], 0
        current.append(raw)
        size += len(raw)
    if current:
        batches.append(TxsMsg(txs=tuple(current)))
    return batches
