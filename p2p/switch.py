"""The switch: every peer link of a node, over aiohttp WebSockets at `/p2p`.

It listens, dials persistent peers (forever, with backoff) and peers learned by
peer exchange, runs the handshake, and then for each peer one reader (frames
handled in order, one at a time) and one writer (a bounded queue). A received
frame goes through these steps, in order:

1. size: aiohttp refuses a frame over `max_frame_bytes` and so do we (ban);
2. rate: over the peer's frames/s or bytes/s budget, dropped (score penalty);
3. decode: `codec.decode(Frame, data)`; an undecodable frame bans the peer;
4. a Hello or HelloProof after the handshake bans the peer;
5. gossip (tx, proposal, vote, evidence) seen before is dropped silently; the
   sender is remembered as knowing it, so we never send it back;
6. StatusMsg is remembered as the peer's status, then delivered;
7. PexRequest and PexAddrs are answered here (the address book);
8. everything else goes to the handler's `on_message`.

The handler may raise `Misbehaviour`: `ban=True` disconnects and bans the node
id for `ban_s`; `ban=False` costs score, and a score under the threshold bans
too. Any other exception in the handler is logged and the link lives on.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import WSCloseCode, web

from chain.codec import decode
from chain.crypto import SigningKey
from chain.errors import DecodeError
from chain.hashing import sha256
from p2p.addrbook import (
    AddrBook,
    PeerAddress,
    address_from_pex,
    address_to_pex,
    format_netloc,
    parse_peer_address,
    validate_peer_address,
)
from p2p.errors import (
    BadHelloProof,
    HandshakeError,
    InvalidPeerAddress,
    Misbehaviour,
    PeerClosed,
    PeerRefused,
    SelfConnection,
)
from p2p.handshake import LocalNode, encode_frame, run_handshake
from p2p.limits import (
    MISBEHAVIOUR_PENALTY,
    RATE_LIMIT_PENALTY,
    BanList,
    PendingGuard,
    RecentKeys,
    is_score_bannable,
)
from p2p.messages import (
    MAX_PEX_ADDRS,
    EvidenceMsg,
    Frame,
    Hello,
    HelloProof,
    Message,
    PexAddrs,
    PexRequest,
    ProposalMsg,
    StatusMsg,
    TxMsg,
    TxsMsg,
    VoteMsg,
)
from p2p.peer import (
    CLOSE_TIMEOUT_S,
    LINK_ERRORS,
    Peer,
    PeerInfo,
    PeerLimits,
    WebSocket,
    close_link,
    handshake_link,
    receive_frame,
)

__all__ = ["Misbehaviour", "PeerHandler", "PeerInfo", "Switch", "SwitchConfig"]

log = logging.getLogger("gannet.p2p")

P2P_PATH = "/p2p"
GOSSIP_TYPES = (TxMsg, TxsMsg, ProposalMsg, VoteMsg, EvidenceMsg)
SEEN_CAPACITY = 100_000
DIAL_INTERVAL_S = 5.0
SHUTDOWN_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    """Where the switch listens, whom it keeps connected, and what a peer may cost.

    `persistent_peers` read `<node id hex>@host:port`; port 0 listens on a free
    port. `send_queue_frames`/`send_queue_bytes` bound each peer's send queue
    (when full, frames to that peer are dropped: consensus never blocks on a
    slow peer). `max_pending` caps connections still before the end of the
    handshake; each must finish within twice `handshake_timeout_s` of its accept.
    """

    host: str = "127.0.0.1"
    port: int = 26656
    persistent_peers: tuple[str, ...] = ()
    max_inbound: int = 40
    max_outbound: int = 10
    max_frame_bytes: int = 6 << 20
    max_frames_per_s: int = 2000
    max_bytes_per_s: int = 32 << 20
    handshake_timeout_s: float = 5
    ban_s: float = 60
    pex: bool = True
    send_queue_frames: int = 10_000
    ping_interval_s: float = 5
    idle_timeout_s: float = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30
    pex_interval_s: float = 30
    max_pending: int = 16
    send_queue_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        """Counts and durations must be positive (zero would switch a limit off)."""
        for name in ("max_frame_bytes", "max_frames_per_s", "max_bytes_per_s",
                     "handshake_timeout_s", "ban_s", "send_queue_frames", "ping_interval_s",
                     "idle_timeout_s", "reconnect_min_s", "reconnect_max_s",
                     "pex_interval_s", "max_pending", "send_queue_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_inbound", "max_outbound"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s {self.reconnect_max_s} is under "
                             f"reconnect_min_s {self.reconnect_min_s}")

    def peer_limits(self) -> PeerLimits:
        """The per-peer share of this configuration."""
        return PeerLimits(
            max_frame_bytes=self.max_frame_bytes, max_frames_per_s=self.max_frames_per_s,
            max_bytes_per_s=self.max_bytes_per_s, send_queue_frames=self.send_queue_frames,
            send_queue_bytes=self.send_queue_bytes, ping_interval_s=self.ping_interval_s,
            idle_timeout_s=self.idle_timeout_s)


class PeerHandler(Protocol):
    """What the node provides to the switch."""

    async def on_message(self, peer: PeerInfo, message: Message) -> None:
        """A message from `peer`, in its arrival order; may raise Misbehaviour.

        The peer's next frame is read only when this returns, so slow work belongs
        elsewhere (a link that stays unread for `idle_timeout_s` is cut by the peer).
        """

    def on_connected(self, peer: PeerInfo) -> None:
        """`peer` completed the handshake."""

    def on_disconnected(self, peer: PeerInfo) -> None:
        """`peer`'s link ended (called once per on_connected)."""

    def local_status(self) -> StatusMsg:
        """Our status, sent to every peer right after the handshake."""


def is_gossip(message: Message) -> bool:
    """Gossip is flooded and deduplicated by the hash of its frame."""
    return isinstance(message, GOSSIP_TYPES)


def compute_dialer(own_id: bytes, peer_id: bytes, outbound: bool) -> bytes:
    """The node id of the side that dialed a link."""
    return own_id if outbound else peer_id


class Switch:
    """The node's peer-to-peer service (see the module docstring).

    Single use: `start` once, `stop` once. `broadcast`, `send` and `ban` must be
    called on the event loop the switch runs on; they never block.
    """

    def __init__(self, node_key: SigningKey, chain_id: str, genesis_hash: bytes,
                 config: SwitchConfig, handler: PeerHandler, moniker: str = "") -> None:
        self.node_id = node_key.public_key
        self.config = config
        self.port = config.port
        self._key = node_key
        self._chain_id = chain_id
        self._genesis_hash = genesis_hash
        self._handler = handler
        self._moniker = moniker
        self._persistent = self._parse_persistent(config.persistent_peers)
        self._persistent_ids = frozenset(a.node_id for a in self._persistent)
        self._limits = config.peer_limits()
        self._peers: dict[bytes, Peer] = {}
        self._seen = RecentKeys(SEEN_CAPACITY)
        self._bans = BanList()
        self._rng = random.Random()
        self._book = AddrBook(self.node_id, rng=self._rng)
        self._guard = PendingGuard(config.max_pending, 2 * config.handshake_timeout_s)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dialing: set[bytes] = set()
        self._inbound_pending = 0
        self._wakeup: asyncio.Event | None = None
        self._web_server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    def _parse_persistent(self, entries: tuple[str, ...]) -> tuple[PeerAddress, ...]:
        """The persistent peers' addresses (raises InvalidPeerAddress); never ourselves."""
        addresses = [parse_peer_address(entry) for entry in entries]
        if any(a.node_id == self.node_id for a in addresses):
            log.warning("persistent_peers lists this node's own id; skipped")
        unique = {a.node_id: a for a in addresses if a.node_id != self.node_id}
        return tuple(unique.values())

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `/p2p` and start dialing persistent peers (and pex, if enabled)."""
        if self._listener is not None:
            raise RuntimeError("Switch is already started")
        loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._web_server = web.Server(self._on_http, access_log=None,
                                      keepalive_timeout=self.config.handshake_timeout_s)
        factory = self._guard.protocol_factory(self._web_server)
        self._listener = await loop.create_server(factory, self.config.host, self.config.port)
        self.port = self._listener.sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, connect=self.config.handshake_timeout_s))
        for address in self._persistent:
            self._spawn(self._keep_persistent(address))
        self._spawn(self._dial_loop())
        if self.config.pex:
            self._spawn(self._pex_loop())
        log.info("p2p listening on %s as node %s",
                 format_netloc(self.config.host, self.port), self.node_id.hex())

    async def stop(self) -> None:
        """Close every link and background task; returns when all are gone."""
        if self._listener is None or self._stopping:
            return
        self._stopping = True
        self._listener.close()
        await asyncio.gather(*(self._close_peer(peer, "node shutting down", WSCloseCode.GOING_AWAY)
                               for peer in list(self._peers.values())))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._web_server is not None and self._session is not None
        self._web_server.pre_shutdown()
        await self._web_server.shutdown(SHUTDOWN_TIMEOUT_S)
        self._guard.close()
        await self._session.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await self._listener.wait_closed()
        log.info("p2p stopped")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a background task that `stop` cancels and awaits."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished task; a crash is a bug of ours, logged with its traceback."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("p2p task failed", exc_info=task.exception())

    # --- public operations --------------------------------------------------------

    def broadcast(self, message: Message, exclude: bytes | None = None) -> int:
        """Queue `message` to every peer but `exclude`; returns how many got it queued.

        Gossip is also kept from peers known to have it, and our own copy is
        marked seen so that an echo from a peer is dropped.
        """
        data = encode_frame(message)
        key = sha256(data) if is_gossip(message) else None
        if key is not None:
            self._seen.add(key)
        count = 0
        for peer in list(self._peers.values()):
            if peer.node_id == exclude or (key is not None and key in peer.known):
                continue
            if peer.enqueue(data):
                count += 1
                if key is not None:
                    peer.known.add(key)
        return count

    def send(self, peer_id: bytes, message: Message) -> bool:
        """Queue `message` to one peer; False if it is not connected or its queue is full."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        data = encode_frame(message)
        if not peer.enqueue(data):
            return False
        if is_gossip(message):
            peer.known.add(sha256(data))
        return True

    def peers(self) -> list[PeerInfo]:
        """Snapshots of the connected peers."""
        now = self._now()
        return [peer.info(now) for peer in self._peers.values()]

    def ban(self, peer_id: bytes, reason: str) -> None:
        """Ban `peer_id` for `ban_s` and disconnect it if connected."""
        now = self._now()
        self._bans.ban(peer_id, now + self.config.ban_s, now)
        log.warning("peer %s banned for %g s: %s", peer_id.hex(), self.config.ban_s, reason)
        peer = self._peers.get(peer_id)
        if peer is not None:
            self._disconnect(peer, f"banned: {reason}")

    def is_banned(self, peer_id: bytes, host: str | None = None) -> bool:
        """Whether `peer_id` is banned (or, given `host`, banned when coming from `host`)."""
        now = self._now()
        if self._bans.is_banned(peer_id, now):
            return True
        return host is not None and self._bans.is_banned((peer_id, host), now)

    def known_addresses(self) -> list[PeerAddress]:
        """Every address in the address book (for status pages and tests)."""
        return self._book.addresses()

    @staticmethod
    def _now() -> float:
        """The monotonic clock (what asyncio's default loop uses), readable off the loop too."""
        return time.monotonic()

    # --- inbound ------------------------------------------------------------------

    async def _on_http(self, request: web.BaseRequest) -> web.StreamResponse:
        """Upgrade `/p2p` to a WebSocket and serve the peer; refuse anything else."""
        if request.path != P2P_PATH:
            return _refusal(404, f"no endpoint here; peers connect at {P2P_PATH}")
        if self._stopping:
            return _refusal(503, "node shutting down")
        if self._inbound_count() >= self.config.max_inbound:
            log.info("inbound connection from %s refused: %d inbound peers (the cap)",
                     request.remote, self.config.max_inbound)
            return _refusal(503, "too many inbound peers")
        ws = web.WebSocketResponse(max_msg_size=self.config.max_frame_bytes + 1, compress=False,
                                   autoping=False, timeout=CLOSE_TIMEOUT_S)
        if not ws.can_prepare(request).ok:
            return _refusal(400, f"{P2P_PATH} takes WebSocket upgrades")
        self._inbound_pending += 1
        upgraded = False
        try:
            await ws.prepare(request)
            upgraded = True
            peer = await self._handshake(ws, request.remote or "", outbound=False, port=0)
        except (HandshakeError, *LINK_ERRORS):
            # An upgrade that failed (the dialer gave up while this node could not answer,
            # e.g. it was stopped) leaves `ws` half prepared, which aiohttp cannot close
            # ("Call .prepare() first", logged as an unhandled exception): answer with a
            # plain response instead, which aiohttp drops quietly on the dead link.
            return ws if upgraded else _refusal(400, "the WebSocket upgrade failed")
        finally:
            self._inbound_pending -= 1
        self._guard.settle(request.transport)
        await self._run_peer(peer)
        return ws

    def _inbound_count(self) -> int:
        """Inbound peers connected or mid-handshake."""
        return self._inbound_pending + sum(not p.outbound for p in self._peers.values())

    # --- handshake and registration -----------------------------------------------

    async def _handshake(self, ws: WebSocket, host: str, outbound: bool, port: int,
                         expected_id: bytes | None = None) -> Peer:
        """Run the handshake on `ws` and register the peer; on failure close `ws` and raise.

        `port` is the dialed port (outbound); an inbound peer's comes from its Hello.
        """
        local = LocalNode(self._key, self._chain_id, self._genesis_hash, self.port, self._moniker)
        send, receive = handshake_link(ws, self.config.max_frame_bytes,
                                       self.config.handshake_timeout_s)
        try:
            hello = await run_handshake(local, send, receive, self.config.handshake_timeout_s,
                                        expected_id, screen=lambda h: self._screen(h, host))
            replaced = self._check_duplicate(hello.node_id, outbound)
        except HandshakeError as exc:
            self._on_handshake_failed(exc, host, outbound)
            await close_link(ws, str(exc))
            raise
        peer = Peer(ws, hello, host, port if outbound else hello.listen_port, outbound,
                    self._limits, self._now())
        if replaced is not None:
            self._disconnect(replaced, "duplicate link: keeping the one the lower node id dialed")
        self._register(peer)
        return peer

    def _screen(self, hello: Hello, host: str) -> None:
        """Refuse a banned node id before signing anything for it."""
        if self.is_banned(hello.node_id, host):
            raise PeerRefused(f"node {hello.node_id.hex()} is banned")

    def _check_duplicate(self, node_id: bytes, outbound: bool) -> Peer | None:
        """Of two links to one node keep the one dialed by the lower node id.

        Both ends apply the same rule to the same pair of links, so they keep the
        same one. Returns the existing peer to replace, None if there is none,
        or raises PeerRefused when the new link is the one to drop (also when both
        links were dialed by the same side: the older one stays).
        """
        if self._stopping:
            raise PeerRefused("node shutting down")
        existing = self._peers.get(node_id)
        if existing is None:
            return None
        new_dialer = compute_dialer(self.node_id, node_id, outbound)
        old_dialer = compute_dialer(self.node_id, node_id, existing.outbound)
        if new_dialer < old_dialer:
            return existing
        raise PeerRefused(f"already connected to node {node_id.hex()}")

    def _on_handshake_failed(self, exc: HandshakeError, host: str, outbound: bool) -> None:
        """Log a failed handshake; a bad proof bans that node id when it comes from `host`."""
        direction = "outbound" if outbound else "inbound"
        if isinstance(exc, SelfConnection):
            log.debug("%s handshake with %s: %s", direction, host, exc)
            return
        log.info("%s handshake with %s failed: %s", direction, host, exc)
        if isinstance(exc, BadHelloProof):
            # The id is unproven, so the ban binds it to this host only: a forger
            # elsewhere cannot get an honest node banned.
            now = self._now()
            self._bans.ban((exc.node_id, host), now + self.config.ban_s, now)
            log.warning("node %s from %s banned for %g s: %s", exc.node_id.hex(), host,
                        self.config.ban_s, exc)

    def _register(self, peer: Peer) -> None:
        """Make `peer` a connected peer; remember its address as good if it listens."""
        self._peers[peer.node_id] = peer
        if peer.port:
            with contextlib.suppress(InvalidPeerAddress):
                self._book.mark_good(validate_peer_address(
                    PeerAddress(peer.node_id, peer.host, peer.port)))
        log.info("peer connected: %s %s at %s%s", "outbound" if peer.outbound else "inbound",
                 peer.node_id.hex(), format_netloc(peer.host, peer.port),
                 f" ({peer.moniker})" if peer.moniker else "")

    # --- an established link --------------------------------------------------------

    async def _run_peer(self, peer: Peer) -> None:
        """Serve an established link until it ends, then tell the handler once."""
        self._send_status(peer)
        self._notify(self._handler.on_connected, peer)
        writer = asyncio.get_running_loop().create_task(peer.run_writer())
        if peer.outbound and self.config.pex:
            self._request_pex(peer)
        reason = "link closed"
        try:
            reason = await self._read_loop(peer, writer)
        finally:
            self._detach(peer, reason)
            writer.cancel()
            await asyncio.wait([writer])
            await peer.close(reason)

    async def _read_loop(self, peer: Peer, writer: asyncio.Task[str]) -> str:
        """Handle the peer's frames in order until the link ends; returns why it ended."""
        while not peer.detached:
            try:
                data = await receive_frame(peer.ws, self.config.max_frame_bytes,
                                           self.config.idle_timeout_s)
                await self._on_frame(peer, data)
            except PeerClosed as exc:
                # A failed write aborts the link; its reason is the better one.
                failed_write = writer.done() and not writer.cancelled()
                return writer.result() if failed_write else str(exc)
            except Misbehaviour as exc:
                if self._punish(peer, exc):
                    return f"misbehaviour: {exc.reason}"
        return "disconnected"

    async def _on_frame(self, peer: Peer, data: bytes) -> None:
        """One received frame through the steps of the module docstring."""
        if not peer.limiter.allow(len(data), self._now()):
            self._penalise(peer, RATE_LIMIT_PENALTY, "frames over the rate limit")
            return
        try:
            message = decode(Frame, data).message
        except DecodeError as exc:
            raise Misbehaviour(f"undecodable frame: {exc}") from None
        if isinstance(message, Hello | HelloProof):
            raise Misbehaviour(f"{type(message).__name__} after the handshake")
        if is_gossip(message):
            key = sha256(data)
            peer.known.add(key)
            if not self._seen.add(key):
                return
        elif isinstance(message, StatusMsg):
            peer.status = message
        elif isinstance(message, PexRequest):
            self._on_pex_request(peer)
            return
        elif isinstance(message, PexAddrs):
            self._on_pex_addrs(peer, message)
            return
        await self._deliver(peer, message)

    async def _deliver(self, peer: Peer, message: Message) -> None:
        """Hand `message` to the handler; its bugs are logged, never fatal to the link."""
        try:
            await self._handler.on_message(peer.info(self._now()), message)
        except Misbehaviour:
            raise
        except Exception:
            log.exception("handler failed on %s from peer %s", type(message).__name__,
                          peer.node_id.hex())

    def _punish(self, peer: Peer, exc: Misbehaviour) -> bool:
        """Ban or penalise `peer` for `exc`; True when it is disconnected."""
        if exc.ban:
            self.ban(peer.node_id, exc.reason)
            return True
        log.info("peer %s penalised: %s", peer.node_id.hex(), exc.reason)
        return self._penalise(peer, MISBEHAVIOUR_PENALTY, exc.reason)

    def _penalise(self, peer: Peer, points: int, reason: str) -> bool:
        """Lower `peer`'s score; under the threshold it is banned. True when disconnected."""
        score = peer.score.penalise(points, self._now())
        if is_score_bannable(score):
            self.ban(peer.node_id, f"score {score} too low (last offence: {reason})")
            return True
        return False

    def _send_status(self, peer: Peer) -> None:
        """Queue our status to a new peer."""
        try:
            status = self._handler.local_status()
        except Exception:
            log.exception("handler failed to give its status")
            return
        peer.enqueue(encode_frame(status))

    def _notify(self, callback: Callable[[PeerInfo], None], peer: Peer) -> None:
        """Call a handler's connection callback; its bugs are logged."""
        try:
            callback(peer.info(self._now()))
        except Exception:
            log.exception("handler failed in %s for peer %s", callback.__name__,
                          peer.node_id.hex())

    def _disconnect(self, peer: Peer, reason: str) -> None:
        """Detach `peer` now and close its link in the background."""
        self._detach(peer, reason)
        if not self._stopping:
            self._spawn(peer.close(reason))

    async def _close_peer(self, peer: Peer, reason: str, code: int) -> None:
        """Detach `peer` and close its link (waiting for the close)."""
        self._detach(peer, reason)
        await peer.close(reason, code)

    def _detach(self, peer: Peer, reason: str) -> None:
        """Forget `peer` as connected and tell the handler (once per peer)."""
        if peer.detached:
            return
        peer.detached = True
        peer.closed.set()
        if self._peers.get(peer.node_id) is peer:
            del self._peers[peer.node_id]
        log.info("peer disconnected: %s: %s", peer.node_id.hex(), reason)
        self._notify(self._handler.on_disconnected, peer)

    # --- outbound -----------------------------------------------------------------

    async def _dial(self, address: PeerAddress) -> bool:
        """Connect to `address`, handshake and serve the link; True if the handshake succeeded."""
        assert self._session is not None
        url = f"ws://{format_netloc(address.host, address.port)}{P2P_PATH}"
        try:
            async with asyncio.timeout(self.config.handshake_timeout_s):
                ws = await self._session.ws_connect(
                    url, max_msg_size=self.config.max_frame_bytes + 1, compress=0,
                    autoping=False, timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("dial %s failed: %s", address, exc or type(exc).__name__)
            self._book.mark_failed(address.node_id, self._now())
            return False
        try:
            peer = await self._handshake(ws, address.host, outbound=True, port=address.port,
                                         expected_id=address.node_id)
        except SelfConnection:
            self._book.forget(address.node_id)
            return False
        except HandshakeError:
            self._book.mark_failed(address.node_id, self._now())
            return False
        await self._run_peer(peer)
        return True

    async def _keep_persistent(self, address: PeerAddress) -> None:
        """Keep a link to a persistent peer forever, redialing with jittered exponential backoff.

        The backoff restarts from `reconnect_min_s` whenever a link was up.
        """
        failures = 0
        while True:
            peer = self._peers.get(address.node_id)
            if peer is not None:
                await peer.closed.wait()
                failures = 0
            elif self.is_banned(address.node_id):
                until = self._bans.banned_until(address.node_id) or self._now()
                await asyncio.sleep(max(0.0, until - self._now()))
                continue
            elif await self._dial(address):
                failures = 0
            else:
                failures += 1
            await asyncio.sleep(self._compute_backoff(failures))

    def _compute_backoff(self, failures: int) -> float:
        """min * 2^(failures-1), capped at max, times a random factor in [0.5, 1]."""
        base = self.config.reconnect_min_s * 2 ** min(max(failures - 1, 0), 30)
        return min(self.config.reconnect_max_s, base) * self._rng.uniform(0.5, 1.0)

    async def _dial_loop(self) -> None:
        """Dial addresses from the book while outbound links are under the cap; prune bans."""
        assert self._wakeup is not None
        while True:
            self._bans.prune(self._now())
            if self.config.pex:
                self._dial_from_book()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DIAL_INTERVAL_S):
                    await self._wakeup.wait()
            self._wakeup.clear()

    def _dial_from_book(self) -> None:
        """Start a dial to each due address in the book, up to the free outbound slots."""
        outbound = len(self._dialing) + sum(p.outbound for p in self._peers.values())
        free = self.config.max_outbound - outbound
        if free <= 0:
            return

        def skip(node_id: bytes) -> bool:
            return (node_id in self._peers or node_id in self._dialing
                    or node_id in self._persistent_ids or self.is_banned(node_id))

        for address in self._book.dial_candidates(self._now(), skip)[:free]:
            self._dialing.add(address.node_id)
            self._spawn(self._dial_once(address))

    async def _dial_once(self, address: PeerAddress) -> None:
        """One dial to an address from the book, and the link's life if it succeeds."""
        try:
            await self._dial(address)
        finally:
            self._dialing.discard(address.node_id)

    # --- peer exchange ------------------------------------------------------------

    async def _pex_loop(self) -> None:
        """Every `pex_interval_s`, ask one random peer for addresses."""
        while True:
            await asyncio.sleep(self.config.pex_interval_s)
            peers = [p for p in self._peers.values() if not p.detached]
            if peers:
                self._request_pex(self._rng.choice(peers))

    def _request_pex(self, peer: Peer) -> None:
        """Ask `peer` for addresses (its answer is accepted once)."""
        peer.pex_requested = True
        peer.enqueue(encode_frame(PexRequest()))

    def _on_pex_request(self, peer: Peer) -> None:
        """Answer with good addresses, never the requester's or a banned one.

        A peer asking again within half the pex interval is ignored (no penalty:
        its interval may be shorter than ours).
        """
        now = self._now()
        if not self.config.pex or now - peer.pex_answered_at < self.config.pex_interval_s / 2:
            return
        peer.pex_answered_at = now
        addresses = self._book.good_addresses(
            MAX_PEX_ADDRS, lambda node_id: node_id == peer.node_id or self.is_banned(node_id))
        peer.enqueue(encode_frame(PexAddrs(tuple(address_to_pex(a) for a in addresses))))

    def _on_pex_addrs(self, peer: Peer, message: PexAddrs) -> None:
        """Add the valid addresses of an answer we asked for; dial them if we have room."""
        if not self.config.pex:
            return
        if not peer.pex_requested:
            raise Misbehaviour("peer addresses we did not ask for", ban=False)
        peer.pex_requested = False
        added = 0
        for addr in message.addrs:
            try:
                added += self._book.add_heard(address_from_pex(addr))
            except InvalidPeerAddress:
                continue
        if added:
            log.debug("learned %d peer addresses from %s", added, peer.node_id.hex())
            assert self._wakeup is not None
            self._wakeup.set()


def _refusal(status: int, text: str) -> web.Response:
    """A plain-text refusal that closes the connection."""
    response = web.Response(status=status, text=text)
    response.force_close()
    return response
