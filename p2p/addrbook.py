"""Peer addresses: parsing, validation, and the book of peers we know (peer exchange).

An address is a node id (the node's Ed25519 public key) and where it listens.
The book keeps two kinds of entry: *good* ones, where a handshake proved that
node id at that address (or the peer connected to us and told us its listen
port), and *heard* ones, learned by peer exchange and not yet tried. Only good
addresses are handed to others, so a peer cannot launder garbage through us;
heard ones are dialed, and forgotten after repeated failures.
"""

import ipaddress
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from chain.types import PUBLIC_KEY_LEN
from p2p.errors import InvalidPeerAddress
from p2p.messages import MAX_HOST_LEN, PeerAddr

MAX_BOOK_SIZE = 1000
MAX_DIAL_FAILURES = 5
RETRY_BASE_S = 5.0
RETRY_MAX_S = 600.0

_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A dialable peer: its node id and the host and port it listens on."""

    node_id: bytes
    host: str
    port: int

    def __str__(self) -> str:
        """`<node id hex>@host:port`, IPv6 hosts in brackets."""
        return f"{self.node_id.hex()}@{format_netloc(self.host, self.port)}"


def format_netloc(host: str, port: int) -> str:
    """host:port, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_peer_address(text: str) -> PeerAddress:
    """Parse `<node id hex>@host:port` (IPv6 host in brackets) or raise InvalidPeerAddress."""
    node_hex, at, netloc = text.strip().partition("@")
    if not at:
        raise InvalidPeerAddress(f"peer address must read <node id hex>@host:port, got {text!r}")
    try:
        node_id = bytes.fromhex(node_hex)
    except ValueError:
        raise InvalidPeerAddress(f"node id must be hex, got {node_hex[:80]!r}") from None
    host, colon, port_text = netloc.rpartition(":")
    if not colon or not port_text.isdigit():
        raise InvalidPeerAddress(f"peer address needs host:port, got {netloc[:300]!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return validate_peer_address(PeerAddress(node_id, host, int(port_text)))


def validate_peer_address(address: PeerAddress) -> PeerAddress:
    """Return `address` if its node id, host and port are well-formed, else raise."""
    if len(address.node_id) != PUBLIC_KEY_LEN:
        raise InvalidPeerAddress(
            f"node id must be {PUBLIC_KEY_LEN} bytes, got {len(address.node_id)}")
    if not 1 <= address.port <= 65535:
        raise InvalidPeerAddress(f"port must be 1..65535, got {address.port}")
    validate_host(address.host)
    return address


def validate_host(host: str) -> None:
    """A host is a unicast IP literal or an RFC 1123 DNS name; anything else raises."""
    if not 1 <= len(host) <= MAX_HOST_LEN:
        raise InvalidPeerAddress(f"host must be 1..{MAX_HOST_LEN} characters, got {len(host)}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        if not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
            raise InvalidPeerAddress(f"host is neither an IP address nor a DNS name: "
                                     f"{host[:80]!r}") from None
        return
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidPeerAddress(f"host {host} is not a unicast address")


def address_from_pex(addr: PeerAddr) -> PeerAddress:
    """The validated address a peer-exchange record names, or InvalidPeerAddress."""
    try:
        host = addr.host.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidPeerAddress("host is not ASCII") from None
    return validate_peer_address(PeerAddress(addr.node_id, host, addr.port))


def address_to_pex(address: PeerAddress) -> PeerAddr:
    """The peer-exchange record of an address."""
    return PeerAddr(node_id=address.node_id, host=address.host.encode("ascii"),
                    port=address.port)


@dataclass(slots=True)
class _Entry:
    """What the book knows of one node id."""

    address: PeerAddress
    good: bool
    failures: int = 0
    retry_at: float = 0.0


class AddrBook:
    """The addresses of peers this node knows, by node id, at most `max_size` of them."""

    def __init__(self, own_id: bytes, max_size: int = MAX_BOOK_SIZE,
                 rng: random.Random | None = None) -> None:
        self._own_id = own_id
        self._max_size = max_size
        self._entries: dict[bytes, _Entry] = {}
        self._rng = rng if rng is not None else random.Random()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def get(self, node_id: bytes) -> PeerAddress | None:
        """The address known for `node_id`, if any."""
        entry = self._entries.get(node_id)
        return None if entry is None else entry.address

    def is_good(self, node_id: bytes) -> bool:
        """Whether `node_id`'s address was proven by a handshake."""
        entry = self._entries.get(node_id)
        return entry is not None and entry.good

    def add_heard(self, address: PeerAddress) -> bool:
        """Add an address learned by peer exchange; True if it is new to the book.

        Ignored when it is our own id, when the id is already known (a heard
        address never overrides one we know), or when the book is full.
        """
        if address.node_id == self._own_id or address.node_id in self._entries:
            return False
        if len(self._entries) >= self._max_size:
            return False
        self._entries[address.node_id] = _Entry(address, good=False)
        return True

    def mark_good(self, address: PeerAddress) -> None:
        """A handshake proved `address`: keep it (replacing any older one) as good."""
        if address.node_id == self._own_id:
            return
        is_full = address.node_id not in self._entries and len(self._entries) >= self._max_size
        if is_full and not self._evict_heard():
            return
        self._entries[address.node_id] = _Entry(address, good=True)

    def mark_failed(self, node_id: bytes, now: float) -> None:
        """A dial failed: retry later (doubling), forget a heard address after repeated failures."""
        entry = self._entries.get(node_id)
        if entry is None:
            return
        entry.failures += 1
        if not entry.good and entry.failures >= MAX_DIAL_FAILURES:
            del self._entries[node_id]
            return
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(entry.failures - 1, 16))
        entry.retry_at = now + delay

    def forget(self, node_id: bytes) -> None:
        """Drop `node_id` from the book."""
        self._entries.pop(node_id, None)

    def addresses(self) -> list[PeerAddress]:
        """Every address in the book, good or heard, in insertion order."""
        return [entry.address for entry in self._entries.values()]

    def good_addresses(self, limit: int, skip: Callable[[bytes], bool]) -> list[PeerAddress]:
        """Up to `limit` good addresses chosen at random, none whose id `skip` names."""
        good = [e.address for e in self._entries.values()
                if e.good and not skip(e.address.node_id)]
        return self._rng.sample(good, min(limit, len(good)))

    def dial_candidates(self, now: float, skip: Callable[[bytes], bool]) -> list[PeerAddress]:
        """Addresses due for a dial at `now` (none whose id `skip` names), in random order."""
        due = [e.address for e in self._entries.values()
               if e.retry_at <= now and not skip(e.address.node_id)]
        self._rng.shuffle(due)
        return due

    def _evict_heard(self) -> bool:
        """Make room by dropping one heard (unproven) address; False if all are good."""
        for node_id, entry in self._entries.items():
            if not entry.good:
                del self._entries[node_id]
                return True
        return False
