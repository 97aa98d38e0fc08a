"""What a peer may cost us: rate limits, a score, bans, bounded memories, a connection cap.

Nothing here is consensus: times are the event loop's monotonic clock (seconds
as floats) and no two nodes need to agree on any of it.

* `RateLimiter`: two token buckets per peer, frames/s and bytes/s; a frame over
  either budget is dropped and costs the peer score.
* `PeerScore`: starts at 0, loses points per offence and regains one point per
  second up to 0; under `BAN_SCORE` the peer is disconnected and banned, so a
  burst is forgiven and a sustained flood is not.
* `BanList`: keys (node ids, or (node id, host) pairs) banned until an instant.
* `RecentKeys`: a bounded set that forgets the oldest key first (gossip dedup).
* `PendingGuard`: caps TCP connections that have not finished the p2p handshake
  and aborts each one that has not finished within its deadline, so slowloris
  clients and stalled handshakes cannot hold sockets (aiohttp has no such limit).
"""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable

from p2p.guarded import AdmittedProtocol

log = logging.getLogger("gannet.p2p")

RATE_LIMIT_PENALTY = 1
MISBEHAVIOUR_PENALTY = 10
BAN_SCORE = -100
SCORE_RECOVERY_PER_S = 1
MAX_BANS = 10_000

REJECT_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
    b"too many connections"
)


class TokenBucket:
    """Holds up to `capacity` tokens and gains `rate` per second; spending needs enough."""

    __slots__ = ("_at", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        """A full bucket at `now`."""
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate and capacity must be positive, got {rate!r}, {capacity!r}")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._at = now

    def refill(self, now: float) -> float:
        """The tokens available at `now` (time never runs backwards here)."""
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
        return self._tokens

    def can_take(self, amount: float, now: float) -> bool:
        """Whether `amount` tokens are available at `now`."""
        return self.refill(now) >= amount

    def take(self, amount: float) -> None:
        """Spend `amount` tokens (after `can_take` said yes)."""
        self._tokens -= amount


class RateLimiter:
    """A peer's budget: at most `frames_per_s` frames and `bytes_per_s` bytes per second.

    Each bucket holds one second of budget, so a burst up to that is admitted. The
    byte bucket holds at least one maximal frame, or a legal frame could never pass.
    """

    __slots__ = ("_bytes", "_frames")

    def __init__(self, frames_per_s: int, bytes_per_s: int, max_frame_bytes: int,
                 now: float) -> None:
        self._frames = TokenBucket(frames_per_s, frames_per_s, now)
        self._bytes = TokenBucket(bytes_per_s, max(bytes_per_s, max_frame_bytes), now)

    def allow(self, size: int, now: float) -> bool:
        """Admit a frame of `size` bytes (spending budget) or refuse it (spending nothing)."""
        if not (self._frames.can_take(1, now) and self._bytes.can_take(size, now)):
            return False
        self._frames.take(1)
        self._bytes.take(size)
        return True


class PeerScore:
    """A peer's standing: 0 is good, penalties subtract, time heals one point per second."""

    __slots__ = ("_at", "_value")

    def __init__(self, now: float) -> None:
        self._value = 0
        self._at = now

    def value(self, now: float) -> int:
        """The score at `now`, after recovery."""
        whole_seconds = int(now - self._at)
        if whole_seconds > 0:
            self._value = min(0, self._value + whole_seconds * SCORE_RECOVERY_PER_S)
            self._at += whole_seconds
        return self._value

    def penalise(self, points: int, now: float) -> int:
        """Subtract `points`; returns the new score."""
        self._value = self.value(now) - points
        return self._value


def is_score_bannable(score: int) -> bool:
    """A peer whose score fell under `BAN_SCORE` is disconnected and banned."""
    return score < BAN_SCORE


class BanList:
    """Keys banned until an instant; expired bans are forgotten, the list is bounded."""

    def __init__(self, max_size: int = MAX_BANS) -> None:
        self._until: dict[Hashable, float] = {}
        self._max_size = max_size

    def ban(self, key: Hashable, until: float, now: float) -> None:
        """Ban `key` until `until` (a longer ban already in place is kept)."""
        if key not in self._until and len(self._until) >= self._max_size:
            self.prune(now)
            if len(self._until) >= self._max_size:
                # Full of live bans: the one expiring soonest makes room.
                del self._until[min(self._until, key=self._until.__getitem__)]
        self._until[key] = max(until, self._until.get(key, until))

    def is_banned(self, key: Hashable, now: float) -> bool:
        """Whether `key` is banned at `now`."""
        until = self._until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._until[key]
            return False
        return True

    def banned_until(self, key: Hashable) -> float | None:
        """When `key`'s ban ends (None: not banned, or not any more once pruned)."""
        return self._until.get(key)

    def prune(self, now: float) -> None:
        """Forget every ban that has ended."""
        for key in [k for k, until in self._until.items() if until <= now]:
            del self._until[key]

    def __len__(self) -> int:
        return len(self._until)


class RecentKeys:
    """A set of at most `capacity` keys; adding to a full set forgets the oldest key."""

    __slots__ = ("_capacity", "_keys")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity

    def add(self, key: bytes) -> bool:
        """Remember `key`; True if it was new."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


class _GuardedProtocol(AdmittedProtocol["PendingGuard"]):
    """Proxy in front of aiohttp's protocol: admits, times out or forwards a connection."""

    def __init__(self, guard: "PendingGuard", inner: asyncio.Protocol) -> None:
        super().__init__(guard, inner)
        self.timer: asyncio.TimerHandle | None = None


class PendingGuard:
    """Caps connections still before the end of the p2p handshake; aborts the slow ones.

    Every accepted connection is pending until `settle` is called for its
    transport (the handshake succeeded). A pending connection past `deadline_s`
    from its accept is aborted, whatever it is doing (sending headers one byte a
    second, stalling the handshake). At most `max_pending` are pending at once;
    an excess one gets a raw 503 and is closed before aiohttp sees it.
    """

    def __init__(self, max_pending: int, deadline_s: float,
                 reject_response: bytes = REJECT_RESPONSE) -> None:
        if max_pending < 1 or deadline_s <= 0:
            raise ValueError(f"max_pending and deadline_s must be positive, "
                             f"got {max_pending!r}, {deadline_s!r}")
        self.max_pending = max_pending
        self.deadline_s = deadline_s
        self.reject_response = reject_response
        self._conns: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self._pending: set[asyncio.BaseTransport] = set()
        self.rejected_total = 0
        self.expired_total = 0

    @property
    def pending_count(self) -> int:
        """Connections accepted and not yet settled."""
        return len(self._pending)

    def protocol_factory(self, inner_factory: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that guards `inner_factory`'s."""
        return lambda: _GuardedProtocol(self, inner_factory())

    def admit(self, conn: _GuardedProtocol) -> bool:
        """Admit a new connection unless `max_pending` are pending; arm its deadline."""
        if len(self._pending) >= self.max_pending:
            self.rejected_total += 1
            log.warning("p2p connection refused: %d connections mid-handshake (the cap)",
                        len(self._pending))
            return False
        assert conn.transport is not None
        self._conns[conn.transport] = conn
        self._pending.add(conn.transport)
        conn.timer = asyncio.get_running_loop().call_later(self.deadline_s, self._expire, conn)
        return True

    def settle(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection on `transport` finished its handshake: no deadline, not pending."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is None:
            return
        self._pending.discard(transport)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def release(self, conn: _GuardedProtocol) -> None:
        """Forget a closed connection."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.transport is not None:
            self._conns.pop(conn.transport, None)
            self._pending.discard(conn.transport)

    def _expire(self, conn: _GuardedProtocol) -> None:
        """Abort a connection that did not finish its handshake in time."""
        conn.timer = None
        if conn.transport is not None and conn.transport in self._pending:
            self.expired_total += 1
            log.info("p2p connection aborted: no handshake within %g s", self.deadline_s)
            conn.transport.abort()

    def close(self) -> None:
        """Abort every connection still open."""
        for transport, conn in list(self._conns.items()):
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
            transport.abort()
