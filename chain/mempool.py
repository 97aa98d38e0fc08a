"""The mempool: verified, signed txs waiting for a block, queued per sender by nonce.

Admission (`add`, `add_many`), in this order, each failure a typed `MempoolError`
(or the `DecodeError` of malformed bytes):

1. encoded size <= `max_tx_bytes` (TxTooLarge), canonical `SignedTx` (DecodeError),
   the node's chain id (MempoolError "wrong chain id"), fee >= the network
   minimum (FeeBelowMinimum);
2. a valid signature (InvalidTxSignature); `add_many` checks all of them in one
   parallel batch on the SignatureVerifier's threads;
3. not already pending (TxAlreadyKnown);
4. nonce >= the sender's committed nonce (NonceTooLow) and
   <= its pending nonce + `max_nonce_gap` (NonceGapTooLarge);
5. a pending tx with the same (sender, nonce) is replaced only by a strictly
   higher fee (FeeTooLow);
6. the committed GPU balance covers the fees of all the sender's pending txs
   (MempoolError "cannot pay fees"); at most `max_per_account` pending per sender;
7. when the pool is full (count or bytes) the tx evicts the cheapest txs of
   other senders, only if it pays strictly more than each; a sender only ever
   loses its highest-nonce tx, so no queue gets a gap (MempoolFull otherwise).

State is read through `get_account` (the COMMITTED account), refreshed for a
sender on each of its adds and for touched senders in `update_after_block`.
Reaping never removes txs: the block's commit does, through `update_after_block`.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from chain import codec
from chain.address import address_from_public_key
from chain.crypto import SignatureVerifier
from chain.errors import (
    ChainError,
    FeeBelowMinimum,
    FeeTooLow,
    InvalidTxSignature,
    MempoolError,
    MempoolFull,
    NonceGapTooLarge,
    NonceTooLow,
    TxAlreadyKnown,
    TxTooLarge,
)
from chain.hashing import sha256
from chain.records import Account, SignedTx
from chain.signing import tx_verify_item
from chain.types import Address, Hash32

__all__ = ["DEFAULT_LIMITS", "Mempool", "MempoolLimits", "PendingTx"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MempoolLimits:
    """Bounds on what the mempool holds (a node operator's config, not consensus)."""

    max_txs: int = 10_000
    max_bytes: int = 32 * MIB
    max_tx_bytes: int = 64 * 1024
    max_per_account: int = 256
    max_nonce_gap: int = 64

    def __post_init__(self) -> None:
        """Reject limits that could never admit a tx."""
        for name in ("max_txs", "max_bytes", "max_tx_bytes", "max_per_account"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_nonce_gap < 0:
            raise ValueError(f"max_nonce_gap must be >= 0, got {self.max_nonce_gap}")
        if self.max_tx_bytes > self.max_bytes:
            raise ValueError(
                f"max_tx_bytes must be <= max_bytes ({self.max_bytes}), got {self.max_tx_bytes}"
            )


DEFAULT_LIMITS = MempoolLimits()


@dataclass(frozen=True, slots=True)
class PendingTx:
    """A pending tx with what the pool derived from it on arrival.

    `hash` is the tx id (SHA-256 of `raw`, the canonical encoding of `stx`), so
    `raw` can be gossiped or put in a block without re-encoding.
    """

    hash: Hash32
    raw: bytes
    stx: SignedTx
    sender: Address
    nonce: int
    fee: int

    @property
    def size(self) -> int:
        """Encoded size in bytes."""
        return len(self.raw)

    @classmethod
    def of(cls, stx: SignedTx) -> PendingTx:
        """The pending form of a signed tx (encodes and hashes it once)."""
        raw = codec.encode(stx)
        return cls(hash=sha256(raw), raw=raw, stx=stx,
                   sender=address_from_public_key(stx.tx.sender), nonce=stx.tx.nonce,
                   fee=stx.tx.fee)


class _Queue:
    """One sender's pending txs by nonce, and the committed account they build on."""

    __slots__ = ("base", "fee_total", "heap_tail", "nonces", "ready_end", "txs")

    def __init__(self, base: int) -> None:
        self.base = base  # committed nonce
        self.ready_end = base  # first nonce missing from the run starting at `base`
        self.txs: dict[int, PendingTx] = {}
        self.nonces: list[int] = []  # sorted keys of `txs`
        self.fee_total = 0
        self.heap_tail = b""  # hash of the tail last pushed on the eviction heap


class Mempool:
    """A long-running service holding txs that are valid against committed state.

    Not thread-safe: the node calls it from one asyncio thread; only signature
    checks run elsewhere (on `verifier`'s threads, blocking the caller).
    """

    def __init__(
        self,
        chain_id: str,
        get_account: Callable[[bytes], Account],
        verifier: SignatureVerifier,
        limits: MempoolLimits = DEFAULT_LIMITS,
        min_fee: int = 0,
    ) -> None:
        """A pool for `chain_id`; `get_account` returns the committed account of an address.

        `min_fee` is the network's minimum fee: a tx offering less is never includable.
        """
        self.chain_id = chain_id
        self.min_fee = min_fee
        self.limits = limits
        self._chain_id_bytes = chain_id.encode("utf-8")
        self._get_account = get_account
        self._verifier = verifier
        self._by_hash: dict[bytes, PendingTx] = {}
        self._queues: dict[bytes, _Queue] = {}
        self._bytes = 0
        # Min-heap of (fee, hash, tx) over each sender's highest-nonce tx: the eviction
        # candidates. Entries go stale lazily; `_is_tail` tells the live ones.
        self._tails: list[tuple[int, bytes, PendingTx]] = []

    # --- admission ------------------------------------------------------------

    def add(self, raw: bytes) -> Hash32:
        """Admit one encoded SignedTx; return its hash or raise why it was refused."""
        pending = self._prepare(raw)
        if pending.hash not in self._by_hash:
            (valid,) = self._verifier.verify_many([tx_verify_item(pending.stx, pending.raw)])
            self._validate_signature(pending, valid)
        self._admit(pending)
        return pending.hash

    def add_many(self, raws: Sequence[bytes]) -> list[Hash32 | ChainError]:
        """Admit encoded SignedTxs in order; one hash or error per input, never raising.

        Every new signature is checked in ONE `verify_many` batch before any tx is
        admitted, so a batch costs one round trip to the verifier's threads.
        Errors are `MempoolError`s, or the `DecodeError` of malformed bytes.
        """
        results: list[Hash32 | ChainError] = []
        prepared: list[tuple[int, PendingTx]] = []
        for index, raw in enumerate(raws):
            try:
                pending = self._prepare(raw)
            except ChainError as exc:
                results.append(exc)
                continue
            prepared.append((index, pending))
            results.append(pending.hash)  # replaced below if admission fails
        verdicts = self._verify_batch([pending for _, pending in prepared])
        for index, pending in prepared:
            try:
                self._validate_signature(pending, verdicts[pending.hash])
                self._admit(pending)
            except MempoolError as exc:
                results[index] = exc
        return results

    def _verify_batch(self, batch: list[PendingTx]) -> dict[bytes, bool]:
        """Signature verdict per tx hash; txs already pending were verified on admission."""
        verdicts: dict[bytes, bool] = {}
        to_check: list[PendingTx] = []
        for pending in batch:
            if pending.hash in verdicts:
                continue
            if pending.hash in self._by_hash:
                verdicts[pending.hash] = True
            else:
                verdicts[pending.hash] = False
                to_check.append(pending)
        if to_check:
            checks = self._verifier.verify_many([tx_verify_item(p.stx, p.raw) for p in to_check])
            for pending, valid in zip(to_check, checks, strict=True):
                verdicts[pending.hash] = valid
        return verdicts

    def _prepare(self, raw: bytes) -> PendingTx:
        """Stateless checks: size, canonical decoding, chain id."""
        if isinstance(raw, bytearray | memoryview):
            raw = bytes(raw)
        if isinstance(raw, bytes) and len(raw) > self.limits.max_tx_bytes:
            raise TxTooLarge(
                f"tx too large: expected at most {self.limits.max_tx_bytes} bytes, got {len(raw)}"
            )
        stx = codec.decode(SignedTx, raw)
        tx = stx.tx
        if tx.chain_id != self._chain_id_bytes:
            got = tx.chain_id.decode("utf-8", "replace")
            raise MempoolError(f"wrong chain id: expected {self.chain_id!r}, got {got!r}")
        if tx.fee < self.min_fee:
            raise FeeBelowMinimum(f"fee below the network minimum: expected >= {self.min_fee}, "
                                  f"got {tx.fee}")
        return PendingTx(
            hash=sha256(raw),
            raw=raw,
            stx=stx,
            sender=address_from_public_key(tx.sender),
            nonce=tx.nonce,
            fee=tx.fee,
        )

    @staticmethod
    def _validate_signature(pending: PendingTx, valid: bool) -> None:
        if not valid:
            raise InvalidTxSignature(
                f"invalid tx signature: expected a signature by sender key "
                f"{pending.stx.tx.sender.hex()}, got {pending.stx.signature.hex()[:16]}..."
            )

    def _admit(self, pending: PendingTx) -> None:
        """Stateful checks against the sender's committed account, then insert."""
        if pending.hash in self._by_hash:
            raise TxAlreadyKnown(f"tx already known: {pending.hash.hex()}")
        account = self._get_account(pending.sender)
        queue = self._queues.get(pending.sender)
        if queue is not None:
            self._sync(queue, account)
            queue = self._queues.get(pending.sender)
        replaced = self._validate_nonce_and_fee(pending, queue, account)
        for victim in self._plan_room(pending, replaced):
            self._remove(victim)
        if replaced is not None:
            assert queue is not None  # a replaced tx lives in its sender's queue
            self._replace(queue, replaced, pending)
        else:
            self._insert(queue, pending, account)

    def _validate_nonce_and_fee(
        self, pending: PendingTx, queue: _Queue | None, account: Account
    ) -> PendingTx | None:
        """Raise why `pending` can't join its sender's queue; return the tx it replaces."""
        limits = self.limits
        if pending.nonce < account.nonce:
            raise NonceTooLow(f"nonce too low: expected >= {account.nonce}, got {pending.nonce}")
        next_nonce = queue.ready_end if queue is not None else account.nonce
        if pending.nonce > next_nonce + limits.max_nonce_gap:
            raise NonceGapTooLarge(
                f"nonce gap too large: expected <= {next_nonce + limits.max_nonce_gap} "
                f"(next nonce {next_nonce} + gap {limits.max_nonce_gap}), got {pending.nonce}"
            )
        replaced = queue.txs.get(pending.nonce) if queue is not None else None
        if replaced is not None and pending.fee <= replaced.fee:
            raise FeeTooLow(
                f"replacement fee too low: expected > {replaced.fee}, got {pending.fee}"
            )
        fee_total = pending.fee
        if queue is not None:
            fee_total += queue.fee_total - (replaced.fee if replaced is not None else 0)
        if fee_total > account.gpu:
            raise MempoolError(
                f"cannot pay fees: expected pending fees <= balance {account.gpu}, got {fee_total}"
            )
        if replaced is None and queue is not None and len(queue.txs) >= limits.max_per_account:
            raise MempoolError(
                f"too many pending txs from sender: expected < {limits.max_per_account}, "
                f"got {len(queue.txs)}"
            )
        return replaced

    # --- eviction when full ---------------------------------------------------

    def _plan_room(self, pending: PendingTx, replaced: PendingTx | None) -> list[PendingTx]:
        """The txs to evict so `pending` fits the count and byte limits (or MempoolFull)."""
        over_count = len(self._by_hash) + (replaced is None) - self.limits.max_txs
        over_bytes = (
            self._bytes + pending.size - (replaced.size if replaced else 0) - self.limits.max_bytes
        )
        if over_count <= 0 and over_bytes <= 0:
            return []
        return self._plan_evictions(pending, over_count, over_bytes)

    def _plan_evictions(
        self, pending: PendingTx, need_count: int, need_bytes: int
    ) -> list[PendingTx]:
        """Cheapest tails of other senders, one at a time, each exposing its sender's next.

        Nothing is removed here, so a refusal leaves the pool as it was.
        """
        victims: list[PendingTx] = []
        planned: set[bytes] = set()
        held: list[tuple[int, bytes, PendingTx]] = []
        exposed: list[tuple[int, bytes, PendingTx]] = []
        taken: dict[bytes, int] = {}
        try:
            while need_count > 0 or need_bytes > 0:
                victim = self._next_cheapest(pending.sender, planned, held, exposed)
                if victim is None or victim.fee >= pending.fee:
                    raise MempoolFull(self._full_message(pending, victim))
                victims.append(victim)
                planned.add(victim.hash)
                need_count -= 1
                need_bytes -= victim.size
                queue = self._queues[victim.sender]
                depth = taken.get(victim.sender, 0) + 1
                taken[victim.sender] = depth
                if depth < len(queue.nonces):
                    below = queue.txs[queue.nonces[-1 - depth]]
                    heapq.heappush(exposed, (below.fee, below.hash, below))
        finally:
            for entry in held:
                heapq.heappush(self._tails, entry)
        return victims

    def _next_cheapest(
        self,
        sender: bytes,
        planned: set[bytes],
        held: list[tuple[int, bytes, PendingTx]],
        exposed: list[tuple[int, bytes, PendingTx]],
    ) -> PendingTx | None:
        """The cheapest eviction candidate of another sender not yet planned, or None."""
        tails = self._tails
        while tails:
            _, tx_hash, candidate = tails[0]
            if not self._is_tail(candidate):
                heapq.heappop(tails)
            elif candidate.sender == sender or tx_hash in planned:
                held.append(heapq.heappop(tails))
            else:
                break
        if exposed and (not tails or exposed[0][:2] < tails[0][:2]):
            return heapq.heappop(exposed)[2]
        if not tails:
            return None
        entry = heapq.heappop(tails)
        held.append(entry)
        return entry[2]

    def _full_message(self, pending: PendingTx, cheapest: PendingTx | None) -> str:
        limits = self.limits
        state = (
            f"mempool full ({len(self._by_hash)}/{limits.max_txs} txs, "
            f"{self._bytes}/{limits.max_bytes} bytes)"
        )
        if cheapest is None:
            return f"{state}: no tx of another sender to evict for fee {pending.fee}"
        return f"{state}: expected a fee above {cheapest.fee} to evict, got {pending.fee}"

    def _is_tail(self, pending: PendingTx) -> bool:
        """True iff `pending` is still pooled and its sender's highest-nonce tx."""
        if self._by_hash.get(pending.hash) is not pending:
            return False
        return self._queues[pending.sender].nonces[-1] == pending.nonce

    def lowest_fee(self) -> int | None:
        """The fee of the cheapest evictable tx (what a newcomer must beat), or None if empty."""
        tails = self._tails
        while tails and not self._is_tail(tails[0][2]):
            heapq.heappop(tails)
        return tails[0][0] if tails else None

    def _note_tail(self, queue: _Queue) -> None:
        """Push the sender's tail on the eviction heap if it changed."""
        tail = queue.txs[queue.nonces[-1]]
        if tail.hash == queue.heap_tail:
            return
        queue.heap_tail = tail.hash
        heapq.heappush(self._tails, (tail.fee, tail.hash, tail))
        if len(self._tails) > 2 * len(self._queues) + 1024:
            self._rebuild_tails()

    def _rebuild_tails(self) -> None:
        """Drop stale heap entries: one entry per sender's current tail."""
        self._tails = []
        for queue in self._queues.values():
            tail = queue.txs[queue.nonces[-1]]
            queue.heap_tail = tail.hash
            self._tails.append((tail.fee, tail.hash, tail))
        heapq.heapify(self._tails)

    # --- queue mutation -------------------------------------------------------

    def _insert(self, queue: _Queue | None, pending: PendingTx, account: Account) -> None:
        if queue is None:
            queue = _Queue(account.nonce)
            self._queues[pending.sender] = queue
        queue.txs[pending.nonce] = pending
        insort(queue.nonces, pending.nonce)
        queue.fee_total += pending.fee
        self._by_hash[pending.hash] = pending
        self._bytes += pending.size
        if pending.nonce == queue.ready_end:
            _extend_run(queue)
        self._note_tail(queue)

    def _replace(self, queue: _Queue, old: PendingTx, new: PendingTx) -> None:
        del self._by_hash[old.hash]
        self._by_hash[new.hash] = new
        queue.txs[new.nonce] = new
        queue.fee_total += new.fee - old.fee
        self._bytes += new.size - old.size
        self._note_tail(queue)

    def _remove(self, pending: PendingTx) -> None:
        del self._by_hash[pending.hash]
        queue = self._queues[pending.sender]
        del queue.txs[pending.nonce]
        del queue.nonces[bisect_left(queue.nonces, pending.nonce)]
        queue.fee_total -= pending.fee
        self._bytes -= pending.size
        if queue.base <= pending.nonce < queue.ready_end:
            queue.ready_end = pending.nonce
        if queue.txs:
            self._note_tail(queue)
        else:
            del self._queues[pending.sender]

    def _sync(self, queue: _Queue, account: Account) -> list[Hash32]:
        """Rebase a queue on the committed account; evict what is stale. Returns their hashes."""
        evicted: list[Hash32] = []
        if account.nonce != queue.base:
            old_base, queue.base = queue.base, account.nonce
            for nonce in queue.nonces[: bisect_left(queue.nonces, account.nonce)]:
                evicted.append(queue.txs[nonce].hash)
                self._remove(queue.txs[nonce])
            if account.nonce < old_base or queue.ready_end < account.nonce:
                queue.ready_end = account.nonce
            _extend_run(queue)
        # Fees no longer payable: drop from the highest nonce down, so no gap opens.
        while queue.txs and queue.fee_total > account.gpu:
            tail = queue.txs[queue.nonces[-1]]
            evicted.append(tail.hash)
            self._remove(tail)
        return evicted

    # --- blocks ---------------------------------------------------------------

    def reap_pending(self, max_txs: int, max_bytes: int) -> list[PendingTx]:
        """Txs ready to execute, in an executable order, within `max_txs` and `max_bytes`.

        Each sender contributes only the gap-free run starting at its committed
        nonce, in nonce order. Across senders the highest fee among the current
        heads goes first (ties by tx hash, ascending), like geth's price heap. A
        tx that would overflow `max_bytes` ends its sender's run for this block.
        Byte counts are of the encoded txs. Nothing is removed from the pool.
        """
        heads = [
            (-head.fee, head.hash, head)
            for queue in self._queues.values()
            if (head := queue.txs.get(queue.base)) is not None
        ]
        heapq.heapify(heads)
        reaped: list[PendingTx] = []
        used = 0
        while heads and len(reaped) < max_txs:
            _, _, pending = heapq.heappop(heads)
            if used + pending.size > max_bytes:
                continue
            reaped.append(pending)
            used += pending.size
            successor = self._queues[pending.sender].txs.get(pending.nonce + 1)
            if successor is not None:
                heapq.heappush(heads, (-successor.fee, successor.hash, successor))
        return reaped

    def reap(self, max_txs: int, max_bytes: int) -> list[SignedTx]:
        """The signed txs of `reap_pending` (same order and limits)."""
        return [pending.stx for pending in self.reap_pending(max_txs, max_bytes)]

    def update_after_block(
        self, committed_txs: Iterable[bytes], touched_senders: Iterable[bytes]
    ) -> list[Hash32]:
        """Forget the block's txs, then re-check every touched sender's queue.

        `committed_txs` are tx hashes; `touched_senders` are addresses whose
        committed account changed (senders of committed txs are re-checked too).
        A re-check drops txs below the new committed nonce and, from the highest
        nonce down, txs whose fees the new balance no longer covers. Returns the
        hashes of txs dropped as stale (not the committed ones).
        """
        senders = set(touched_senders)
        for tx_hash in committed_txs:
            pending = self._by_hash.get(tx_hash)
            if pending is not None:
                self._remove(pending)
                senders.add(pending.sender)
        evicted: list[Hash32] = []
        for sender in senders:
            queue = self._queues.get(sender)
            if queue is not None:
                evicted.extend(self._sync(queue, self._get_account(sender)))
        return evicted

    # --- queries --------------------------------------------------------------

    def __len__(self) -> int:
        """Number of pending txs."""
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        """True iff the tx with this hash is pending."""
        return tx_hash in self._by_hash

    @property
    def size_bytes(self) -> int:
        """Total encoded size of the pending txs."""
        return self._bytes

    def contains(self, tx_hash: bytes) -> bool:
        """True iff the tx with this hash is pending."""
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> SignedTx | None:
        """The pending tx with this hash, or None."""
        pending = self._by_hash.get(tx_hash)
        return pending.stx if pending is not None else None

    def get_pending(self, tx_hash: bytes) -> PendingTx | None:
        """The pending entry (raw bytes, sender, ...) with this hash, or None."""
        return self._by_hash.get(tx_hash)

    def is_verified(self, tx_hash: bytes) -> bool:
        """True iff a tx with this hash passed signature verification on admission.

        The hash is SHA-256 of the whole encoded SignedTx (chain id, sender key,
        body AND signature), so a block tx with the same hash is byte-identical
        to the verified one and block execution may skip re-verifying it. Only
        pending txs count: the answer turns False once the tx leaves the pool.
        """
        return tx_hash in self._by_hash

    def pending_nonce(self, address: bytes) -> int:
        """The next nonce a wallet should use: committed nonce + the gap-free pending run."""
        queue = self._queues.get(address)
        if queue is not None:
            return queue.ready_end
        return self._get_account(address).nonce

    def pending_for(self, address: bytes) -> list[SignedTx]:
        """The sender's pending txs in nonce order (including any queued past a gap)."""
        queue = self._queues.get(address)
        if queue is None:
            return []
        return [queue.txs[nonce].stx for nonce in queue.nonces]


def _extend_run(queue: _Queue) -> None:
    """Advance `ready_end` over the pending nonces that follow it."""
    while queue.ready_end in queue.txs:
        queue.ready_end += 1
