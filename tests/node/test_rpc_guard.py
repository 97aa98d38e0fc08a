"""Connection guard: the cap, header/body/keep-alive deadlines, service under slowloris."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from node.rpc.guard import GuardLimits
from node.rpc.server import RpcLimits, RpcServer

REQUEST_BODY = b'{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1}'
REQUEST = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(REQUEST_BODY)).encode() + b"\r\n\r\n" + REQUEST_BODY)

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
OPEN_WRITERS: list[asyncio.StreamWriter] = []


def add(a: int, b: int) -> int:
    """The one method the guarded server serves."""
    return a + b


@contextlib.asynccontextmanager
async def serving(**limits: Any) -> AsyncIterator[RpcServer]:
    """An RpcServer with small limits on the current loop."""
    server = RpcServer({"add": add}, limits=RpcLimits(**limits))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await close_clients()


async def close_clients() -> None:
    """Close every raw client connection the test opened."""
    while OPEN_WRITERS:
        writer = OPEN_WRITERS.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def connect(server: RpcServer) -> Conn:
    """A raw TCP connection to the server, closed when `serving` ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    OPEN_WRITERS.append(writer)
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response framed by Content-Length: status and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), body


async def seconds_until_closed(reader: asyncio.StreamReader, limit: float) -> float:
    """How long until the server closes the connection (reading and discarding data)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            while await reader.read(4096):
                pass
    except ConnectionError:
        pass
    return time.monotonic() - started


async def is_open(reader: asyncio.StreamReader, wait: float = 0.2) -> bool:
    """True if the connection stays open and silent for `wait` seconds."""
    try:
        data = await asyncio.wait_for(reader.read(1), wait)
    except TimeoutError:
        return True
    except ConnectionError:
        return False
    assert not data, f"unexpected data {data!r}"
    return False


async def dribble(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    """Send `data` one byte every `interval` seconds (a slowloris client)."""
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(interval)


def test_connection_cap_refuses_excess_with_503() -> None:
    async def scenario() -> None:
        async with serving(max_connections=5, header_timeout_s=3) as server:
            admitted = [await connect(server) for _ in range(5)]
            await asyncio.sleep(0.05)
            refused = [await connect(server) for _ in range(5)]
            for reader, _ in refused:
                status, body = await read_response(reader)
                assert status == 503 and json.loads(body)["error"]["code"] == -32005
                assert await seconds_until_closed(reader, 1) < 1
            for reader, _ in admitted:
                assert await is_open(reader, 0.05)
            assert server.guard.connection_count == 5
            assert server.guard.rejected_total == 5
            # A slot freed by a client that leaves is available again.
            admitted[0][1].close()
            await asyncio.sleep(0.1)
            reader, writer = await connect(server)
            writer.write(REQUEST)
            assert (await read_response(reader))[0] == 200

    asyncio.run(scenario())


def test_slowloris_headers_closed_after_header_timeout() -> None:
    async def scenario() -> None:
        async with serving(header_timeout_s=0.5, keepalive_timeout_s=5) as server:
            reader, writer = await connect(server)
            sender = asyncio.create_task(dribble(writer, REQUEST, 0.2))
            elapsed = await seconds_until_closed(reader, 5)
            sender.cancel()
            assert 0.4 < elapsed < 1.5
            assert server.guard.expired_total == 1

    asyncio.run(scenario())


def test_silent_connection_closed_after_header_timeout() -> None:
    async def scenario() -> None:
        async with serving(header_timeout_s=0.5, keepalive_timeout_s=5) as server:
            reader, _ = await connect(server)
            assert 0.4 < await seconds_until_closed(reader, 5) < 1.5

    asyncio.run(scenario())


def test_stalled_body_closed_after_body_timeout() -> None:
    async def scenario() -> None:
        async with serving(body_timeout_s=0.5, header_timeout_s=5, keepalive_timeout_s=5
                           ) as server:
            reader, writer = await connect(server)
            started = time.monotonic()
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"js")
            status, body = await read_response(reader)
            assert status == 408 and json.loads(body)["error"]["code"] == -32600
            await seconds_until_closed(reader, 5)
            assert 0.4 < time.monotonic() - started < 1.5

    asyncio.run(scenario())


def test_dribbled_body_closed_after_body_timeout() -> None:
    async def scenario() -> None:
        async with serving(body_timeout_s=0.5, header_timeout_s=5, keepalive_timeout_s=5
                           ) as server:
            reader, writer = await connect(server)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            sender = asyncio.create_task(dribble(writer, b"x" * 1000, 0.05))
            assert await seconds_until_closed(reader, 5) < 1.5
            sender.cancel()

    asyncio.run(scenario())


def test_idle_keepalive_connection_closed() -> None:
    async def scenario() -> None:
        async with serving(keepalive_timeout_s=0.5, header_timeout_s=5) as server:
            reader, writer = await connect(server)
            for _ in range(3):  # keep-alive works while the client is active
                writer.write(REQUEST)
                status, body = await read_response(reader)
                assert status == 200 and json.loads(body)["result"] == 3
            assert 0.4 < await seconds_until_closed(reader, 5) < 1.5

    asyncio.run(scenario())


def test_valid_request_answers_quickly_under_slowloris() -> None:
    async def scenario() -> None:
        async with serving(max_connections=64, header_timeout_s=3) as server:
            attackers = [await connect(server) for _ in range(50)]
            senders = [asyncio.create_task(dribble(w, REQUEST, 0.1)) for _, w in attackers]
            await asyncio.sleep(0.3)
            for _ in range(5):
                started = time.monotonic()
                reader, writer = await connect(server)
                writer.write(REQUEST)
                status, body = await read_response(reader)
                assert status == 200 and json.loads(body)["result"] == 3
                assert time.monotonic() - started < 0.5
            assert server.guard.connection_count >= 50
            for sender in senders:
                sender.cancel()

    asyncio.run(scenario())


def test_long_handler_is_not_cut_by_body_deadline() -> None:
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    async def scenario() -> None:
        server = RpcServer({"slow": slow}, limits=RpcLimits(body_timeout_s=0.3,
                                                            header_timeout_s=0.3))
        await server.start()
        try:
            reader, writer = await connect(server)
            body = b'{"jsonrpc":"2.0","method":"slow","params":[1.0],"id":1}'
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            status, reply = await read_response(reader)
            assert status == 200 and json.loads(reply)["result"] == "done"
        finally:
            await server.stop()
            await close_clients()

    asyncio.run(scenario())


def test_next_request_dribbled_during_handling_gets_header_deadline() -> None:
    async def slow() -> str:
        await asyncio.sleep(0.5)
        return "done"

    async def scenario() -> None:
        limits = RpcLimits(header_timeout_s=0.5, keepalive_timeout_s=10)
        server = RpcServer({"slow": slow}, limits=limits)
        await server.start()
        try:
            reader, writer = await connect(server)
            body = b'{"jsonrpc":"2.0","method":"slow","id":1}'
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            await asyncio.sleep(0.1)
            writer.write(b"POST / HTTP/1.1\r\nHo")  # and never more
            assert (await read_response(reader))[0] == 200
            answered = time.monotonic()
            await seconds_until_closed(reader, 5)
            assert time.monotonic() - answered < 1.5
        finally:
            await server.stop()
            await close_clients()

    asyncio.run(scenario())


def test_stop_closes_guarded_connections_promptly() -> None:
    async def scenario() -> None:
        async with serving(header_timeout_s=5) as server:
            readers = [(await connect(server))[0] for _ in range(10)]
            await asyncio.sleep(0.05)
            started = time.monotonic()
        assert time.monotonic() - started < 2
        for reader in readers:
            assert await seconds_until_closed(reader, 1) < 1

    asyncio.run(scenario())


def test_guard_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="header_timeout_s"):
        GuardLimits(header_timeout_s=0)
    assert GuardLimits(header_timeout_s=0.5, body_timeout_s=0.5).tick_s == 0.1
