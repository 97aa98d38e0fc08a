"""The consensus package's exception tree.

`InvalidTransaction` makes a tx unincludable (a block carrying it is invalid);
a tx that is includable but fails while executing is not an exception: it gets a
failed `Receipt` with a code and reason, pays its fee and changes nothing else.
"""


class ConsensusError(Exception):
    """Base of every error raised by the `consensus` package."""


class InvalidTransaction(ConsensusError):
    """A transaction can never be included in the current state."""


class WrongChainId(InvalidTransaction):
    """The transaction was signed for another chain."""


class InvalidSignature(InvalidTransaction):
    """The transaction's signature does not verify for its sender key."""


class BadNonce(InvalidTransaction):
    """The transaction's nonce is not the sender's next nonce."""


class FeeBelowMinimum(InvalidTransaction):
    """The transaction offers less fee than the network minimum."""


class CannotPayFee(InvalidTransaction):
    """The sender's spendable GPU balance does not cover the fee."""


class UnknownTxKind(InvalidTransaction):
    """The codec admits the transaction's kind but no rule of this chain applies it."""


class InvalidBlock(ConsensusError):
    """A block violates a consensus rule; no honest node applies it."""


class InvalidHeader(InvalidBlock):
    """A header field disagrees with the chain it extends."""


class InvalidCommit(InvalidBlock):
    """A commit lacks +2/3 valid precommits for the block it claims."""


class InvalidBlockTx(InvalidBlock):
    """A block includes a transaction that is invalid in its state."""

    def __init__(self, index: int, tx_hash: bytes, cause: InvalidTransaction) -> None:
        super().__init__(f"tx {index} ({tx_hash.hex()[:16]}) is invalid: {cause}")
        self.index = index
        self.tx_hash = tx_hash
        self.cause = cause


class WalError(ConsensusError):
    """The consensus write-ahead log cannot be read or written."""


class WalFrameError(WalError):
    """Bytes at an offset are not one whole, intact WAL frame (short, bad length or CRC)."""


class WalCorrupted(WalError):
    """A WAL segment is damaged before its tail: replaying it would drop durable entries."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"WAL {path} is corrupt at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class DoubleSignRefused(ConsensusError):
    """The signer refused a request that could conflict with what it signed before."""


class SignStateCorrupted(ConsensusError):
    """The signer's last-signed state file is unreadable; it refuses to guess."""


class SignStateBehind(ConsensusError):
    """The chain holds signatures of this validator newer than its sign state remembers."""


class InvalidMessage(ConsensusError):
    """A consensus message for the current height breaks a rule no honest sender breaks.

    The network layer penalises the peer that relayed it; the engine drops it.
    """


class UnknownValidator(InvalidMessage):
    """A vote or proposal names a signer outside the height's validator set."""


class BadMessageSignature(InvalidMessage):
    """A vote or proposal signature does not verify under its validator's key."""


class WrongProposer(InvalidMessage):
    """A proposal is signed by someone other than the round's proposer."""


class MalformedProposal(InvalidMessage):
    """A proposal disagrees with its block (hash or height) or names an impossible pol round."""


class MalformedVote(InvalidMessage):
    """A vote has a type other than prevote or precommit."""


class InvalidValidatorUpdate(ConsensusError):
    """A validator-set update can't apply: bad address, absent removal, bad resulting set."""


class InvalidEvidence(InvalidBlock):
    """Evidence of misbehaviour breaks a rule; `reason` says which."""

    def __init__(self, reason: str, index: int | None = None) -> None:
        super().__init__(reason if index is None else f"evidence {index} is invalid: {reason}")
        self.reason = reason
        self.index = index
