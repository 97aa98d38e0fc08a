"""The validator's signer: it never signs two different things for one step.

As CometBFT's FilePV, the signer remembers the last (height, round, step) it
signed, with the digest and signature, in a file written atomically BEFORE a
signature leaves it. A request below that point is refused; a request at that
point is answered with the stored signature when it asks for the same digest
(the node re-signing after a crash) and refused otherwise; a request above it is
signed. Steps order as STEP_PROPOSE < STEP_PREVOTE < STEP_PRECOMMIT.

Unlike FilePV it also keeps every signature of the last height (`recent`), and
answers a repeat of any of them with the stored signature. The engine may sign a
prevote and a precommit in one step; a node killed before either reached its WAL
must be able to hand out that prevote again after a restart, or it can never
prevote at that height while the others wait for exactly its vote.

File (JSON, hex bytes, like priv_validator_state.json), with a checksum so a
garbled file is refused rather than guessed at:

    {"height": 12, "round": 0, "step": 3, "sign_bytes": "…", "signature": "…",
     "recent": [{"round": 0, "step": 2, "sign_bytes": "…", "signature": "…"}, …],
     "checksum": hex(sha256(encode(SignState)))}

(A file without "recent", as written before it existed, reads as an empty list.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from chain.address import address_from_public_key
from chain.codec import HASH, SIGNATURE, U8, U32, U64, Bytes, ListOf, Record, encode, record
from chain.crypto import CryptoError, SigningKey
from chain.errors import EncodeError
from chain.files import write_file_atomic
from chain.hashing import sha256
from chain.records import (
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    STEP_PROPOSE,
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Proposal,
    SignedProposal,
    SignedVote,
    Vote,
)
from chain.signing import proposal_signing_bytes, vote_signing_bytes
from chain.store import BlockStore
from consensus.errors import DoubleSignRefused, SignStateBehind, SignStateCorrupted

STEP_OF_VOTE = {VOTE_PREVOTE: STEP_PREVOTE, VOTE_PRECOMMIT: STEP_PRECOMMIT}
_FIELDS = ("height", "round", "step", "sign_bytes", "signature", "checksum")
SKIP_FLAG = "--unsafe-skip-double-sign-check"


MAX_RECENT = 64


@record
class SignedStep(Record):
    """One earlier signature of the last signed height."""

    round: Annotated[int, U32]
    step: Annotated[int, U8]
    sign_bytes: Annotated[bytes, HASH]
    signature: Annotated[bytes, SIGNATURE]


@record
class SignState(Record):
    """The last thing signed: its (height, round, step), digest and signature, and the
    earlier signatures of that height (`recent`, oldest first, at most MAX_RECENT).

    The zero state (height 0, empty digest and signature) has signed nothing.
    """

    height: Annotated[int, U64]
    round: Annotated[int, U32]
    step: Annotated[int, U8]
    sign_bytes: Annotated[bytes, Bytes(0, 32, (0, 32))]
    signature: Annotated[bytes, Bytes(0, 64, (0, 64))]
    recent: Annotated[tuple[SignedStep, ...], ListOf(SignedStep, MAX_RECENT)] = ()


ZERO_SIGN_STATE = SignState(height=0, round=0, step=0, sign_bytes=b"", signature=b"")


# --- the file -----------------------------------------------------------------


def save_sign_state(path: Path, state: SignState) -> None:
    """Replace the state file atomically (temp file, fsync, rename, fsync of the folder)."""
    doc = {"height": state.height, "round": state.round, "step": state.step,
           "sign_bytes": state.sign_bytes.hex(), "signature": state.signature.hex(),
           "recent": [{"round": r.round, "step": r.step, "sign_bytes": r.sign_bytes.hex(),
                       "signature": r.signature.hex()} for r in state.recent],
           "checksum": _checksum(state).hex()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)


def init_sign_state(path: Path) -> None:
    """Write the zero state: a new validator home has signed nothing yet."""
    save_sign_state(path, ZERO_SIGN_STATE)


def load_sign_state(path: Path) -> SignState | None:
    """The state in `path`, None if there is no file; SignStateCorrupted if it is unreadable,
    malformed or fails its checksum (writes are atomic, so that is tampering or disk trouble).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignStateCorrupted(f"cannot read sign state {path}: {exc}") from exc
    try:
        return _state_from_json(json.loads(raw))
    except (ValueError, TypeError, KeyError, EncodeError) as exc:
        raise SignStateCorrupted(
            f"sign state {path} is unreadable ({exc}); refusing to sign without knowing what "
            "this validator signed last") from exc


def _state_from_json(doc: Any) -> SignState:
    if not isinstance(doc, dict) or sorted(set(doc) - {"recent"}) != sorted(_FIELDS):
        raise ValueError(f"expected exactly the fields {', '.join(_FIELDS)} (and recent)")
    numbers = [doc[k] for k in ("height", "round", "step")]
    if any(type(n) is not int for n in numbers):
        raise ValueError("height, round and step must be integers")
    recent = doc.get("recent", [])
    if not isinstance(recent, list) or len(recent) > MAX_RECENT:
        raise ValueError(f"recent must be a list of at most {MAX_RECENT} signatures")
    state = SignState(height=numbers[0], round=numbers[1], step=numbers[2],
                      sign_bytes=bytes.fromhex(doc["sign_bytes"]),
                      signature=bytes.fromhex(doc["signature"]),
                      recent=tuple(_signed_step(item) for item in recent))
    if bytes.fromhex(doc["checksum"]) != _checksum(state):
        raise ValueError("checksum does not match the contents")
    return state


def _signed_step(item: Any) -> SignedStep:
    if not isinstance(item, dict) or sorted(item) != ["round", "sign_bytes", "signature", "step"]:
        raise ValueError("a recent signature has round, step, sign_bytes and signature")
    if type(item["round"]) is not int or type(item["step"]) is not int:
        raise ValueError("round and step of a recent signature must be integers")
    return SignedStep(round=item["round"], step=item["step"],
                      sign_bytes=bytes.fromhex(item["sign_bytes"]),
                      signature=bytes.fromhex(item["signature"]))


def _checksum(state: SignState) -> bytes:
    """SHA-256 of the canonical encoding (EncodeError for out-of-range fields)."""
    return sha256(encode(state))


# --- the signer ---------------------------------------------------------------


class FileSigner:
    """Signs votes and proposals with `key` for `chain_id`, remembering each in `state_path`.

    A missing state file counts as the zero state; `check_double_sign_risk` is what
    refuses to start a validator whose chain shows signatures the file does not.
    """

    def __init__(self, key: SigningKey, chain_id: str, state_path: Path) -> None:
        self.address = address_from_public_key(key.public_key)
        self._key = key
        self._chain_id = chain_id
        self._path = state_path
        self._state = load_sign_state(state_path) or ZERO_SIGN_STATE
        self._lock = threading.Lock()

    @property
    def state(self) -> SignState:
        """The last signed state (as on disk)."""
        return self._state

    def sign_vote(self, vote: Vote) -> SignedVote:
        """`vote` signed, unless it could conflict with an earlier signature."""
        step = STEP_OF_VOTE.get(vote.vote_type)
        if step is None:
            raise ValueError(f"unknown vote type {vote.vote_type}")
        self._check_signer(vote.validator)
        digest = vote_signing_bytes(self._chain_id, vote)
        return SignedVote(vote=vote, signature=self._sign(vote.height, vote.round, step, digest))

    def sign_proposal(self, proposal: Proposal) -> SignedProposal:
        """`proposal` signed, unless it could conflict with an earlier signature."""
        self._check_signer(proposal.proposer)
        digest = proposal_signing_bytes(self._chain_id, proposal)
        signature = self._sign(proposal.height, proposal.round, STEP_PROPOSE, digest)
        return SignedProposal(proposal=proposal, signature=signature)

    def _check_signer(self, address: bytes) -> None:
        if address != self.address:
            raise CryptoError(f"signing key does not match the signer named in the request: "
                              f"expected {address.hex()}, got {self.address.hex()}")

    def _sign(self, height: int, round_: int, step: int, digest: bytes) -> bytes:
        """The signature of `digest` at (height, round, step), persisted before it returns."""
        with self._lock:
            last = self._state
            signature = decide_signature(last, height, round_, step, digest)
            if signature is not None:
                return signature
            signature = self._key.sign(digest)
            new = SignState(height=height, round=round_, step=step, sign_bytes=digest,
                            signature=signature, recent=_recent_after(last, height))
            save_sign_state(self._path, new)
            self._state = new
            return signature


def _recent_after(last: SignState, height: int) -> tuple[SignedStep, ...]:
    """The signatures of `height` to keep once a new one at `height` is signed."""
    if last.height != height or not last.signature:
        return ()
    entry = SignedStep(round=last.round, step=last.step, sign_bytes=last.sign_bytes,
                       signature=last.signature)
    return (*last.recent, entry)[-MAX_RECENT:]


def decide_signature(last: SignState, height: int, round_: int, step: int,
                     digest: bytes) -> bytes | None:
    """The rule: the stored signature for a repeat of the last request or of an earlier
    one of the same height, None when the request is past the last one (sign it),
    DoubleSignRefused otherwise.
    """
    request, signed = (height, round_, step), (last.height, last.round, last.step)
    if request > signed:
        return None
    if request < signed:
        if height == last.height:
            for earlier in last.recent:
                if (earlier.round, earlier.step, earlier.sign_bytes) == (round_, step, digest):
                    return earlier.signature
        raise DoubleSignRefused(
            f"refusing to sign at height {height} round {round_} step {step}: already signed "
            f"height {last.height} round {last.round} step {last.step}")
    if digest == last.sign_bytes:
        return last.signature
    raise DoubleSignRefused(
        f"refusing to sign different data at height {height} round {round_} step {step}: "
        f"signed {last.sign_bytes.hex()[:16]} there, asked for {digest.hex()[:16]}")


# --- start-up check -----------------------------------------------------------


def check_double_sign_risk(sign_state: SignState | None, store_height: int,
                           own_signed_heights: Iterable[int]) -> None:
    """Raise SignStateBehind when the chain shows this validator signed past its sign state.

    That happens when the state file is lost (data wiped, moved to a new machine)
    while the chain already holds blocks: signing from scratch could sign twice.
    """
    if sign_state is None:
        if store_height > 0:
            raise SignStateBehind(
                f"no sign state file but the store is at height {store_height}: this validator "
                "may have signed there already. Restore the sign state file from the old "
                f"machine, or wait until the chain is past what it signed and start with "
                f"{SKIP_FLAG}")
        return
    newer = [h for h in own_signed_heights if h > sign_state.height]
    if newer:
        raise SignStateBehind(
            f"the chain holds this validator's signature at height {max(newer)}, but its sign "
            f"state says height {sign_state.height}: the sign state file is stale (restored "
            "from a backup, or from another machine?). Signing now could sign twice; restore "
            f"the newest sign state, or start with {SKIP_FLAG} once the chain is past it")


def own_signed_heights(store: BlockStore, address: bytes, last_n: int = 100) -> list[int]:
    """The heights among the store's last `last_n` whose commit holds `address`'s signature."""
    head = store.head()
    if head is None:
        return []
    found = []
    for height in range(max(1, head.height - last_n + 1), head.height + 1):
        commit = store.get_commit(height)
        if commit is not None and any(s.validator == address for s in commit.signatures):
            found.append(height)
    return found
