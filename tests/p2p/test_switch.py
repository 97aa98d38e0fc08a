"""Switches on real sockets (127.0.0.1, free ports): links, every message type, gossip
dedup, the handler contract, duplicate links, reconnects, peer exchange and shutdown."""

import asyncio
import logging
import os
import socket
from dataclasses import replace

import pytest

from chain.crypto import SigningKey
from p2p.addrbook import PeerAddress
from p2p.errors import InvalidPeerAddress, Misbehaviour
from p2p.handshake import compute_hello_proof, encode_frame
from p2p.messages import Message, PexAddrs, StatusMsg, TxMsg
from p2p.switch import SwitchConfig, is_gossip
from tests.p2p.switch_harness import (
    STATUS,
    RawPeer,
    RecordingHandler,
    fast_config,
    make_node,
    running,
    sample_messages,
    wait_for,
    wait_linked,
)


def tx(tag: str) -> TxMsg:
    return TxMsg(tx=tag.encode() + os.urandom(4))


def test_two_switches_exchange_every_message_type() -> None:
    async def scenario() -> None:
        a = make_node(moniker="alpha")
        async with running(a):
            b = make_node(fast_config(persistent_peers=(a.address,)))
            async with running(b):
                await wait_linked(a, b)
                sent_by_a, sent_by_b = sample_messages(a.key), sample_messages(b.key)
                for message in sent_by_b:
                    assert b.switch.send(a.switch.node_id, message)
                for message in sent_by_a:
                    assert a.switch.broadcast(message) == 1
                await wait_for(lambda: len(a.handler.messages) == len(sent_by_b) + 1
                               and len(b.handler.messages) == len(sent_by_a) + 1)
                # First the peer's status, sent right after the handshake, then ours in order.
                assert a.handler.received() == [STATUS, *sent_by_b]
                assert b.handler.received() == [STATUS, *sent_by_a]
                assert {sender for sender, _ in a.handler.messages} == {b.switch.node_id}
                [info_at_b] = b.switch.peers()
                assert info_at_b.node_id == a.switch.node_id and info_at_b.outbound
                assert info_at_b.moniker == "alpha" and info_at_b.port == a.switch.port
                assert info_at_b.status == StatusMsg(height=9, round=1, step=2, base=1)
                [info_at_a] = a.switch.peers()
                assert not info_at_a.outbound and info_at_a.port == b.switch.port
                assert a.handler.connected == [b.switch.node_id]
            await wait_for(lambda: a.handler.disconnected == [b.switch.node_id])
            assert a.switch.peers() == []

    asyncio.run(scenario())


def test_send_to_an_unknown_peer_is_refused() -> None:
    async def scenario() -> None:
        a = make_node()
        async with running(a):
            assert not a.switch.send(bytes(32), tx("nobody"))
            assert a.switch.broadcast(tx("nobody")) == 0

    asyncio.run(scenario())


def relaying_handler(node_ref: list) -> RecordingHandler:
    """A handler that floods each gossip message on, as the node does."""
    handler = RecordingHandler()
    original = handler.on_message

    async def on_message(peer, message: Message) -> None:  # type: ignore[no-untyped-def]
        await original(peer, message)
        if is_gossip(message):
            node_ref[0].switch.broadcast(message, exclude=peer.node_id)

    handler.on_message = on_message  # type: ignore[method-assign]
    return handler


def test_three_switches_deliver_every_message_exactly_once() -> None:
    async def scenario() -> None:
        refs: list[list] = [[None], [None], [None]]
        a = make_node(handler=relaying_handler(refs[0]))
        async with running(a):
            b = make_node(fast_config(persistent_peers=(a.address,)),
                          handler=relaying_handler(refs[1]))
            async with running(b):
                c = make_node(fast_config(persistent_peers=(a.address, b.address)),
                              handler=relaying_handler(refs[2]))
                refs[0][0], refs[1][0], refs[2][0] = a, b, c
                async with running(c):
                    for x, y in ((a, b), (b, c), (c, a)):
                        await wait_linked(x, y)
                    sent = sample_messages(c.key)
                    for message in sent:
                        assert c.switch.broadcast(message) == 2
                    await wait_for(lambda: all(m in a.handler.received()
                                               and m in b.handler.received() for m in sent))
                    # A and B relay the gossip to each other (neither knows the other has
                    # it); markers sent now travel behind any relayed copy (FIFO links).
                    markers = [tx(f"marker-{i}") for i in range(3)]
                    for node, marker in zip((a, b, c), markers, strict=True):
                        node.switch.broadcast(marker)
                    for node in (a, b, c):
                        await wait_for(lambda n=node: sum(m in n.handler.received()
                                                          for m in markers) == 2)
                    for node in (a, b):
                        from_c = [m for sender, m in node.handler.messages
                                  if m in sent and sender == c.switch.node_id]
                        assert from_c == sent  # once each, in order, straight from C
                        assert all(node.handler.received().count(m) == 1 for m in sent
                                   if is_gossip(m))
                    assert not any(m in c.handler.received() for m in sent)  # no echo

    asyncio.run(scenario())


def test_gossip_dedup_drops_repeats_and_echoes_but_delivers_other_messages() -> None:
    async def scenario() -> None:
        a = make_node()
        raw = RawPeer()
        async with running(a):
            try:
                await raw.handshake(a.switch.port)
                await wait_for(lambda: len(a.switch.peers()) == 1)
                repeated = encode_frame(tx("twice"))
                await raw.ws.send_bytes(repeated)
                await raw.ws.send_bytes(repeated)
                ours = tx("ours")
                assert a.switch.broadcast(ours) == 1
                echo = encode_frame(ours)
                await raw.ws.send_bytes(echo)  # our own gossip coming back
                status = encode_frame(STATUS)
                await raw.ws.send_bytes(status)
                await raw.ws.send_bytes(status)  # not gossip: delivered each time
                marker = tx("marker")
                await raw.ws.send_bytes(encode_frame(marker))
                await wait_for(lambda: marker in a.handler.received())
                assert a.handler.received() == [
                    a.handler.received()[0], STATUS, STATUS, marker]
                assert isinstance(a.handler.received()[0], TxMsg)
                # The peer is known to have what it sent: a broadcast skips it.
                assert a.switch.broadcast(a.handler.received()[0]) == 0
                assert a.switch.broadcast(ours) == 0
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_handler_soft_misbehaviour_lowers_score_and_keeps_the_link() -> None:
    def react(message: Message) -> None:
        if isinstance(message, TxMsg) and message.tx.startswith(b"bad"):
            raise Misbehaviour("useless tx", ban=False)

    async def scenario() -> None:
        a = make_node(handler=RecordingHandler(react=react))
        async with running(a):
            b = make_node(fast_config(persistent_peers=(a.address,)))
            async with running(b):
                await wait_linked(a, b)
                good = tx("good")
                b.switch.broadcast(tx("bad"))
                b.switch.broadcast(good)
                await wait_for(lambda: good in a.handler.received())
                [info] = a.switch.peers()
                assert -10 <= info.score < 0
                assert not a.switch.is_banned(b.switch.node_id)
                assert a.handler.disconnected == []

    asyncio.run(scenario())


def test_handler_misbehaviour_with_ban_disconnects_and_bans() -> None:
    def react(message: Message) -> None:
        if isinstance(message, TxMsg):
            raise Misbehaviour("invalid signature")

    async def scenario() -> None:
        a = make_node(handler=RecordingHandler(react=react))
        async with running(a):
            b = make_node(fast_config(persistent_peers=(a.address,)))
            async with running(b):
                await wait_linked(a, b)
                b.switch.broadcast(tx("forged"))
                await wait_for(lambda: a.switch.is_banned(b.switch.node_id))
                await wait_for(lambda: a.switch.peers() == [] and b.switch.peers() == [])
                assert a.handler.disconnected == [b.switch.node_id]
                # B keeps redialing (persistent) and is refused while banned.
                await asyncio.sleep(0.3)
                assert a.switch.peers() == []

    asyncio.run(scenario())


def test_handler_exception_is_logged_and_the_link_lives_on(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    def react(message: Message) -> None:
        if isinstance(message, TxMsg) and message.tx.startswith(b"boom"):
            raise RuntimeError("bug in the handler")

    async def scenario() -> None:
        a = make_node(handler=RecordingHandler(react=react))
        async with running(a):
            b = make_node(fast_config(persistent_peers=(a.address,)))
            async with running(b):
                await wait_linked(a, b)
                after = tx("after")
                b.switch.broadcast(tx("boom"))
                b.switch.broadcast(after)
                await wait_for(lambda: after in a.handler.received())
                assert not a.switch.is_banned(b.switch.node_id)
                assert [p.score for p in a.switch.peers()] == [0]

    with caplog.at_level(logging.ERROR, logger="gannet.p2p"):
        asyncio.run(scenario())
    assert any("handler failed on TxMsg" in r.message and r.exc_info for r in caplog.records)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mutual_persistent_peers_converge_on_one_link() -> None:
    async def scenario() -> None:
        key_a, key_b = SigningKey.generate(), SigningKey.generate()
        port_a, port_b = free_port(), free_port()
        a = make_node(fast_config(port=port_a, persistent_peers=(
            f"{key_b.public_key.hex()}@127.0.0.1:{port_b}",)), key=key_a)
        b = make_node(fast_config(port=port_b, persistent_peers=(
            f"{key_a.public_key.hex()}@127.0.0.1:{port_a}",)), key=key_b)
        async with running(a, b):
            def settled() -> bool:
                at_a, at_b = a.switch.peers(), b.switch.peers()
                return len(at_a) == len(at_b) == 1 and at_a[0].outbound != at_b[0].outbound

            await wait_for(settled, what="one link seen alike from both ends")
            for node in (a, b):
                assert len(node.handler.connected) - len(node.handler.disconnected) == 1

    for _ in range(3):
        asyncio.run(scenario())


def ordered_keys() -> tuple[SigningKey, SigningKey]:
    """Two keys, the lower node id first."""
    one, two = SigningKey.generate(), SigningKey.generate()
    return (one, two) if one.public_key < two.public_key else (two, one)


@pytest.mark.parametrize("first_dialer_is_lower", [True, False])
def test_of_two_links_the_one_dialed_by_the_lower_node_id_stays(
        first_dialer_is_lower: bool) -> None:
    async def scenario() -> None:
        low, high = ordered_keys()
        first_key, second_key = (low, high) if first_dialer_is_lower else (high, low)
        listener = make_node(key=second_key)
        async with running(listener):
            dialer = make_node(fast_config(persistent_peers=(listener.address,)), key=first_key)
            async with running(dialer):
                await wait_linked(dialer, listener)
                # The listener now dials back: a second link between the same two nodes.
                back = PeerAddress(dialer.switch.node_id, "127.0.0.1", dialer.switch.port)
                dial_back = asyncio.create_task(listener.switch._dial(back))
                lower_dialed_outbound = not first_dialer_is_lower  # at the listener

                def settled() -> bool:
                    at_l, at_d = listener.switch.peers(), dialer.switch.peers()
                    return (len(at_l) == len(at_d) == 1
                            and at_l[0].outbound == lower_dialed_outbound
                            and at_d[0].outbound != lower_dialed_outbound)

                await wait_for(settled, what="the lower id's link kept at both ends")
                for node in (listener, dialer):
                    expected = 1 if first_dialer_is_lower else 2  # a replaced link reconnects
                    assert len(node.handler.connected) == expected
                    assert len(node.handler.disconnected) == expected - 1
                dial_back.cancel()
                await asyncio.gather(dial_back, return_exceptions=True)

    asyncio.run(scenario())


def test_second_link_from_a_connected_node_is_refused() -> None:
    async def scenario() -> None:
        a = make_node()
        key = SigningKey.generate()
        first, second = RawPeer(key), RawPeer(key)
        async with running(a):
            try:
                await first.handshake(a.switch.port)
                await wait_for(lambda: len(a.switch.peers()) == 1)
                await second.open(a.switch.port)
                await second.hello()
                await second.ws.send_bytes(encode_frame(
                    compute_hello_proof(second.local, second.peer_hello)))
                _, reason = await second.wait_closed()
                assert "already connected" in reason
                assert len(a.switch.peers()) == 1 and a.handler.disconnected == []
                assert not a.switch.is_banned(key.public_key)
            finally:
                await first.close()
                await second.close()

    asyncio.run(scenario())


def test_persistent_peer_is_redialed_after_the_other_side_restarts() -> None:
    async def scenario() -> None:
        b = make_node()
        async with running(b):
            a = make_node(fast_config(persistent_peers=(b.address,)))
            async with running(a):
                await wait_linked(a, b)
                port, key = b.switch.port, b.key
                await b.switch.stop()
                await wait_for(lambda: a.switch.peers() == [])
                await asyncio.sleep(0.3)  # a few failed redials while B is down
                b2 = make_node(fast_config(port=port), key=key)
                async with running(b2):
                    await wait_linked(a, b2, timeout=3)
                    assert a.handler.connected == [key.public_key, key.public_key]

    asyncio.run(scenario())


def test_persistent_peer_with_another_node_id_is_refused() -> None:
    async def scenario() -> None:
        b = make_node()
        async with running(b):
            impostor = f"{bytes(range(32)).hex()}@127.0.0.1:{b.switch.port}"
            a = make_node(fast_config(persistent_peers=(impostor,)))
            async with running(a):
                await asyncio.sleep(0.3)
                assert a.switch.peers() == [] and b.switch.peers() == []
                assert b.handler.connected == []

    asyncio.run(scenario())


def test_peer_exchange_lets_a_newcomer_find_and_dial_other_peers() -> None:
    async def scenario() -> None:
        pex = fast_config(pex=True, pex_interval_s=30)
        a = make_node(pex)
        async with running(a):
            b = make_node(replace(pex, persistent_peers=(a.address,)))
            async with running(b):
                await wait_linked(a, b)
                c = make_node(replace(pex, persistent_peers=(a.address,)))
                async with running(c):
                    await wait_linked(c, a)
                    await wait_linked(c, b)  # learned from A, dialed by C
                    [b_at_c] = [p for p in c.switch.peers() if p.node_id == b.switch.node_id]
                    assert b_at_c.outbound
                    assert any(x.node_id == b.switch.node_id for x in c.switch.known_addresses())

    asyncio.run(scenario())


def test_unsolicited_peer_addresses_cost_score() -> None:
    async def scenario() -> None:
        a = make_node(fast_config(pex=True))
        raw = RawPeer()
        async with running(a):
            try:
                await raw.handshake(a.switch.port)
                await raw.ws.send_bytes(encode_frame(PexAddrs(addrs=())))
                await wait_for(lambda: [p.score for p in a.switch.peers()] == [-10])
            finally:
                await raw.close()

    asyncio.run(scenario())


def test_stop_leaves_no_tasks_and_no_sockets() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def scenario() -> None:
        before = open_fds()
        a = make_node()
        async with running(a):
            b = make_node(fast_config(persistent_peers=(a.address,), pex=True))
            async with running(b):
                await wait_linked(a, b)
                b.switch.broadcast(tx("in flight"))
        assert asyncio.all_tasks() == {asyncio.current_task()}
        # Closed transports release their sockets on the loop's next turns.
        await wait_for(lambda: open_fds() == before, timeout=1.0, what="sockets released")
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", a.switch.port)

    asyncio.run(scenario())


def test_config_and_addresses_are_validated() -> None:
    with pytest.raises(ValueError):
        SwitchConfig(max_frame_bytes=0)
    with pytest.raises(ValueError):
        SwitchConfig(reconnect_min_s=5, reconnect_max_s=1)
    with pytest.raises(InvalidPeerAddress):
        make_node(fast_config(persistent_peers=("not-an-address",)))
    key = SigningKey.generate()
    node = make_node(fast_config(persistent_peers=(f"{key.public_key.hex()}@127.0.0.1:1",)),
                     key=key)
    assert node.switch.node_id == key.public_key  # its own id is skipped, not dialed
