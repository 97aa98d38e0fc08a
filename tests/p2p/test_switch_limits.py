"""What a hostile or broken peer meets: refused handshakes, bans, frame and rate limits,
connection caps and deadlines. A `RawPeer` speaks the handshake by hand, then misbehaves."""

import asyncio
import contextlib
import os
import time

import aiohttp
import pytest

from chain.crypto import SigningKey
from p2p.handshake import encode_frame, make_hello
from p2p.messages import HelloProof, TxMsg
from p2p.peer import Peer, PeerLimits
from tests.p2p.switch_harness import (
    RawPeer,
    fast_config,
    make_node,
    running,
    wait_for,
)


def tx(tag: str, size: int = 0) -> TxMsg:
    return TxMsg(tx=tag.encode() + os.urandom(4) + bytes(size))


@pytest.mark.parametrize(("raw_kwargs", "expected"), [
    ({"chain_id": "another-chain"}, "chain id mismatch"),
    ({"genesis_hash": bytes(32)}, "genesis hash mismatch"),
])
def test_other_network_is_refused_without_a_ban(raw_kwargs: dict, expected: str) -> None:
    async def scenario() -> None:
        a = make_node()
        raw = RawPeer(**raw_kwargs)
        async with running(a):
            try:
                await raw.open(a.switch.port)
                await raw.ws.send_bytes(encode_frame(make_hello(raw.local, bytes(32))))
                await raw.receive_bytes()  # the switch's Hello
                _, reason = await raw.wait_closed()
                assert expected in reason
                assert not a.switch.is_banned(raw.node_id, "127.0.0.1")
                assert a.switch.peers() == []
            finally:
                await raw.close()

    asyncio.run(scenario())


async def read_until_cut(reader: asyncio.StreamReader) -> None:
    """Read until the server ends the connection (a FIN or, after an abort, a reset)."""
    with contextlib.suppress(ConnectionResetError):
        while await reader.read(4096):
            pass


def test_bad_proof_bans_that_node_id_from_that_host() -> None:
    async def scenario() -> None:
        a = make_node()
        key = SigningKey.generate()
        liar, again = RawPeer(key), RawPeer(key)
        async with running(a):
            try:
                await liar.open(a.switch.port)
                await liar.hello()
                await liar.ws.send_bytes(encode_frame(HelloProof(signature=bytes(64))))
                _, reason = await liar.wait_closed()
                assert "does not verify" in reason
                assert a.switch.is_banned(key.public_key, "127.0.0.1")
                # The id is unproven: it is not banned when it comes from elsewhere.
                assert not a.switch.is_banned(key.public_key)
                await again.open(a.switch.port)
                await again.ws.send_bytes(encode_frame(make_hello(again.local, bytes(32))))
                await again.receive_bytes()
                _, reason = await again.wait_closed()
                assert "banned" in reason
            finally:
                await liar.close()
                await again.close()

    asyncio.run(scenario())


async def misbehave(frame: bytes, text: bool = False, **config: object) -> None:
    """A raw peer handshakes, sends `frame` and must be banned within 1 s, then refused."""
    a = make_node(fast_config(**config))
    key = SigningKey.generate()
    raw, again = RawPeer(key), RawPeer(key)
    async with running(a):
        try:
            await raw.handshake(a.switch.port)
            await wait_for(lambda: len(a.switch.peers()) == 1)
            if text:
                await raw.ws.send_str(frame.decode())
            else:
                await raw.ws.send_bytes(frame)
            await wait_for(lambda: a.switch.is_banned(key.public_key), timeout=1.0)
            await raw.wait_closed()
            assert a.switch.peers() == [] and a.handler.disconnected == [key.public_key]
            await again.open(a.switch.port)
            await again.ws.send_bytes(encode_frame(make_hello(again.local, bytes(32))))
            await again.receive_bytes()
            _, reason = await again.wait_closed()
            assert "banned" in reason
        finally:
            await raw.close()
            await again.close()


def test_undecodable_frame_bans_within_a_second_and_reconnects_are_refused() -> None:
    asyncio.run(misbehave(b"\xff\x00 not a frame"))


def test_oversize_frame_bans() -> None:
    asyncio.run(misbehave(bytes(2048), max_frame_bytes=1024))


def test_text_frame_bans() -> None:
    asyncio.run(misbehave(b"hello", text=True))


def test_handshake_message_after_the_handshake_bans() -> None:
    hello = make_hello(RawPeer().local, bytes(32))
    asyncio.run(misbehave(encode_frame(hello)))


def test_frame_of_exactly_the_maximum_size_is_delivered() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(max_frame_bytes=1024))
        raw = RawPeer()
        async with running(a):
            try:
                await raw.handshake(a.switch.port)
                frame = next(f for n in range(900, 1024)
                             if len(f := encode_frame(TxMsg(tx=bytes(n)))) == 1024)
                await raw.ws.send_bytes(frame)
                await wait_for(lambda: len(a.handler.received(TxMsg)) == 1)
                assert not a.switch.is_banned(raw.node_id)
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_frames_over_the_rate_are_dropped_and_cost_score() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(max_frames_per_s=5))
        raw = RawPeer()
        async with running(a):
            try:
                await raw.handshake(a.switch.port)
                started = time.monotonic()
                for i in range(20):
                    await raw.ws.send_bytes(encode_frame(tx(f"flood-{i}")))
                await wait_for(lambda: a.switch.peers() and a.switch.peers()[0].score <= -5)
                elapsed = time.monotonic() - started
                assert len(a.handler.received(TxMsg)) <= 5 + 5 * elapsed + 1
                assert not a.switch.is_banned(raw.node_id)  # a burst is not yet a ban
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_bytes_over_the_rate_are_dropped() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(max_bytes_per_s=3000, max_frame_bytes=1500))
        raw = RawPeer()
        async with running(a):
            try:
                await raw.handshake(a.switch.port)
                for i in range(6):
                    await raw.ws.send_bytes(encode_frame(tx(f"big-{i}", size=1000)))
                await wait_for(lambda: a.switch.peers() and a.switch.peers()[0].score < 0)
                assert len(a.handler.received(TxMsg)) < 6
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_a_sustained_flood_disconnects_and_bans() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(max_frames_per_s=5))
        raw = RawPeer()
        async with running(a):
            try:
                await raw.handshake(a.switch.port)
                frame = encode_frame(tx("same"))  # the rate check comes before dedup
                with contextlib.suppress(ConnectionError):  # the switch may cut us off early
                    for _ in range(300):
                        await raw.ws.send_bytes(frame)
                await wait_for(lambda: a.switch.is_banned(raw.node_id))
                await raw.wait_closed()
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_inbound_peers_over_the_cap_get_503_before_the_upgrade() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(max_inbound=1))
        first, second = RawPeer(), RawPeer()
        async with running(a):
            try:
                await first.handshake(a.switch.port)
                await wait_for(lambda: len(a.switch.peers()) == 1)
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await second.open(a.switch.port)
                assert info.value.status == 503
            finally:
                await first.close()
                await second.close()

    asyncio.run(scenario())


def test_slowloris_connections_are_capped_and_cut_at_their_deadline() -> None:
    async def dribble(writer: asyncio.StreamWriter) -> None:
        """Send a request's headers one byte every 20 ms, forever."""
        writer.write(b"GET /p2p HTTP/1.1\r\n")
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.02)

    async def scenario() -> None:
        a = make_node(fast_config(max_pending=1, handshake_timeout_s=0.25))
        async with running(a):
            port = a.switch.port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            dribbler = asyncio.create_task(dribble(writer))
            try:
                await asyncio.sleep(0.05)  # let the switch accept it
                reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
                assert (await reader2.read()).startswith(b"HTTP/1.1 503")
                writer2.close()
                # Cut at its deadline, bytes flowing or not (aiohttp's own keep-alive
                # timer, armed at the accept, may cut it first: both are 0.25 s here).
                await asyncio.wait_for(read_until_cut(reader), 2.0)
                assert 0.2 < time.monotonic() - started < 1.5
            finally:
                dribbler.cancel()
                await asyncio.gather(dribbler, return_exceptions=True)
                writer.close()
            raw = RawPeer()
            try:
                await raw.handshake(port)  # room again
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_stalled_handshake_is_closed() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(handshake_timeout_s=0.2))
        raw = RawPeer()
        async with running(a):
            try:
                await raw.open(a.switch.port)
                await raw.receive_bytes()  # the switch's Hello; we never answer
                await raw.wait_closed(timeout=2.0)
                assert a.switch.peers() == [] and not a.switch.is_banned(raw.node_id)
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_peer_that_answers_no_pings_is_dropped_as_idle() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(ping_interval_s=0.05, idle_timeout_s=0.3))
        raw = RawPeer()
        async with running(a):
            try:
                await raw.open(a.switch.port)
                await raw.hello()
                await raw.prove()
                await wait_for(lambda: len(a.switch.peers()) == 1)
                # Nothing read, nothing sent: the raw peer's pongs never go out.
                await wait_for(lambda: a.switch.peers() == [], timeout=2.0)
                assert not a.switch.is_banned(raw.node_id)
            finally:
                await raw.close()

    asyncio.run(scenario())


class _NoSocket:
    """Stands in for a WebSocket where only the send queue is exercised."""

    def get_extra_info(self, name: str) -> None:
        return None


def test_full_send_queue_drops_frames_instead_of_blocking() -> None:
    async def scenario() -> None:
        limits = PeerLimits(max_frame_bytes=100, max_frames_per_s=10, max_bytes_per_s=1000,
                            send_queue_frames=2, send_queue_bytes=250, ping_interval_s=1,
                            idle_timeout_s=1)
        hello = make_hello(RawPeer().local, bytes(32))
        peer = Peer(_NoSocket(), hello, "127.0.0.1", 1, False, limits,  # type: ignore[arg-type]
                    asyncio.get_running_loop().time())
        assert peer.enqueue(bytes(100)) and peer.enqueue(bytes(100))
        assert not peer.enqueue(bytes(1))  # frame cap
        peer2 = Peer(_NoSocket(), hello, "127.0.0.1", 1, False, limits,  # type: ignore[arg-type]
                     asyncio.get_running_loop().time())
        assert peer2.enqueue(bytes(200))
        assert not peer2.enqueue(bytes(51))  # byte cap
        assert peer.dropped_frames == 1 and peer2.dropped_frames == 1

    asyncio.run(scenario())

