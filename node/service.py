"""The Node service: store, mempool, block production and RPC wired together.

A node opens its store (initialising it from genesis the first time, refusing a
genesis other than the one it was created with), serves JSON-RPC, and — when it
holds the key of the only validator — produces a block every `block_time_ms`:
reap the mempool, build and apply the block, sign its commit, and commit block,
commit, receipts, state and head in one synced store batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from chain.address import address_from_public_key, encode_address
from chain.crypto import SignatureVerifier, SigningKey
from chain.errors import StoreError
from chain.mempool import Mempool, MempoolLimits, PendingTx
from chain.records import (
    EMPTY_ACCOUNT,
    Account,
    Block,
    Commit,
    TxLocation,
    block_hash,
    encode_block,
)
from chain.state import ACCOUNT_PREFIX, State
from chain.store import BlockStore, Head
from consensus.commit import EMPTY_COMMIT, sign_commit
from consensus.producer import BuiltBlock, build_block, next_block_time
from genesis.document import Genesis, genesis_hash
from genesis.state import genesis_head, genesis_writes
from node.admission import TxAdmission
from node.config import HomePaths, NodeConfig
from node.rpc.server import RpcLimits, RpcServer

log = logging.getLogger("gannet.node")
MAX_REJECTED_REMEMBERED = 10_000
ACCOUNTS_CACHED = 200_000


class NodeError(Exception):
    """The node cannot start or must stop; the message tells the operator why."""


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """What the producer hands to listeners after a commit."""

    block: Block
    block_hash: bytes
    head: Head
    tx_hashes: tuple[bytes, ...]
    changed: dict[bytes, object]


class Node:
    """A running Gannet node (a long-running service object)."""

    def __init__(self, paths: HomePaths, config: NodeConfig, genesis: Genesis,
                 validator_key: SigningKey | None) -> None:
        self.paths = paths
        self.config = config
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.min_fee = genesis.params.fee.min_fee
        self.validator_key = validator_key
        self.validator_address = (
            address_from_public_key(validator_key.public_key) if validator_key else None
        )
        self.store = open_store(paths, genesis, config.store.cache_mb << 20)
        self.head: Head = self.store.head()
        self.last_commit: Commit = self.store.get_commit(self.head.height) or EMPTY_COMMIT
        self.verifier = SignatureVerifier()
        self.mempool = Mempool(self.chain_id, self.committed_account, self.verifier,
                               mempool_limits(config), min_fee=self.min_fee)
        self.admission = TxAdmission(self.mempool)
        self.rejected: OrderedDict[bytes, str] = OrderedDict()
        # Committed accounts by address; only the event-loop thread touches it, and
        # `_after_commit` refreshes what each block changed before anything reads it.
        self._accounts: OrderedDict[bytes, Account] = OrderedDict()
        self.rpc: RpcServer | None = None
        self._stop = asyncio.Event()
        self._listeners: list = []

    # --- reads used by RPC and the mempool ------------------------------------

    def committed_account(self, address: bytes) -> Account:
        """The committed account at `address` (served from a bounded cache)."""
        account = self._accounts.get(address)
        if account is None:
            account = State(self.store.get_state).get_account(address)
            self._accounts[address] = account
            if len(self._accounts) > ACCOUNTS_CACHED:
                self._accounts.popitem(last=False)
        return account

    def remember_rejected(self, tx_hash_: bytes, reason: str) -> None:
        """Keep the reason a tx was dropped, for `gannet_getTransaction` (bounded)."""
        self.rejected[tx_hash_] = reason
        while len(self.rejected) > MAX_REJECTED_REMEMBERED:
            self.rejected.popitem(last=False)

    def on_commit(self, listener) -> None:
        """Call `listener(CommittedBlock)` (a coroutine function) after each commit."""
        self._listeners.append(listener)

    # --- life cycle -------------------------------------------------------------

    async def run(self) -> None:
        """Serve RPC and produce blocks until `stop()`; close everything on the way out."""
        from node.api import build_rpc  # the API depends on Node, not the reverse

        self.rpc = build_rpc(self, rpc_limits(self.config))
        try:
            await self.rpc.start()
            log.info("rpc listening url=http://%s:%d", self.config.rpc.host, self.rpc.port)
            if self.is_producer():
                await self._produce_until_stopped()
            else:
                log.warning("not producing blocks: this node does not hold the key of a "
                            "sole validator (multi-validator consensus is not built yet); "
                            "serving RPC at height=%d", self.head.height)
                await self._stop.wait()
        finally:
            await self.rpc.stop()
            self.close()

    def stop(self) -> None:
        """Ask `run` to return."""
        self._stop.set()

    def close(self) -> None:
        """Release the store and the verifier threads."""
        self.verifier.close()
        self.store.close()

    def is_producer(self) -> bool:
        """A node produces blocks iff it holds the key of the sole validator."""
        vset = State(self.store.get_state).get_validator_set().validators
        return (self.validator_address is not None and len(vset) == 1
                and vset[0].address == self.validator_address)

    # --- block production --------------------------------------------------------

    async def _produce_until_stopped(self) -> None:
        interval = self.config.consensus.block_time_ms / 1000
        log.info("producing blocks validator=%s interval_ms=%d height=%d",
                 encode_address(self.validator_address), self.config.consensus.block_time_ms,
                 self.head.height)
        while not self._stop.is_set():
            started = time.monotonic()
            await self.produce_block()
            delay = max(0.0, interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    async def produce_block(self) -> CommittedBlock:
        """Build, sign and commit the next block from the mempool."""
        limit = min(self.config.consensus.max_block_txs, self.genesis.params.block.max_block_txs)
        candidates = self.mempool.reap_pending(limit, self.genesis.params.block.max_block_bytes)
        now_ms = time.time_ns() // 1_000_000
        try:
            built, committed = await asyncio.to_thread(self._build_and_commit, candidates, now_ms)
        except StoreError as exc:
            log.error("store failure, stopping node: %s", exc)
            self.stop()
            raise NodeError(f"store failure: {exc}") from exc
        self._after_commit(built, committed)
        for listener in self._listeners:
            await listener(committed)
        return committed

    def _build_and_commit(self, candidates: list[PendingTx],
                          now_ms: int) -> tuple[BuiltBlock, CommittedBlock]:
        head = self.head
        state = State(self.store.get_state)
        built = build_block(
            state, head, self.chain_id, self.min_fee, self.validator_address,
            next_block_time(head, now_ms), self.last_commit, candidates,
            is_verified=lambda _h: True,  # every reaped tx was verified at admission
        )
        block, result = built.block, built.result
        bh = block_hash(block)
        height = block.header.height
        commit = sign_commit(self.chain_id, self.validator_key, self.validator_address,
                             height, 0, bh)
        locations = [(h, TxLocation(height=height, index=i, receipt=r))
                     for i, (h, r) in enumerate(zip(result.tx_hashes, result.receipts,
                                                    strict=True))]
        new_head = Head(height=height, block_hash=bh, time_ms=block.header.time_ms,
                        app_hash=result.app_hash, results_hash=result.results_hash)
        self.store.commit_block(block, commit, locations, result.writes, new_head,
                                block_bytes=encode_block(block, built.tx_raws))
        self.head, self.last_commit = new_head, commit
        return built, CommittedBlock(block, bh, new_head, result.tx_hashes, state.changed())

    def _after_commit(self, built: BuiltBlock, committed: CommittedBlock) -> None:
        for key, record in committed.changed.items():
            if key.startswith(ACCOUNT_PREFIX):
                self._accounts[key[len(ACCOUNT_PREFIX):]] = record or EMPTY_ACCOUNT
        for h, reason in built.rejected:
            self.remember_rejected(h, reason)
        dropped = [h for h, _ in built.rejected]
        self.mempool.update_after_block(list(committed.tx_hashes) + dropped, built.senders)
        log.info("committed block height=%d txs=%d rejected=%d hash=%s app_hash=%s",
                 committed.head.height, len(committed.tx_hashes), len(built.rejected),
                 committed.block_hash.hex()[:16], committed.head.app_hash.hex()[:16])


def open_store(paths: HomePaths, genesis: Genesis, cache_bytes: int) -> BlockStore:
    """Open the store; initialise it from `genesis`, or refuse a different genesis."""
    paths.store_dir.mkdir(parents=True, exist_ok=True)
    store = BlockStore(str(paths.store_dir), cache_bytes)
    want = genesis_hash(genesis)
    mark = store.genesis_mark()
    if mark is None:
        mark_, writes = genesis_writes(genesis)
        store.init_genesis(mark_, writes, genesis_head(genesis, mark_))
        log.info("initialised store from genesis hash=%s", want.hex())
    elif mark.genesis_hash != want:
        store.close()
        raise NodeError(
            f"genesis mismatch: the data in {paths.store_dir} was created with genesis "
            f"{mark.genesis_hash.hex()}, but {paths.genesis_file} has hash {want.hex()}")
    return store


def mempool_limits(config: NodeConfig) -> MempoolLimits:
    """Mempool limits from the node config."""
    m = config.mempool
    return MempoolLimits(max_txs=m.max_txs, max_bytes=m.max_bytes, max_tx_bytes=m.max_tx_bytes,
                         max_per_account=m.max_per_account)


def rpc_limits(config: NodeConfig) -> RpcLimits:
    """RPC abuse limits from the node config."""
    r = config.rpc
    return RpcLimits(max_body_bytes=r.max_body_bytes, max_batch=r.max_batch,
                     max_connections=r.max_connections, header_timeout_s=r.header_timeout_s,
                     body_timeout_s=r.body_timeout_s, keepalive_timeout_s=r.keepalive_timeout_s)
