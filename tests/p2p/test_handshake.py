"""The handshake over an in-memory link: success, every refusal, proofs bound to nonce and ids."""

import asyncio
import dataclasses

import pytest

from chain.crypto import SigningKey, verify
from p2p.errors import (
    BadHelloProof,
    HandshakeTimeout,
    IncompatiblePeer,
    PeerRefused,
    ProtocolViolation,
    SelfConnection,
    UnexpectedPeer,
)
from p2p.handshake import (
    LocalNode,
    compute_hello_proof,
    compute_hello_proof_digest,
    decode_handshake_frame,
    encode_frame,
    make_hello,
    run_handshake,
    validate_hello,
    validate_hello_proof,
)
from p2p.messages import MAX_MONIKER_LEN, PROTOCOL_VERSION, Hello, HelloProof, TxMsg

CHAIN = "gannet-hs"
GENESIS = bytes([1]) * 32


def local(seed: int, chain_id: str = CHAIN, genesis: bytes = GENESIS,
          moniker: str = "") -> LocalNode:
    return LocalNode(SigningKey.from_seed(bytes([seed]) * 32), chain_id, genesis, 26656, moniker)


class MemoryEnd:
    """One end of an in-memory frame link that records what it sent."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        await self.outbox.put(data)

    async def receive(self) -> bytes:
        return await self.inbox.get()


def memory_link() -> tuple[MemoryEnd, MemoryEnd]:
    a_to_b: asyncio.Queue[bytes] = asyncio.Queue()
    b_to_a: asyncio.Queue[bytes] = asyncio.Queue()
    return MemoryEnd(b_to_a, a_to_b), MemoryEnd(a_to_b, b_to_a)


async def both(a: LocalNode, b: LocalNode, **kwargs_a: object) -> list[object]:
    """Run both sides; each result is the peer's Hello or the exception raised.

    The timeout is short: when one side refuses, the other waits for it in vain.
    """
    end_a, end_b = memory_link()
    return await asyncio.gather(
        run_handshake(a, end_a.send, end_a.receive, 0.2, **kwargs_a),  # type: ignore[arg-type]
        run_handshake(b, end_b.send, end_b.receive, 0.2),
        return_exceptions=True)


def test_handshake_succeeds_and_each_side_learns_the_other() -> None:
    a, b = local(1, moniker="alpha"), local(2)
    hello_b, hello_a = asyncio.run(both(a, b, expected_id=local(2).node_id))
    assert isinstance(hello_a, Hello) and isinstance(hello_b, Hello)
    assert hello_b.node_id == b.node_id and hello_a.node_id == a.node_id
    assert hello_a.moniker == b"alpha" and hello_a.listen_port == 26656


@pytest.mark.parametrize(("other", "message"), [
    (local(2, chain_id="other-chain"), "chain id mismatch"),
    (local(2, genesis=bytes(32)), "genesis hash mismatch"),
])
def test_other_network_is_incompatible_on_both_sides(other: LocalNode, message: str) -> None:
    results = asyncio.run(both(local(1), other))
    for result in results:
        assert isinstance(result, IncompatiblePeer) and message in str(result)
        assert not result.ban


def test_other_protocol_version_is_incompatible() -> None:
    me = local(1)
    hello = dataclasses.replace(make_hello(local(2), bytes(32)), version=PROTOCOL_VERSION + 1)
    with pytest.raises(IncompatiblePeer, match="protocol version mismatch"):
        validate_hello(hello, me, None)


def test_connecting_to_self_is_refused() -> None:
    results = asyncio.run(both(local(1), local(1)))
    assert all(isinstance(r, SelfConnection) for r in results)


def test_unexpected_node_id_is_refused() -> None:
    result_a, result_b = asyncio.run(both(local(1), local(2), expected_id=local(3).node_id))
    assert isinstance(result_a, UnexpectedPeer)
    assert isinstance(result_b, HandshakeTimeout)  # A never sent B its proof


def test_proof_binds_nonce_and_both_ids() -> None:
    a, b, c = local(1), local(2), local(3)
    hello_b = make_hello(b, bytes([9]) * 32)
    proof = compute_hello_proof(a, hello_b)
    validate_hello_proof(proof, b, bytes([9]) * 32, a.node_id)
    # Another nonce, or relaying the proof to a third node, does not verify.
    with pytest.raises(BadHelloProof):
        validate_hello_proof(proof, b, bytes([8]) * 32, a.node_id)
    with pytest.raises(BadHelloProof):
        validate_hello_proof(proof, c, bytes([9]) * 32, a.node_id)
    digest = compute_hello_proof_digest(CHAIN, bytes([9]) * 32, a.node_id, b.node_id)
    assert verify(a.node_id, digest, proof.signature)
    assert digest != compute_hello_proof_digest(CHAIN, bytes([9]) * 32, b.node_id, a.node_id)


def test_bad_proof_names_the_claimed_node_and_is_bannable() -> None:
    async def scenario() -> None:
        end_a, end_b = memory_link()
        me, liar = local(1), local(2)
        task = asyncio.create_task(run_handshake(me, end_a.send, end_a.receive, 1.0))
        await end_b.send(encode_frame(make_hello(liar, bytes(32))))
        await end_b.receive()  # me's Hello
        await end_b.send(encode_frame(HelloProof(signature=bytes(64))))
        with pytest.raises(BadHelloProof) as info:
            await task
        assert info.value.node_id == liar.node_id and info.value.ban

    asyncio.run(scenario())


def test_silent_peer_times_out() -> None:
    async def scenario() -> None:
        end_a, _ = memory_link()
        with pytest.raises(HandshakeTimeout):
            await run_handshake(local(1), end_a.send, end_a.receive, 0.05)

    asyncio.run(scenario())


@pytest.mark.parametrize("first", [b"\x92\x01", encode_frame(TxMsg(tx=b"x"))])
def test_wrong_first_frame_is_a_protocol_violation(first: bytes) -> None:
    async def scenario() -> None:
        end_a, end_b = memory_link()
        await end_b.send(first)
        with pytest.raises(ProtocolViolation):
            await run_handshake(local(1), end_a.send, end_a.receive, 1.0)

    asyncio.run(scenario())


def test_screen_refuses_before_anything_is_signed() -> None:
    def refuse(hello: Hello) -> None:
        raise PeerRefused(f"node {hello.node_id.hex()} is banned")

    async def scenario() -> None:
        end_a, end_b = memory_link()
        task = asyncio.create_task(
            run_handshake(local(1), end_a.send, end_a.receive, 1.0, screen=refuse))
        await end_b.send(encode_frame(make_hello(local(2), bytes(32))))
        with pytest.raises(PeerRefused):
            await task
        assert len(end_a.sent) == 1
        decode_handshake_frame(end_a.sent[0], Hello)

    asyncio.run(scenario())


def test_moniker_is_cut_to_the_wire_limit_on_a_character_boundary() -> None:
    hello = make_hello(local(1, moniker="é" * 40), bytes(32))
    assert len(hello.moniker) <= MAX_MONIKER_LEN
    assert hello.moniker.decode("utf-8") == "é" * 32
    decode_handshake_frame(encode_frame(hello), Hello)
