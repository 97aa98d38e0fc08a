"""The chain package's exception tree: one class per failure class.

Every error a caller can act on derives from `ChainError`, so the node can tell
bad input (a typed error with a message) from its own bugs (anything else).
"""


class ChainError(Exception):
    """Base of every error raised by the `chain` package."""


class DecodeError(ChainError):
    """Bytes are not the canonical encoding of the expected record."""


class EncodeError(ChainError):
    """A record holds a value its schema cannot encode (wrong type, out of range)."""


class StoreError(ChainError):
    """The block store cannot read or write; the node must stop, never half-commit."""


class StoreCorrupted(StoreError):
    """The store holds data that does not decode or contradicts itself."""


class MempoolError(ChainError):
    """A transaction was not admitted to the mempool; the message says why."""


class MempoolFull(MempoolError):
    """The mempool is at its count or byte limit and the tx does not outbid the cheapest."""


class TxAlreadyKnown(MempoolError):
    """The same transaction is already pending."""


class FeeTooLow(MempoolError):
    """A replacement does not pay strictly more fee than the pending tx it replaces."""


class FeeBelowMinimum(MempoolError):
    """The tx offers less fee than the network minimum, so no block may include it."""


class NonceTooLow(MempoolError):
    """The tx nonce is below the sender's committed nonce."""


class NonceGapTooLarge(MempoolError):
    """The tx nonce is too far ahead of the sender's next nonce to be held."""


class TxTooLarge(MempoolError):
    """The encoded tx exceeds the per-tx byte limit."""


class InvalidTxSignature(MempoolError):
    """The tx signature does not verify for its declared sender key."""
