"""Commits: +2/3 of voting power precommitting one block.

A commit for height h is carried in block h+1 (`last_commit`) and checked there,
so every block proves that its parent was finalised by the validator set.
"""

from chain.crypto import SigningKey, verify
from chain.records import VOTE_PRECOMMIT, Commit, CommitSig, ValidatorSet, Vote
from chain.signing import sign_vote, vote_signing_bytes
from chain.types import ZERO_HASH
from consensus.errors import InvalidCommit

EMPTY_COMMIT = Commit(height=0, round=0, block_hash=b"", signatures=())


def total_power(vset: ValidatorSet) -> int:
    """Sum of voting power of a validator set."""
    return sum(v.power for v in vset.validators)


def has_quorum(power: int, total: int) -> bool:
    """More than two thirds of `total` (integer arithmetic: 3·power > 2·total)."""
    return 3 * power > 2 * total


def precommit_for(commit: Commit, validator: bytes) -> Vote:
    """The precommit vote a commit signature of `validator` signs."""
    return Vote(vote_type=VOTE_PRECOMMIT, height=commit.height, round=commit.round,
                block_hash=commit.block_hash, validator=validator)


def sign_commit(chain_id: str, key: SigningKey, address: bytes, height: int, round_: int,
                block_hash_: bytes) -> Commit:
    """A single validator's commit: its own precommit for the block."""
    vote = Vote(vote_type=VOTE_PRECOMMIT, height=height, round=round_,
                block_hash=block_hash_, validator=address)
    signed = sign_vote(key, chain_id, vote)
    sig = CommitSig(validator=address, signature=signed.signature)
    return Commit(height=height, round=round_, block_hash=block_hash_, signatures=(sig,))


def validate_commit(chain_id: str, vset: ValidatorSet, commit: Commit, height: int,
                    block_hash_: bytes) -> None:
    """Raise `InvalidCommit` unless `commit` finalises `block_hash_` at `height`.

    Rules: the commit names that height and block; each signer is in the set and
    signs at most once; each signature verifies; signers hold > 2/3 of the power.
    """
    if commit.height != height:
        raise InvalidCommit(f"commit height: expected {height}, got {commit.height}")
    if commit.block_hash != block_hash_ or block_hash_ == ZERO_HASH:
        raise InvalidCommit(
            f"commit block: expected {block_hash_.hex()}, got {commit.block_hash.hex()}")
    powers = {v.address: v for v in vset.validators}
    seen: set[bytes] = set()
    signed_power = 0
    for sig in commit.signatures:
        validator = powers.get(sig.validator)
        if validator is None:
            raise InvalidCommit(f"commit signer {sig.validator.hex()} is not a validator")
        if sig.validator in seen:
            raise InvalidCommit(f"commit signer {sig.validator.hex()} signs twice")
        seen.add(sig.validator)
        message = vote_signing_bytes(chain_id, precommit_for(commit, sig.validator))
        if not verify(validator.public_key, message, sig.signature):
            raise InvalidCommit(f"commit signature of {sig.validator.hex()} does not verify")
        signed_power += validator.power
    total = total_power(vset)
    if not has_quorum(signed_power, total):
        raise InvalidCommit(f"commit power {signed_power} is not more than 2/3 of {total}")
