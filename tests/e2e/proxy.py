"""A userspace TCP fault proxy for multi-node tests: cut, delay and drop links between nodes.

`LinkProxy(listen_port, target_host, target_port)` listens on 127.0.0.1 and
forwards every connection to the target. Its asyncio loop runs in a background
thread (its own, or a shared `ProxyLoop`), so synchronous tests drive it with
plain calls:

- `cut()` aborts every open connection and, until `heal()`, accepts new ones
  only to abort them at once (a peer sees its dial fail, as across a partition);
- `set_delay(ms)` holds every chunk that long before forwarding it, in both
  directions (latency, not a throughput cap: chunks in flight overlap);
- `set_drop(p)` kills the connection carrying a chunk with probability `p`.
  Losing bytes inside a TCP stream is not a fault TCP lets happen (it would
  corrupt WebSocket framing, which no real network does): a lossy link shows
  up to the application as connections that die, so that is what it does;
- `set_message_drop(p)` loses whole WebSocket messages instead: on a link that
  carries a WebSocket (the p2p wire, one message per frame), each data message
  after the first `SPARED_MESSAGES` of its direction (the p2p handshake:
  Hello, HelloProof) is dropped with probability `p`, its frame cut out of the
  byte stream at the frame boundary, so the stream stays well formed and the
  connection lives; control frames (ping, pong, close) always pass. This is the
  loss of a message-level fault model (an unreliable datagram network, the
  simulator's `drop_rate`): the node sees messages vanish, never a broken link.

`ProxyMesh` puts one proxy on every directed link i→j of N nodes, so node i
dials node j at `mesh.port(i, j)`; `partition([[0, 1], [2, 3]])` cuts every
link between groups and `heal_all()` restores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

CHUNK_BYTES = 64 << 10
SPARED_MESSAGES = 2  # per direction of a connection: the p2p handshake's Hello, HelloProof
MAX_HTTP_HEAD = 16 << 10  # a longer upgrade head is not a WebSocket we filter
QUEUE_CHUNKS = 256  # per direction: a slow reader holds back its sender, not our memory
CALL_TIMEOUT_S = 10.0
HOST = "127.0.0.1"


class ProxyError(Exception):
    """A proxy was used in a state that does not allow it (not started, already stopped)."""


class ProxyLoop:
    """An asyncio event loop in a daemon thread that proxies share; `close()` ends the thread."""

    def __init__(self, name: str = "proxy-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Let cancelled tasks finish unwinding before the loop goes.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Run `coro` on the loop and wait for its result from this (other) thread."""
        if not self.thread.is_alive():
            coro.close()
            raise ProxyError("the proxy loop is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(CALL_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """What a proxy has carried: bytes each way and the fate of connections."""

    bytes_to_target: int
    bytes_to_client: int
    connections: int  # accepted and forwarded
    active: int  # open now
    refused: int  # accepted while cut, aborted at once
    killed: int  # aborted by set_drop
    target_failures: int  # the target could not be reached
    messages: int = 0  # WebSocket data messages past the handshake (both directions)
    messages_dropped: int = 0  # of those, cut out by set_message_drop


class _Connection:
    """One client connection and its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.writers: list[asyncio.StreamWriter] = [client]
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        """Reset both sides at once (no flush: a cut link loses what was in flight)."""
        for writer in self.writers:
            writer.transport.abort()


class LinkProxy:
    """One TCP link under test control: listens on `listen_port` (0: any free port)."""

    def __init__(self, listen_port: int, target_host: str, target_port: int, *,
                 loop: ProxyLoop | None = None, seed: int | None = None) -> None:
        self.listen_port = listen_port
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        self.drop = 0.0
        self.message_drop = 0.0
        self.is_cut = False
        self._random = random.Random(seed)
        self._own_loop = loop is None
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._counts = dict.fromkeys(("to_target", "to_client", "connections", "refused",
                                      "killed", "target_failures", "messages",
                                      "messages_dropped"), 0)

    # --- control (from the test's thread) -------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients dial (known once started)."""
        if self._server is None:
            raise ProxyError("proxy not started")
        return self.listen_port

    def start(self) -> LinkProxy:
        """Listen; returns self once the port accepts connections."""
        if self._server is not None:
            raise ProxyError("proxy already started")
        if self._loop is None:
            self._loop = ProxyLoop(f"proxy-{self.listen_port}->{self.target[1]}")
        try:
            self._server = self._loop.call(asyncio.start_server(
                self._on_client, HOST, self.listen_port, reuse_address=True))
        except BaseException:
            self._close_own_loop()
            raise
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening, abort every connection, end our loop thread if we own it."""
        if self._server is not None and self._loop is not None and self._loop.thread.is_alive():
            self._loop.call(self._shutdown())
        self._close_own_loop()

    def cut(self) -> None:
        """Abort every open connection and refuse new ones until `heal()`."""
        self.is_cut = True
        if self._server is not None:
            self._loop.call(self._abort_all())

    def heal(self) -> None:
        """Forward new connections again."""
        self.is_cut = False

    def set_delay(self, ms: int) -> None:
        """Hold every chunk `ms` milliseconds before forwarding it (each direction)."""
        if ms < 0:
            raise ValueError(f"delay must be >= 0 ms, got {ms}")
        self.delay_s = ms / 1000

    def set_drop(self, fraction: float) -> None:
        """Kill the connection carrying a chunk with probability `fraction` (0 turns it off)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"drop fraction must be in [0, 1], got {fraction}")
        self.drop = fraction

    def set_message_drop(self, fraction: float) -> None:
        """Lose each WebSocket data message (past the handshake) with probability `fraction`."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"message drop fraction must be in [0, 1], got {fraction}")
        self.message_drop = fraction

    def set_target(self, host: str, port: int) -> None:
        """Forward new connections to another address (e.g. a node restarted on a new port)."""
        self.target = (host, port)

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        c = self._counts
        return ProxyStats(c["to_target"], c["to_client"], c["connections"],
                          len(self._connections), c["refused"], c["killed"],
                          c["target_failures"], c["messages"], c["messages_dropped"])

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _close_own_loop(self) -> None:
        if self._own_loop and self._loop is not None:
            self._loop.close()

    # --- the loop's side ---------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._server.close()
        await self._abort_all()
        await self._server.wait_closed()

    async def _abort_all(self) -> None:
        connections = list(self._connections)
        self._connections.clear()
        for connection in connections:
            connection.abort()
            for task in connection.tasks:
                task.cancel()
        for connection in connections:
            await asyncio.gather(*connection.tasks, return_exceptions=True)

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        if self.is_cut:
            self._counts["refused"] += 1
            connection.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._counts["target_failures"] += 1
            connection.abort()
            return
        connection.writers.append(target_writer)
        if self.is_cut:  # cut while we were dialling
            self._counts["refused"] += 1
            connection.abort()
            return
        self._counts["connections"] += 1
        self._connections.add(connection)
        connection.tasks = [
            asyncio.create_task(self._pipe(reader, target_writer, connection, "to_target")),
            asyncio.create_task(self._pipe(target_reader, writer, connection, "to_client")),
        ]
        try:
            await asyncio.gather(*connection.tasks, return_exceptions=True)
        finally:
            self._connections.discard(connection)
            connection.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    connection: _Connection, counter: str) -> None:
        """Copy one direction, each chunk after the delay; EOF is passed on after the data."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        deliver = asyncio.create_task(self._deliver(queue, writer, connection, counter))
        loop = asyncio.get_running_loop()
        frames = _WebSocketFilter(self._drop_message)
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                if self.drop and self._random.random() < self.drop:
                    self._counts["killed"] += 1
                    connection.abort()
                    return
                if data := frames.feed(chunk):
                    await queue.put((loop.time() + self.delay_s, data))
            await queue.put(None)
            await deliver
        except (OSError, asyncio.IncompleteReadError):
            connection.abort()
        finally:
            deliver.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await deliver

    def _drop_message(self) -> bool:
        """Count one WebSocket data message; True when it is to be lost."""
        self._counts["messages"] += 1
        if self.message_drop and self._random.random() < self.message_drop:
            self._counts["messages_dropped"] += 1
            return True
        return False

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes] | None],
                       writer: asyncio.StreamWriter, connection: _Connection,
                       counter: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                writer.write(data)
                await writer.drain()
                self._counts[counter] += len(data)
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            connection.abort()


class _WebSocketFilter:
    """One direction of a connection: passes bytes on, less the WebSocket messages that
    `drop()` condemns.

    The stream must open with an HTTP upgrade head (a `GET` request or a
    `101` answer), passed on whole; anything else is not a WebSocket and
    passes untouched. After the head come frames: each frame's header is held
    until complete, then the frame (header and payload) is passed or cut out
    whole. A message's continuation frames share its fate; control frames
    (opcode >= 8) and the first `SPARED_MESSAGES` data messages always pass.
    """

    def __init__(self, drop: Callable[[], bool]) -> None:
        self._drop = drop
        self._state = "head"  # head -> frames, or -> raw
        self._pending = b""  # an incomplete head or frame header
        self._payload_left = 0  # bytes of the current frame's payload still to come
        self._keep = True  # the current frame's fate
        self._message_keep = True  # the fate of the message being continued
        self._messages = 0

    def feed(self, data: bytes) -> bytes:
        """The part of `data` to forward."""
        if self._state == "raw":
            return data
        out = bytearray()
        data = self._pending + data
        self._pending = b""
        at = 0
        if self._state == "head":
            at = self._take_head(data, out)
        while at < len(data) and self._state == "frames":
            if self._payload_left:
                take = min(self._payload_left, len(data) - at)
                if self._keep:
                    out += data[at:at + take]
                self._payload_left -= take
                at += take
                continue
            header_len = _frame_header_len(data, at)
            if header_len is None or len(data) - at < header_len:
                self._pending = data[at:]
                return bytes(out)
            self._start_frame(data[at:at + header_len])
            if self._keep:
                out += data[at:at + header_len]
            at += header_len
        if self._state == "raw":
            out += data[at:]
        return bytes(out)

    def _take_head(self, data: bytes, out: bytearray) -> int:
        """Pass the HTTP head on once whole; where the bytes after it start."""
        end = data.find(b"\r\n\r\n")
        looks_http = any(data[:len(start)] == start[:len(data)] for start in (b"GET ", b"HTTP/"))
        if not looks_http or (end < 0 and len(data) > MAX_HTTP_HEAD):
            self._state = "raw"
            return 0
        if end < 0:
            self._pending = data
            return len(data)
        head = data[:end + 4]
        out += head
        status = head.split(b"\r\n", 1)[0].split()[1:2]
        self._state = "frames" if head.startswith(b"GET ") or status == [b"101"] else "raw"
        return end + 4

    def _start_frame(self, header: bytes) -> None:
        """Decide the fate of the frame this complete header opens."""
        opcode = header[0] & 0x0F
        final = bool(header[0] & 0x80)
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(header[2:4], "big")
        elif length == 127:
            length = int.from_bytes(header[2:10], "big")
        self._payload_left = length
        if opcode >= 8:  # control: ping, pong, close
            self._keep = True
            return
        if opcode != 0:  # the first frame of a data message
            self._messages += 1
            self._message_keep = self._messages <= SPARED_MESSAGES or not self._drop()
        self._keep = self._message_keep
        if final:
            self._message_keep = True


def _frame_header_len(data: bytes, at: int) -> int | None:
    """The length of the WebSocket frame header at `data[at:]` (None: too few bytes to
    tell)."""
    if len(data) - at < 2:
        return None
    length = data[at + 1] & 0x7F
    extended = 2 if length == 126 else 8 if length == 127 else 0
    masked = 4 if data[at + 1] & 0x80 else 0
    return 2 + extended + masked


class ProxyMesh:
    """One LinkProxy per directed link i→j (i ≠ j) of `len(targets)` nodes, on one loop.

    `targets[j]` is where node j listens; node i reaches node j at `port(i, j)`.
    """

    def __init__(self, targets: Sequence[tuple[str, int]], seed: int | None = None) -> None:
        self.n = len(targets)
        self._loop: ProxyLoop | None = None
        self.links: dict[tuple[int, int], LinkProxy] = {}
        self._targets = list(targets)
        self._seed = seed

    def start(self) -> ProxyMesh:
        """Start every link proxy (each on a free port)."""
        self._loop = ProxyLoop("proxy-mesh")
        try:
            for i in range(self.n):
                for j in range(self.n):
                    if i != j:
                        seed = None if self._seed is None else self._seed * 10_007 + i * 101 + j
                        host, port = self._targets[j]
                        self.links[i, j] = LinkProxy(0, host, port, loop=self._loop,
                                                     seed=seed).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every link and end the loop thread."""
        for link in self.links.values():
            with contextlib.suppress(ProxyError):
                link.stop()
        if self._loop is not None:
            self._loop.close()

    def __enter__(self) -> ProxyMesh:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def link(self, i: int, j: int) -> LinkProxy:
        """The proxy node i dials to reach node j."""
        return self.links[i, j]

    def port(self, i: int, j: int) -> int:
        """The port node i dials to reach node j."""
        return self.links[i, j].port

    def retarget(self, j: int, host: str, port: int) -> None:
        """Node j listens somewhere else now: every link into j forwards there."""
        self._targets[j] = (host, port)
        for (_, target), link in self.links.items():
            if target == j:
                link.set_target(host, port)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Cut every link between different groups, heal every link inside one.

        A node in no group is cut off from everyone.
        """
        group_of = {node: index for index, group in enumerate(groups) for node in group}
        if len(group_of) != sum(len(group) for group in groups):
            raise ValueError(f"a node is in two groups: {groups}")
        unknown = set(group_of) - set(range(self.n))
        if unknown:
            raise ValueError(f"no such node(s): {sorted(unknown)}")
        for (i, j), link in sorted(self.links.items()):
            together = i in group_of and group_of.get(i) == group_of.get(j)
            if together:
                link.heal()
            else:
                link.cut()

    def heal_all(self) -> None:
        """Heal every link."""
        for link in self.links.values():
            link.heal()

    def set_delay(self, ms: int) -> None:
        """The same delay on every link."""
        for link in self.links.values():
            link.set_delay(ms)

    def set_drop(self, fraction: float) -> None:
        """The same drop probability on every link."""
        for link in self.links.values():
            link.set_drop(fraction)

    def set_message_drop(self, fraction: float) -> None:
        """The same WebSocket message loss on every link (see `LinkProxy.set_message_drop`)."""
        for link in self.links.values():
            link.set_message_drop(fraction)

    def stats(self) -> ProxyStats:
        """Every link's counters summed."""
        every = [link.stats for link in self.links.values()]
        return ProxyStats(*(sum(getattr(s, f) for s in every) for f in ProxyStats.__slots__))

    def connect_only(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Heal the links (both directions) between each pair of nodes, cut every other.

        `connect_only([(0, 1), (1, 2), (2, 3), (3, 0)])` is a ring of four.
        """
        wanted = {(i, j) for i, j in pairs} | {(j, i) for i, j in pairs}
        unknown = {node for pair in wanted for node in pair} - set(range(self.n))
        if unknown:
            raise ValueError(f"no such node(s): {sorted(unknown)}")
        for pair, link in sorted(self.links.items()):
            if pair in wanted:
                link.heal()
            else:
                link.cut()
