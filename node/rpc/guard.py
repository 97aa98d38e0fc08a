"""Connection cap and read deadlines for an aiohttp server (RPC and p2p alike).

aiohttp's low-level server accepts any number of connections and has no read
deadline: a slowloris client that dribbles one header byte a second, or one
that sends headers announcing a body and then stalls, holds a connection (and
its memory) for as long as it likes. The defence lives in front of aiohttp:

* The listening socket is created with `loop.create_server(guard.protocol_factory(
  web_server))`. Each accepted connection gets a `_GuardedProtocol`, a plain
  asyncio.Protocol proxy (a `p2p.guarded.AdmittedProtocol`, shared with the p2p
  handshake guard) that forwards every callback to aiohttp's own
  RequestHandler and keeps a small per-connection state: its phase and the
  instant by which the phase must end.
* At most `max_connections` connections are admitted; an excess one is answered
  with `reject_response` (a 503) and closed before aiohttp ever sees it.
* Phases and their deadlines: a fresh or idle connection must start a request
  (first byte) within `header_timeout_s` (fresh) or `keepalive_timeout_s`
  (after a response); a request's headers must be complete within
  `header_timeout_s` of its first byte; its body must be read within
  `body_timeout_s` of the headers. While the handler runs (after the body, or
  for a WebSocket) there is no deadline: the handler owns the connection.
* The request side tells the guard where it is: `wrap(handler)` marks "headers
  complete" when aiohttp calls the handler and "idle" when it returns;
  `read_body()` reads the body under the body deadline and a byte cap, and
  marks "handling" when done.
* One sweeper task wakes every `tick` and aborts every connection past its
  deadline. The proxy uses only public asyncio and aiohttp API (the
  `web.Server` protocol factory, `request.transport`, `request.content`), so
  an aiohttp upgrade cannot silently switch the defence off.
"""

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from p2p.guarded import AdmittedProtocol

log = logging.getLogger("gannet.rpc.guard")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

READ_CHUNK_BYTES = 64 * 1024

DEFAULT_REJECT_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
    b"too many connections"
)


class GuardError(Exception):
    """Base of the errors `ConnectionGuard.read_body` raises for a request it refuses."""


class BodyTooLarge(GuardError):
    """The request body is (or declares itself) larger than the byte cap."""

    def __init__(self, size: int, limit: int, declared: bool) -> None:
        what = f"declares {size} bytes" if declared else f"passed {size} bytes"
        super().__init__(f"request body {what}; the limit is {limit} bytes")
        self.size = size
        self.limit = limit


class BodyTimeout(GuardError):
    """The request body did not arrive within the body deadline."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"request body not received within {timeout_s:g} s")
        self.timeout_s = timeout_s


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """How many connections a server admits and how long each read phase may last."""

    max_connections: int = 256
    header_timeout_s: float = 5.0
    body_timeout_s: float = 5.0
    keepalive_timeout_s: float = 15.0
    close_grace_s: float = 0.5

    def __post_init__(self) -> None:
        """Every limit must be positive: a zero would switch a defence off."""
        for name in ("max_connections", "header_timeout_s", "body_timeout_s",
                     "keepalive_timeout_s", "close_grace_s"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")

    @property
    def tick_s(self) -> float:
        """Sweeper period: a fifth of the shortest deadline, between 50 ms and 1 s."""
        shortest = min(self.header_timeout_s, self.body_timeout_s, self.keepalive_timeout_s)
        return min(1.0, max(0.05, shortest / 5))


class Phase(enum.Enum):
    """Where a connection is in its request cycle; each phase but HANDLING has a deadline."""

    IDLE = "idle"  # no request in flight; waiting for the first byte of one
    HEADERS = "headers"  # first byte seen; waiting for aiohttp to parse the headers
    BODY = "body"  # handler called; waiting for the body
    HANDLING = "handling"  # body read (or none): the handler owns the connection
    CLOSING = "closing"  # refused request: close once the error reply had time to go


class _GuardedProtocol(AdmittedProtocol["ConnectionGuard"]):
    """Proxy in front of aiohttp's RequestHandler that tracks phase and deadline."""

    def __init__(self, guard: "ConnectionGuard", inner: asyncio.Protocol) -> None:
        super().__init__(guard, inner)
        self.phase = Phase.IDLE
        self.deadline = 0.0
        self.early_bytes = False  # bytes of a next request arrived while handling this one

    def enter(self, phase: Phase, timeout_s: float | None) -> None:
        """Move to `phase`; its deadline is `timeout_s` from now (None: no deadline)."""
        self.phase = phase
        now = asyncio.get_running_loop().time()
        self.deadline = float("inf") if timeout_s is None else now + timeout_s

    def enter_idle(self) -> None:
        """The handler returned: wait for the next request, unless it has already begun."""
        if self.phase is Phase.CLOSING:
            return
        if self.early_bytes:
            self.early_bytes = False
            self.enter(Phase.HEADERS, self._guard.limits.header_timeout_s)
        else:
            self.enter(Phase.IDLE, self._guard.limits.keepalive_timeout_s)

    def _on_admitted(self) -> None:
        """A fresh connection must send its first request within the header deadline."""
        self.enter(Phase.IDLE, self._guard.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        """The first byte after idle starts the header deadline."""
        if not self.admitted:
            return
        if self.phase is Phase.IDLE:
            self.enter(Phase.HEADERS, self._guard.limits.header_timeout_s)
        elif self.phase is Phase.HANDLING:
            self.early_bytes = True
        self._inner.data_received(data)


class ConnectionGuard:
    """Caps concurrent connections and aborts those past their read deadline.

    A service object: `start()` the sweeper before serving, `close()` to stop
    it and abort every connection still open.
    """

    def __init__(self, limits: GuardLimits, reject_response: bytes = DEFAULT_REJECT_RESPONSE):
        self.limits = limits
        self.reject_response = reject_response
        self._conns: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.rejected_total = 0
        self.expired_total = 0

    @property
    def connection_count(self) -> int:
        """Connections admitted and still open."""
        return len(self._conns)

    def protocol_factory(self, inner_factory: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that guards `inner_factory`'s protocols."""
        return lambda: _GuardedProtocol(self, inner_factory())

    def admit(self, conn: _GuardedProtocol) -> bool:
        """Admit a new connection unless `max_connections` are already open."""
        if len(self._conns) >= self.limits.max_connections:
            self.rejected_total += 1
            log.warning("connection refused: %d connections open (the cap)", len(self._conns))
            return False
        assert conn.transport is not None
        self._conns[conn.transport] = conn
        return True

    def release(self, conn: _GuardedProtocol) -> None:
        """Forget a closed connection."""
        if conn.transport is not None:
            self._conns.pop(conn.transport, None)

    def start(self) -> None:
        """Start the sweeper; call from the event loop that serves the connections."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        """Stop the sweeper and abort every open connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for transport in list(self._conns):
            transport.abort()

    async def _sweep_forever(self) -> None:
        """Every tick, abort the connections whose phase outlived its deadline."""
        while True:
            await asyncio.sleep(self.limits.tick_s)
            self.sweep()

    def sweep(self) -> int:
        """Abort each connection past its deadline; returns how many."""
        now = asyncio.get_running_loop().time()
        expired = [conn for conn in self._conns.values() if conn.deadline <= now]
        for conn in expired:
            log.info("closing connection: %s phase past its deadline", conn.phase.value)
            assert conn.transport is not None
            conn.transport.abort()
        self.expired_total += len(expired)
        return len(expired)

    def _find(self, request: web.BaseRequest) -> _GuardedProtocol | None:
        """The guarded connection a request arrived on (None once it is gone)."""
        transport = request.transport
        return None if transport is None else self._conns.get(transport)

    def wrap(self, handler: Handler) -> Handler:
        """Wrap an aiohttp handler so the guard knows when requests start and end.

        Headers are complete when aiohttp calls the handler: a request with a
        body enters the body deadline, one without goes straight to handling.
        When the handler returns, the connection is idle under the keep-alive
        deadline, or already reading the next request's headers if bytes came
        in meanwhile, or closing if the request was refused.
        """

        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            conn = self._find(request)
            if conn is not None:
                conn.early_bytes = False
                if request.can_read_body:
                    backstop = self.limits.body_timeout_s + self.limits.close_grace_s
                    conn.enter(Phase.BODY, backstop)
                else:
                    conn.enter(Phase.HANDLING, None)
            try:
                return await handler(request)
            finally:
                if conn is not None:
                    conn.enter_idle()

        return guarded

    def close_after_reply(self, request: web.BaseRequest) -> None:
        """Close this request's connection `close_grace_s` from now, reply sent or not."""
        conn = self._find(request)
        if conn is not None:
            conn.enter(Phase.CLOSING, self.limits.close_grace_s)

    async def read_body(self, request: web.BaseRequest, max_bytes: int) -> bytes:
        """Read the whole body within `body_timeout_s` of the headers and at most `max_bytes`.

        Raises BodyTooLarge (declared or streamed size over the cap) or
        BodyTimeout; either way the connection is closed shortly after the
        handler's error reply, since its stream position is now unknown.
        """
        declared = request.content_length
        if declared is not None and declared > max_bytes:
            self.close_after_reply(request)
            raise BodyTooLarge(declared, max_bytes, declared=True)
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                body = await _read_capped(request.content, max_bytes)
        except TimeoutError:
            self.close_after_reply(request)
            raise BodyTimeout(self.limits.body_timeout_s) from None
        except BodyTooLarge:
            self.close_after_reply(request)
            raise
        conn = self._find(request)
        if conn is not None and conn.phase is Phase.BODY:
            conn.enter(Phase.HANDLING, None)
        return body


async def _read_capped(stream: Any, max_bytes: int) -> bytes:
    """Read `stream` to EOF; raise BodyTooLarge as soon as it passes `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(size, max_bytes, declared=False)
        chunks.append(chunk)
    return b"".join(chunks)
