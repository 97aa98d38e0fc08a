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
  up to the application as connections that die, so that is what it does.

`ProxyMesh` puts one proxy on every directed link i→j of N nodes, so node i
dials node j at `mesh.port(i, j)`; `partition([[0, 1], [2, 3]])` cuts every
link between groups and `heal_all()` restores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

CHUNK_BYTES = 64 << 10
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
        self.is_cut = False
        self._random = random.Random(seed)
        self._own_loop = loop is None
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._counts = dict.fromkeys(("to_target", "to_client", "connections", "refused",
                                      "killed", "target_failures"), 0)

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

    def set_target(self, host: str, port: int) -> None:
        """Forward new connections to another address (e.g. a node restarted on a new port)."""
        self.target = (host, port)

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        c = self._counts
        return ProxyStats(c["to_target"], c["to_client"], c["connections"],
                          len(self._connections), c["refused"], c["killed"],
                          c["target_failures"])

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
        try:
            while data := await reader.read(CHUNK_BYTES):
                if self.drop and self._random.random() < self.drop:
                    self._counts["killed"] += 1
                    connection.abort()
                    return
                await queue.put((loop.time() + self.delay_s, data))
            await queue.put(None)
            await deliver
        except (OSError, asyncio.IncompleteReadError):
            connection.abort()
        finally:
            deliver.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await deliver

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
