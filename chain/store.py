"""The block store on LevelDB (plyvel): blocks, commits, tx index, state, meta.

Key spaces by prefix:
  b"B" height(8, big-endian) → Block          b"H" block hash → height(8)
  b"C" height(8) → Commit that finalised it   b"T" tx hash → TxLocation
  b"S" state key → state record               b"M" name → meta record
A block commits in ONE `write_batch(transaction=True, sync=True)` together with
its state writes, indexes and the head pointer, so a crash at any instant leaves
the store at the previous or the next block, never between. Any LevelDB error
(full disk, I/O) becomes `StoreError`; the store then refuses further writes so
the node stops instead of half-committing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Annotated

import plyvel

from chain.codec import HASH, U64, Record, decode, encode, record
from chain.errors import DecodeError, StoreCorrupted, StoreError
from chain.records import Block, Commit, TxLocation, block_hash

P_BLOCK, P_HASH, P_COMMIT, P_TX, P_STATE, P_META = b"B", b"H", b"C", b"T", b"S", b"M"
HEAD_KEY = P_META + b"head"
RECENT_BLOCKS_CACHED = 16
DEFAULT_CACHE_BYTES = 64 << 20
GENESIS_KEY = P_META + b"genesis"


@record
class Head(Record):
    """The last committed block and the state it left: what the next header builds on."""

    height: Annotated[int, U64]
    block_hash: Annotated[bytes, HASH]
    time_ms: Annotated[int, U64]
    app_hash: Annotated[bytes, HASH]
    results_hash: Annotated[bytes, HASH]


@record
class GenesisMark(Record):
    """The genesis this data directory was initialised with."""

    genesis_hash: Annotated[bytes, HASH]
    app_hash: Annotated[bytes, HASH]


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


class BlockStore:
    """LevelDB-backed chain storage; the only writer is `commit_block`."""

    def __init__(self, path: str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        try:
            # Bloom filters spare a disk read for absent keys (new accounts); the
            # block cache keeps hot accounts decoded-ready in memory.
            self._db = plyvel.DB(path, create_if_missing=True, paranoid_checks=True,
                                 lru_cache_size=cache_bytes, bloom_filter_bits=10)
        except plyvel.Error as exc:
            raise StoreError(f"cannot open store at {path}: {exc}") from exc
        self._failed: str | None = None
        # Committed blocks never change (finality is instant), so decoded recent
        # blocks can be served from memory: wallets poll txs of the newest blocks.
        self._recent_blocks: OrderedDict[int, Block] = OrderedDict()

    def close(self) -> None:
        """Close the database (idempotent)."""
        if not self._db.closed:
            self._db.close()

    # --- reads ----------------------------------------------------------------

    def get_state(self, key: bytes) -> bytes | None:
        """The committed state value at `key`, or None."""
        return self._get(P_STATE + key)

    def iter_state(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed state (key, value) pairs whose key starts with `prefix`, in key order."""
        try:
            with self._db.iterator(prefix=P_STATE + prefix) as entries:
                for key, value in entries:
                    yield key[len(P_STATE):], value
        except (plyvel.Error, RuntimeError) as exc:  # RuntimeError: the DB is closed
            raise StoreError(f"block store read failed: {_describe(exc)}") from exc

    def head(self) -> Head | None:
        """The head pointer, or None before genesis."""
        return self._get_record(HEAD_KEY, Head)

    def genesis_mark(self) -> GenesisMark | None:
        """The genesis this store was created with, or None if uninitialised."""
        return self._get_record(GENESIS_KEY, GenesisMark)

    def get_block(self, height: int) -> Block | None:
        """The block at `height`, or None."""
        block = self._recent_blocks.get(height)
        if block is None:
            block = self._get_record(P_BLOCK + _h(height), Block)
            if block is not None:
                self._remember_block(height, block)
        return block

    def _remember_block(self, height: int, block: Block) -> None:
        self._recent_blocks[height] = block
        while len(self._recent_blocks) > RECENT_BLOCKS_CACHED:
            self._recent_blocks.popitem(last=False)

    def get_block_raw(self, height: int) -> bytes | None:
        """The encoded block at `height`, or None."""
        return self._get(P_BLOCK + _h(height))

    def get_height_by_hash(self, block_hash_: bytes) -> int | None:
        """Height of the block with this hash, or None."""
        raw = self._get(P_HASH + block_hash_)
        if raw is None:
            return None
        if len(raw) != 8:
            raise StoreCorrupted(f"height index entry of {block_hash_.hex()} is {len(raw)} bytes")
        return int.from_bytes(raw, "big")

    def get_commit(self, height: int) -> Commit | None:
        """The commit that finalised the block at `height`, or None."""
        return self._get_record(P_COMMIT + _h(height), Commit)

    def get_tx_location(self, tx_hash_: bytes) -> TxLocation | None:
        """Where an included tx lives and its receipt, or None."""
        return self._get_record(P_TX + tx_hash_, TxLocation)

    # --- writes -------------------------------------------------------------

    def init_genesis(self, mark: GenesisMark, writes: dict[bytes, bytes], head: Head) -> None:
        """Write the genesis state, its mark and the head at height 0 in one batch."""
        self._check_writable()
        if self.genesis_mark() is not None:
            raise StoreError("store is already initialised from a genesis; refusing to reset it")
        self._write(
            [(GENESIS_KEY, encode(mark)), (HEAD_KEY, encode(head))],
            writes,
        )

    def commit_block(
        self,
        block: Block,
        commit: Commit,
        locations: Iterable[tuple[bytes, TxLocation]],
        writes: dict[bytes, bytes],
        head: Head,
        block_bytes: bytes | None = None,
    ) -> None:
        """Commit a block atomically: block, commit, indexes, state writes and head.

        `block_bytes`, when given, must be `encode(block)` (a caller that assembled
        it from already-encoded txs saves re-encoding them).
        """
        height = _h(block.header.height)
        items = [
            (P_BLOCK + height, block_bytes if block_bytes is not None else encode(block)),
            (P_HASH + block_hash(block), height),
            (P_COMMIT + height, encode(commit)),
            (HEAD_KEY, encode(head)),
        ]
        items.extend((P_TX + h, encode(loc)) for h, loc in locations)
        self._write(items, writes)
        self._remember_block(block.header.height, block)

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise StoreError(f"store is stopped after an earlier write failure: {self._failed}")

    def _write(self, items: list[tuple[bytes, bytes]], writes: dict[bytes, bytes]) -> None:
        self._check_writable()
        try:
            with self._db.write_batch(transaction=True, sync=True) as batch:
                for key, value in items:
                    batch.put(key, value)
                for key, value in writes.items():
                    if value:
                        batch.put(P_STATE + key, value)
                    else:
                        batch.delete(P_STATE + key)
        except (plyvel.Error, RuntimeError) as exc:  # RuntimeError: the DB is closed
            self._failed = _describe(exc)
            raise StoreError(
                f"block store write failed, nothing was committed: {_describe(exc)}") from exc

    # --- helpers -----------------------------------------------------------

    def _get(self, key: bytes) -> bytes | None:
        try:
            return self._db.get(key)
        except (plyvel.Error, RuntimeError) as exc:  # RuntimeError: the DB is closed
            raise StoreError(f"block store read failed: {_describe(exc)}") from exc

    def _get_record(self, key: bytes, cls: type) -> Record | None:
        raw = self._get(key)
        if raw is None:
            return None
        try:
            return decode(cls, raw)
        except DecodeError as exc:
            raise StoreCorrupted(f"store entry {key[:40]!r} is corrupt: {exc}") from exc


def _describe(exc: Exception) -> str:
    """plyvel puts LevelDB's status in bytes; show it as text."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
