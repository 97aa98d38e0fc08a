"""One established link to a peer: who it is, what it may cost, what it knows, what we send it.

A `Peer` is a long-running service over one WebSocket (the aiohttp server's
`WebSocketResponse` for inbound links, the client's `ClientWebSocketResponse`
for outbound ones; both speak the same methods). Sending never blocks the
caller: frames go to a bounded queue that one writer task drains, and a full
queue drops the frame, so a slow peer cannot stall consensus. The writer pings
when it has had nothing to send for a while, so both sides see life on an idle
link and can time out a dead one.
"""

import asyncio
import contextlib
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from p2p.errors import HandshakeClosed, Misbehaviour, PeerClosed, ProtocolViolation
from p2p.handshake import ReceiveFrame, SendFrame
from p2p.limits import PeerScore, RateLimiter, RecentKeys
from p2p.messages import Hello, StatusMsg

WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse

CLOSE_TIMEOUT_S = 1.0
MAX_CLOSE_REASON_BYTES = 123  # a close frame holds 125 bytes, 2 of them the code
KNOWN_KEYS_PER_PEER = 20_000

LINK_ERRORS = (OSError, aiohttp.ClientError)
"""What aiohttp raises when writing to a link that is closing or gone."""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A snapshot of one connected peer.

    `host` is the remote address; `port` is where the peer listens (the dialed
    port for outbound links, the port its Hello announced for inbound ones; 0:
    it does not listen). `connected_at` is wall-clock seconds; `status` is the
    last StatusMsg it sent.
    """

    node_id: bytes
    host: str
    port: int
    outbound: bool
    moniker: str
    connected_at: float
    score: int
    status: StatusMsg | None


@dataclass(frozen=True, slots=True)
class PeerLimits:
    """Per-peer budgets: inbound rate, outbound queue, frame size and timeouts."""

    max_frame_bytes: int
    max_frames_per_s: int
    max_bytes_per_s: int
    send_queue_frames: int
    send_queue_bytes: int
    ping_interval_s: float
    idle_timeout_s: float


def compute_close_reason(reason: str) -> bytes:
    """`reason` as the utf-8 bytes of a close frame (cut on a character boundary)."""
    cut = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    return cut.decode("utf-8", "ignore").encode("utf-8")


async def receive_frame(ws: WebSocket, max_frame_bytes: int, timeout_s: float) -> bytes:
    """The next binary frame from `ws`, answering pings and skipping pongs on the way.

    Raises Misbehaviour for a text frame or a frame over `max_frame_bytes`, and
    PeerClosed when the link closes, breaks, or brings nothing (not even a ping
    or pong) for `timeout_s`.
    """
    while True:
        try:
            msg = await ws.receive(timeout=timeout_s)
        except TimeoutError:
            raise PeerClosed(f"idle for {timeout_s:g} s") from None
        if msg.type is WSMsgType.BINARY:
            if len(msg.data) > max_frame_bytes:
                raise Misbehaviour(f"frame of {len(msg.data)} bytes over {max_frame_bytes}")
            return msg.data
        if msg.type is WSMsgType.PING:
            with contextlib.suppress(*LINK_ERRORS):
                await ws.pong(msg.data)
            continue
        if msg.type is WSMsgType.PONG:
            continue
        raise _unexpected_message(msg, max_frame_bytes)


def _unexpected_message(msg: aiohttp.WSMessage, max_frame_bytes: int) -> Exception:
    """The error for a WebSocket message that is not a binary frame, ping or pong."""
    if msg.type is WSMsgType.TEXT:
        return Misbehaviour("text frame (the protocol is binary)")
    if msg.type is WSMsgType.ERROR:
        error = msg.data
        if isinstance(error, aiohttp.WebSocketError) and \
                error.code == WSCloseCode.MESSAGE_TOO_BIG:
            return Misbehaviour(f"frame over {max_frame_bytes} bytes")
        return PeerClosed(f"link error: {error}")
    if msg.type is WSMsgType.CLOSE:
        extra = f": {msg.extra}" if msg.extra else ""
        return PeerClosed(f"closed by peer (code {msg.data}{extra})")
    return PeerClosed("link closed")


def handshake_link(ws: WebSocket, max_frame_bytes: int, timeout_s: float
                   ) -> tuple[SendFrame, ReceiveFrame]:
    """`send` and `receive` for `run_handshake` over `ws`, raising HandshakeErrors."""

    async def send(data: bytes) -> None:
        try:
            await ws.send_bytes(data)
        except LINK_ERRORS as exc:
            raise HandshakeClosed(f"link broke during the handshake: {exc}") from None

    async def receive() -> bytes:
        try:
            return await receive_frame(ws, max_frame_bytes, timeout_s)
        except Misbehaviour as exc:
            raise ProtocolViolation(exc.reason) from None
        except PeerClosed as exc:
            raise HandshakeClosed(f"during the handshake: {exc}") from None

    return send, receive


def abort_link(ws: WebSocket) -> None:
    """Cut the TCP connection under `ws` now, unsent data or not.

    Shutting the socket down makes the event loop see end-of-stream and a broken
    pipe, so the transport closes even when the remote has stopped reading.
    """
    sock: Any = ws.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


async def close_link(ws: WebSocket, reason: str,
                     code: int = WSCloseCode.POLICY_VIOLATION) -> None:
    """Close `ws` with `code` and `reason`; abort it if the close does not finish promptly."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=compute_close_reason(reason))
    except (TimeoutError, *LINK_ERRORS):
        abort_link(ws)


class Peer:
    """One established link: identity, standing, what the peer knows, and the send queue."""

    def __init__(self, ws: WebSocket, hello: Hello, host: str, port: int, outbound: bool,
                 limits: PeerLimits, now: float) -> None:
        self.ws = ws
        self.node_id = hello.node_id
        self.moniker = hello.moniker.decode("utf-8", "replace")
        self.host = host
        self.port = port
        self.outbound = outbound
        self.limits = limits
        self.connected_at = time.time()
        self.status: StatusMsg | None = None
        self.score = PeerScore(now)
        self.limiter = RateLimiter(limits.max_frames_per_s, limits.max_bytes_per_s,
                                   limits.max_frame_bytes, now)
        self.known = RecentKeys(KNOWN_KEYS_PER_PEER)
        self.pex_requested = False
        self.pex_answered_at = float("-inf")
        self.detached = False
        self.closed = asyncio.Event()
        self.dropped_frames = 0
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()

    def info(self, now: float) -> PeerInfo:
        """A snapshot of this peer at loop time `now`."""
        return PeerInfo(node_id=self.node_id, host=self.host, port=self.port,
                        outbound=self.outbound, moniker=self.moniker,
                        connected_at=self.connected_at, score=self.score.value(now),
                        status=self.status)

    def enqueue(self, data: bytes) -> bool:
        """Queue one frame; False (and the frame dropped) when detached or the queue is full."""
        if self.detached or len(self._queue) >= self.limits.send_queue_frames or \
                self._queued_bytes + len(data) > self.limits.send_queue_bytes:
            self.dropped_frames += 1
            return False
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._ready.set()
        return True

    async def _next_frame(self) -> bytes | None:
        """The next queued frame, or None when none came within the ping interval."""
        if not self._queue:
            self._ready.clear()
            try:
                async with asyncio.timeout(self.limits.ping_interval_s):
                    await self._ready.wait()
            except TimeoutError:
                return None
        data = self._queue.popleft()
        self._queued_bytes -= len(data)
        return data

    async def run_writer(self) -> str:
        """Send queued frames in order, pinging when idle; returns why it stopped.

        A write that fails or does not finish within the idle timeout (the peer
        stopped reading) ends the writer and aborts the link, so the reader ends too.
        """
        try:
            while True:
                data = await self._next_frame()
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    if data is None:
                        await self.ws.ping()
                    else:
                        await self.ws.send_bytes(data)
        except TimeoutError:
            reason = f"write stalled for {self.limits.idle_timeout_s:g} s"
        except LINK_ERRORS as exc:
            reason = f"write failed: {exc}"
        abort_link(self.ws)
        return reason

    async def close(self, reason: str, code: int = WSCloseCode.POLICY_VIOLATION) -> None:
        """Close the link with `reason` (idempotent)."""
        await close_link(self.ws, reason, code)
