"""The p2p handshake: both sides say who they are, then prove it.

Each side sends, without waiting for the other:

1. `Hello`: protocol version, chain id, genesis hash, node id (its node public
   key), a fresh 32-byte nonce, its listen port and moniker;

then, once it has the peer's Hello and found it compatible:

2. `HelloProof`: an Ed25519 signature by its node key over
   `sign_bytes(chain_id, HelloProof.TYPE_TAG, peer_nonce || own_id || peer_id)`.

Signing the peer's fresh nonce proves the node id now (no replay), and naming
both ids binds the proof to this pair (no relaying a proof to a third node).
A wrong version, chain or genesis closes the link without blame; a proof that
does not verify is the peer's fault beyond doubt.
"""

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from chain.codec import decode, encode
from chain.crypto import SigningKey, sign_bytes, verify
from chain.errors import DecodeError
from p2p.errors import (
    BadHelloProof,
    HandshakeTimeout,
    IncompatiblePeer,
    ProtocolViolation,
    SelfConnection,
    UnexpectedPeer,
)
from p2p.messages import (
    MAX_MONIKER_LEN,
    NONCE_LEN,
    PROTOCOL_VERSION,
    Frame,
    Hello,
    HelloProof,
    Message,
)

H = TypeVar("H", Hello, HelloProof)

SendFrame = Callable[[bytes], Awaitable[None]]
ReceiveFrame = Callable[[], Awaitable[bytes]]
ScreenHello = Callable[[Hello], None]


@dataclass(frozen=True, slots=True)
class LocalNode:
    """What this node says about itself in a handshake."""

    node_key: SigningKey
    chain_id: str
    genesis_hash: bytes
    listen_port: int
    moniker: str = ""

    @property
    def node_id(self) -> bytes:
        """The node id: the node key's public key."""
        return self.node_key.public_key


def encode_frame(message: Message) -> bytes:
    """The wire bytes of one message."""
    return encode(Frame(message))


def make_hello(local: LocalNode, nonce: bytes) -> Hello:
    """Our Hello carrying `nonce`; the moniker is cut to the wire limit on a utf-8 boundary."""
    moniker = local.moniker.encode("utf-8")[:MAX_MONIKER_LEN]
    moniker = moniker.decode("utf-8", "ignore").encode("utf-8")
    return Hello(version=PROTOCOL_VERSION, chain_id=local.chain_id.encode("utf-8"),
                 genesis_hash=local.genesis_hash, node_id=local.node_id, nonce=nonce,
                 listen_port=local.listen_port, moniker=moniker)


def validate_hello(hello: Hello, local: LocalNode, expected_id: bytes | None) -> None:
    """The peer's Hello must match our version, chain and genesis, and not be us.

    When we dialed a configured `<id>@host:port`, the id must be that one.
    """
    if hello.version != PROTOCOL_VERSION:
        raise IncompatiblePeer(
            f"protocol version mismatch: expected {PROTOCOL_VERSION}, got {hello.version}")
    chain_id = local.chain_id.encode("utf-8")
    if hello.chain_id != chain_id:
        raise IncompatiblePeer(f"chain id mismatch: expected {local.chain_id!r}, "
                               f"got {hello.chain_id.decode('utf-8', 'replace')!r}")
    if hello.genesis_hash != local.genesis_hash:
        raise IncompatiblePeer(f"genesis hash mismatch: expected {local.genesis_hash.hex()}, "
                               f"got {hello.genesis_hash.hex()}")
    if hello.node_id == local.node_id:
        raise SelfConnection("connected to self")
    if expected_id is not None and hello.node_id != expected_id:
        raise UnexpectedPeer(f"unexpected node id: expected {expected_id.hex()}, "
                             f"got {hello.node_id.hex()}")


def compute_hello_proof_digest(chain_id: str, nonce: bytes, signer_id: bytes,
                               verifier_id: bytes) -> bytes:
    """What a HelloProof signs: the verifier's nonce and both ids under the chain's domain."""
    return sign_bytes(chain_id, HelloProof.TYPE_TAG, nonce + signer_id + verifier_id)


def compute_hello_proof(local: LocalNode, peer_hello: Hello) -> HelloProof:
    """Our proof of owning our node id, over the peer's nonce."""
    digest = compute_hello_proof_digest(local.chain_id, peer_hello.nonce, local.node_id,
                                        peer_hello.node_id)
    return HelloProof(signature=local.node_key.sign(digest))


def validate_hello_proof(proof: HelloProof, local: LocalNode, own_nonce: bytes,
                         peer_id: bytes) -> None:
    """The peer's proof must verify under the node id it claimed, over our nonce."""
    digest = compute_hello_proof_digest(local.chain_id, own_nonce, peer_id, local.node_id)
    if not verify(peer_id, digest, proof.signature):
        raise BadHelloProof(f"hello proof does not verify for node {peer_id.hex()}", peer_id)


def decode_handshake_frame(data: bytes, expected: type[H]) -> H:
    """The handshake message in `data`, which must be exactly an `expected` frame."""
    try:
        message = decode(Frame, data).message
    except DecodeError as exc:
        raise ProtocolViolation(f"undecodable handshake frame: {exc}") from None
    if not isinstance(message, expected):
        raise ProtocolViolation(
            f"expected {expected.__name__}, got {type(message).__name__}")
    return message


async def run_handshake(local: LocalNode, send: SendFrame, receive: ReceiveFrame,
                        timeout_s: float, expected_id: bytes | None = None,
                        screen: ScreenHello | None = None, nonce: bytes | None = None) -> Hello:
    """Run both handshake steps within `timeout_s`; returns the peer's proven Hello.

    `screen` sees the peer's Hello before we sign anything for it and may raise
    (a banned node id); `send` and `receive` move whole frames and raise a
    `HandshakeError` when the link fails.
    """
    own_nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
    try:
        async with asyncio.timeout(timeout_s):
            await send(encode_frame(make_hello(local, own_nonce)))
            peer_hello = decode_handshake_frame(await receive(), Hello)
            validate_hello(peer_hello, local, expected_id)
            if screen is not None:
                screen(peer_hello)
            await send(encode_frame(compute_hello_proof(local, peer_hello)))
            proof = decode_handshake_frame(await receive(), HelloProof)
            validate_hello_proof(proof, local, own_nonce, peer_hello.node_id)
    except TimeoutError:
        raise HandshakeTimeout(f"handshake not completed within {timeout_s:g} s") from None
    return peer_hello
