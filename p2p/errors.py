"""The p2p package's exception tree: one class per way a peer or a link fails.

Two families: `Misbehaviour` is what a peer did wrong on an established link
(the switch bans it or lowers its score); `HandshakeError` ends a connection
before it became a peer (only a proven bad proof costs the peer a ban).
"""


class P2PError(Exception):
    """Base of every error raised by the `p2p` package."""


class Misbehaviour(P2PError):
    """A peer sent something it must not.

    `ban=True`: disconnect and ban its node id for `ban_s`; `ban=False`: lower its
    score only (a score under the ban threshold still disconnects and bans).
    """

    def __init__(self, reason: str, ban: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ban = ban


class InvalidPeerAddress(P2PError, ValueError):
    """A peer address is not `<node id hex>@host:port` with a valid id, host and port."""


class PeerClosed(P2PError):
    """The link ended: the remote closed it, it broke, or it was idle too long."""


class HandshakeError(P2PError):
    """The handshake failed; the connection is closed with this message as the reason.

    `ban` says whether the failure is the peer's fault beyond doubt.
    """

    ban = False


class HandshakeTimeout(HandshakeError):
    """The handshake did not complete within `handshake_timeout_s`."""


class HandshakeClosed(HandshakeError):
    """The remote closed or broke the connection during the handshake."""


class ProtocolViolation(HandshakeError):
    """A handshake frame was not the message the handshake expects at that point."""


class IncompatiblePeer(HandshakeError):
    """The peer speaks another protocol version or lives on another chain or genesis."""


class SelfConnection(HandshakeError):
    """The peer is this node (an address of our own, e.g. learned by peer exchange)."""


class UnexpectedPeer(HandshakeError):
    """The dialed address answered with a node id other than the one configured."""


class BadHelloProof(HandshakeError):
    """The peer's HelloProof does not verify under the node id it claimed."""

    ban = True

    def __init__(self, message: str, node_id: bytes) -> None:
        super().__init__(message)
        self.node_id = node_id


class PeerRefused(HandshakeError):
    """This switch refuses a peer: it is banned or already connected."""
