"""The TCP fault proxy: bytes pass, cut refuses, heal restores, delay delays, stop cleans up."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import free_port, wait_until
from tests.e2e.proxy import LinkProxy, ProxyError, ProxyMesh

pytestmark = pytest.mark.e2e
TIMEOUT_S = 5.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.accepted += 1
        while data := self.request.recv(65536):
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every connection until its client half-closes; counts connections."""

    daemon_threads = True
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.accepted = 0
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[LinkProxy]:
    with LinkProxy(0, "127.0.0.1", echo.port) as link:
        yield link


def dial(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.settimeout(TIMEOUT_S)
    return sock


def round_trip(port: int, payload: bytes) -> bytes:
    """Send `payload`, half-close, read until the far side closes."""
    with dial(port) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def is_closed_by_peer(sock: socket.socket) -> bool:
    """True once the peer closed or reset the connection (waits up to the socket timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("proxy")]


def test_bytes_pass_through_both_ways(proxy: LinkProxy) -> None:
    payload = os.urandom(1 << 20)
    assert round_trip(proxy.port, payload) == payload
    wait_until(lambda: proxy.stats.active == 0, TIMEOUT_S, "the connection to close")
    stats = proxy.stats
    assert stats.bytes_to_target == stats.bytes_to_client == len(payload)
    assert (stats.connections, stats.refused, stats.killed) == (1, 0, 0)


def test_cut_closes_open_connections_and_refuses_new_ones(proxy: LinkProxy,
                                                         echo: EchoServer) -> None:
    with dial(proxy.port) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        proxy.cut()
        assert proxy.stats.active == 0
        assert is_closed_by_peer(sock)
    with dial(proxy.port) as sock:
        assert is_closed_by_peer(sock)
    assert proxy.stats.refused == 1
    assert echo.accepted == 1  # the refused dial never reached the target


def test_heal_restores_the_link(proxy: LinkProxy) -> None:
    proxy.cut()
    proxy.heal()
    assert round_trip(proxy.port, b"after heal") == b"after heal"


def test_delay_holds_each_direction(proxy: LinkProxy) -> None:
    assert round_trip(proxy.port, b"warm") == b"warm"
    proxy.set_delay(150)
    with dial(proxy.port) as sock:
        started = time.monotonic()
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        elapsed = time.monotonic() - started
    # Once on the way there, once back; only a lower bound (an upper one would race).
    assert elapsed >= 2 * 0.150 - 0.005, elapsed


def test_drop_kills_the_connection_not_bytes_inside_it(proxy: LinkProxy) -> None:
    proxy.set_drop(1.0)
    with dial(proxy.port) as sock:
        sock.sendall(b"lost")
        assert is_closed_by_peer(sock)
    assert proxy.stats.killed == 1
    assert proxy.stats.bytes_to_target == 0
    proxy.set_drop(0.0)
    assert round_trip(proxy.port, b"kept") == b"kept"


def test_bad_settings_are_refused(proxy: LinkProxy) -> None:
    with pytest.raises(ValueError, match="delay"):
        proxy.set_delay(-1)
    with pytest.raises(ValueError, match="drop"):
        proxy.set_drop(1.5)


def test_unreachable_target_closes_the_client() -> None:
    with LinkProxy(0, "127.0.0.1", free_port()) as link, dial(link.port) as sock:
        assert is_closed_by_peer(sock)
        wait_until(lambda: link.stats.target_failures == 1, TIMEOUT_S, "the failed dial")


def test_retarget_sends_new_connections_elsewhere(echo: EchoServer) -> None:
    with LinkProxy(0, "127.0.0.1", free_port()) as link:
        link.set_target("127.0.0.1", echo.port)
        assert round_trip(link.port, b"moved") == b"moved"


def test_stop_closes_port_and_leaves_no_threads(echo: EchoServer) -> None:
    before = proxy_threads()
    link = LinkProxy(0, "127.0.0.1", echo.port).start()
    port = link.port
    open_sock = dial(port)
    open_sock.sendall(b"a")
    assert open_sock.recv(1) == b"a"
    assert len(proxy_threads()) == len(before) + 1
    link.stop()
    with open_sock:
        assert is_closed_by_peer(open_sock)
    assert proxy_threads() == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S).close()
    link.stop()  # idempotent


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(ProxyError, match="not started"):
        _ = LinkProxy(0, "127.0.0.1", 1).port


def test_mesh_partition_and_heal(echo: EchoServer) -> None:
    before = proxy_threads()
    with ProxyMesh([("127.0.0.1", echo.port)] * 3) as mesh:
        assert sorted(mesh.links) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
        assert len({mesh.port(i, j) for i, j in mesh.links}) == 6
        mesh.partition([[0], [1, 2]])
        cut = {pair for pair, link in mesh.links.items() if link.is_cut}
        assert cut == {(0, 1), (0, 2), (1, 0), (2, 0)}
        assert round_trip(mesh.port(1, 2), b"inside") == b"inside"
        with dial(mesh.port(0, 1)) as sock:
            assert is_closed_by_peer(sock)
        mesh.heal_all()
        assert not any(link.is_cut for link in mesh.links.values())
        assert round_trip(mesh.port(0, 1), b"healed") == b"healed"
        mesh.partition([[0, 1]])  # node 2 in no group: cut off from everyone
        assert {p for p, link in mesh.links.items() if link.is_cut} == {
            (0, 2), (1, 2), (2, 0), (2, 1)}
        with pytest.raises(ValueError, match="two groups"):
            mesh.partition([[0, 1], [1, 2]])
        with pytest.raises(ValueError, match="no such node"):
            mesh.partition([[0, 7]])
    assert proxy_threads() == before
