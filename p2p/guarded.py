"""A connection-capping proxy in front of an aiohttp protocol (shared by p2p and RPC).

`AdmittedProtocol` sits between `loop.create_server` and aiohttp's own protocol.
On accept it asks its gate to admit the connection: an admitted one is passed
to aiohttp and every later callback is forwarded; a refused one gets the gate's
`reject_response` and is closed without aiohttp ever seeing it, and none of its
callbacks are forwarded. When an admitted connection is lost, the gate is told
(`release`) exactly once before aiohttp is. Subclasses add their own tracking
through `_on_admitted` and by extending `data_received`.
"""

import asyncio
from typing import Any, Generic, Protocol, TypeVar


class Gate(Protocol):
    """What a proxy needs from the guard that owns it."""

    reject_response: bytes

    def admit(self, conn: Any) -> bool:
        """Take a slot for `conn` (its transport is set) or refuse it."""
        ...

    def release(self, conn: Any) -> None:
        """Give back the slot of an admitted connection that is gone."""
        ...


G = TypeVar("G", bound=Gate)


class AdmittedProtocol(asyncio.Protocol, Generic[G]):
    """Proxy that forwards to `inner` only while its gate has admitted the connection."""

    def __init__(self, guard: G, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False

    def _on_admitted(self) -> None:
        """Called once admitted, just before aiohttp sees the connection; a no-op here."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection if under the cap; otherwise answer 503 and close."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self._guard.admit(self):
            transport.write(self._guard.reject_response)
            transport.close()
            return
        self.admitted = True
        self._on_admitted()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Forward while admitted; bytes of a refused connection are dropped."""
        if self.admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        """Forward; aiohttp decides whether to keep the write side open."""
        return self._inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the slot, then tell aiohttp; only once, and only if admitted."""
        if not self.admitted:
            return
        # Cleared before the calls below, so nothing they trigger is forwarded or released twice.
        self.admitted = False
        self._guard.release(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """Forward write flow control to aiohttp."""
        if self.admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Forward write flow control to aiohttp."""
        if self.admitted:
            self._inner.resume_writing()
