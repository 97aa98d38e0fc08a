"""What a transaction or vote signature covers, and how to make and check one.

Every signature covers `crypto.sign_bytes(chain_id, TYPE_TAG, encode(record))`:
the canonical encoding of the unsigned record, bound to the chain and to the
record type, so a tx signature never verifies as a vote (or on another chain).

- A tx carries its chain id (utf-8 bytes) and its sender's public key; its
  signature is checked against both, so a tx is self-contained.
- A vote names its validator by address only; the chain id comes from the
  node's config and the key from the validator set.
"""

from chain import codec
from chain.address import AddressError, address_from_public_key
from chain.crypto import CryptoError, SigningKey, VerifyItem, sign_bytes, verify
from chain.records import Proposal, SignedProposal, SignedTx, SignedVote, Tx, Vote
from chain.types import SIGNATURE_LEN, Address, Hash32

__all__ = [
    "proposal_signing_bytes",
    "sender_address",
    "sign_proposal",
    "sign_tx",
    "sign_vote",
    "tx_signing_bytes",
    "tx_verify_item",
    "verify_proposal_signature",
    "verify_tx_signature",
    "verify_vote_signature",
    "vote_signing_bytes",
]

_SIGNED_TX_HEADER = b"\x92"  # msgpack fixarray of 2 fields
_SIG_HEADER = b"\xc4" + bytes([SIGNATURE_LEN])  # msgpack bin8 of 64 bytes
_SIGNATURE_TRAILER = len(_SIG_HEADER) + SIGNATURE_LEN


def tx_signing_bytes(tx: Tx) -> Hash32:
    """The digest a tx signature covers: sign_bytes(tx chain id, b"tx", encode(tx)).

    Raises CryptoError when the tx chain id is not utf-8 (no valid signature exists).
    """
    return sign_bytes(_chain_id_of(tx), Tx.TYPE_TAG, codec.encode(tx))


def _chain_id_of(tx: Tx) -> str:
    """The tx chain id as text; CryptoError when it is not utf-8."""
    try:
        return tx.chain_id.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CryptoError(f"tx chain id must be utf-8, got {tx.chain_id!r}") from exc


def sign_tx(key: SigningKey, tx: Tx) -> SignedTx:
    """`tx` signed by `key`, which must be the key of `tx.sender`."""
    if key.public_key != tx.sender:
        raise CryptoError(
            f"signing key does not match the tx sender: expected {tx.sender.hex()}, "
            f"got {key.public_key.hex()}"
        )
    return SignedTx(tx=tx, signature=key.sign(tx_signing_bytes(tx)))


def tx_verify_item(stx: SignedTx, raw: bytes | None = None) -> VerifyItem:
    """The (public_key, message, signature) check of `stx`, for batch verification.

    `raw`, when given, must be the canonical encoding of `stx` (as `codec.decode`
    guarantees for what it accepts); the encoded tx is then sliced out of it
    instead of re-encoded. Either way the message is `tx_signing_bytes(stx.tx)`.
    """
    body = _encoded_tx_in(raw) if raw is not None else None
    if body is None:
        return (stx.tx.sender, tx_signing_bytes(stx.tx), stx.signature)
    return (stx.tx.sender, sign_bytes(_chain_id_of(stx.tx), Tx.TYPE_TAG, body), stx.signature)


def _encoded_tx_in(raw: bytes) -> bytes | None:
    """The encoded Tx inside a canonical SignedTx encoding, or None if the layout differs.

    A canonical SignedTx is fixarray(2) || encode(tx) || bin8(64) || signature.
    """
    if raw[:1] == _SIGNED_TX_HEADER and raw[-_SIGNATURE_TRAILER:-SIGNATURE_LEN] == _SIG_HEADER:
        return raw[1:-_SIGNATURE_TRAILER]
    return None


def verify_tx_signature(stx: SignedTx) -> bool:
    """True iff the signature of `stx` is valid for its sender key under the pinned rule."""
    try:
        public_key, message, signature = tx_verify_item(stx)
    except CryptoError:
        return False
    return verify(public_key, message, signature)


def sender_address(stx: SignedTx) -> Address:
    """The account address of the tx sender (20 bytes of SHA-256 of its key)."""
    return address_from_public_key(stx.tx.sender)


def vote_signing_bytes(chain_id: str, vote: Vote) -> Hash32:
    """The digest a vote signature covers: sign_bytes(chain_id, b"vote", encode(vote))."""
    return sign_bytes(chain_id, Vote.TYPE_TAG, codec.encode(vote))


def sign_vote(key: SigningKey, chain_id: str, vote: Vote) -> SignedVote:
    """`vote` signed by `key`, whose address must be `vote.validator`."""
    address = address_from_public_key(key.public_key)
    if address != vote.validator:
        raise CryptoError(
            f"signing key does not match the vote validator: expected {vote.validator.hex()}, "
            f"got {address.hex()}"
        )
    return SignedVote(vote=vote, signature=key.sign(vote_signing_bytes(chain_id, vote)))


def verify_vote_signature(chain_id: str, svote: SignedVote, public_key: bytes) -> bool:
    """True iff `svote` is signed by `public_key` for `chain_id` and the key is the voter's.

    The key must hash to `svote.vote.validator`, so a vote can't be credited to
    a validator by someone else's signature.
    """
    try:
        address = address_from_public_key(public_key)
    except AddressError:
        return False
    if address != svote.vote.validator:
        return False
    return verify(public_key, vote_signing_bytes(chain_id, svote.vote), svote.signature)


def proposal_signing_bytes(chain_id: str, proposal: Proposal) -> Hash32:
    """The digest a proposal signature covers: sign_bytes(chain_id, b"proposal", encode(p))."""
    return sign_bytes(chain_id, Proposal.TYPE_TAG, codec.encode(proposal))


def sign_proposal(key: SigningKey, chain_id: str, proposal: Proposal) -> SignedProposal:
    """`proposal` signed by `key`, whose address must be `proposal.proposer`."""
    address = address_from_public_key(key.public_key)
    if address != proposal.proposer:
        raise CryptoError(
            f"signing key does not match the proposer: expected {proposal.proposer.hex()}, "
            f"got {address.hex()}"
        )
    return SignedProposal(proposal=proposal,
                          signature=key.sign(proposal_signing_bytes(chain_id, proposal)))


def verify_proposal_signature(chain_id: str, sp: SignedProposal, public_key: bytes) -> bool:
    """True iff `sp` is signed by `public_key`, the key of `sp.proposal.proposer`."""
    try:
        address = address_from_public_key(public_key)
    except AddressError:
        return False
    if address != sp.proposal.proposer:
        return False
    return verify(public_key, proposal_signing_bytes(chain_id, sp.proposal), sp.signature)
