"""The Node service: store, mempool, consensus, p2p and RPC wired together.

A node opens its store (initialising it from genesis the first time, refusing a
genesis other than the one it was created with), checks that its validator's
sign state cannot lead to a double sign, serves JSON-RPC, joins its peers, catches
up by block sync, and then runs the BFT engine (`node.consensus`): a validator
proposes and votes; a node without a validator key follows the votes and commits
what the validators decide. A single-validator devnet runs the same engine.
Every block commits in one synced store batch with its commit, receipts, state
and head.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields

from chain.address import address_from_public_key, encode_address
from chain.crypto import SignatureVerifier, SigningKey
from chain.errors import StoreError
from chain.mempool import Mempool, MempoolLimits
from chain.records import (
    EMPTY_ACCOUNT,
    Account,
    Block,
    Commit,
    DuplicateVoteEvidence,
    TxLocation,
    ValidatorSet,
    block_hash,
)
from chain.state import ACCOUNT_PREFIX, NEXT_VALIDATORS_KEY, State
from chain.store import BlockStore, Head
from consensus.commit import validate_commit
from consensus.context import ChainRules
from consensus.engine import Engine, TimeoutConfig
from consensus.errors import InvalidCommit, SignStateBehind, SignStateCorrupted
from consensus.evidence import EvidencePool
from consensus.privval import (
    FileSigner,
    check_double_sign_risk,
    init_sign_state,
    load_sign_state,
    own_signed_heights,
)
from consensus.proposer import proposer_of_height
from consensus.wal import WAL
from genesis.document import Genesis, genesis_hash
from genesis.state import genesis_head, genesis_writes
from node.admission import TxAdmission
from node.app import BlockLimits, ChainApp, Executed
from node.config import HomePaths, NodeConfig
from node.consensus import (
    CRASH_ENV,
    EQUIVOCATE_ENV,
    ConsensusDriver,
    CrashFault,
    EquivocationFault,
    crash_point_from_env,
)
from node.gossip import NodePeers
from node.keys import load_or_create_node_key
from node.rpc.server import RpcLimits, RpcServer
from node.verifier import start_node_verifier
from p2p.messages import EvidenceMsg, tx_batches
from p2p.switch import Switch, SwitchConfig
from p2p.sync import BlockSyncer, SyncRejected

log = logging.getLogger("gannet.node")
MAX_REJECTED_REMEMBERED = 10_000
ACCOUNTS_CACHED = 200_000
PEER_WAIT_S = 2.0


class NodeError(Exception):
    """The node cannot start or must stop; the message tells the operator why."""


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """What the node hands to listeners after a commit."""

    block: Block
    block_hash: bytes
    head: Head
    tx_hashes: tuple[bytes, ...]
    changed: dict[bytes, object]


class Node:
    """A running Gannet node (a long-running service object)."""

    def __init__(self, paths: HomePaths, config: NodeConfig, genesis: Genesis,
                 validator_key: SigningKey | None,
                 skip_double_sign_check: bool = False) -> None:
        self.paths = paths
        self.config = config
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.genesis_hash = genesis_hash(genesis)
        self.min_fee = genesis.params.fee.min_fee
        self.validator_key = validator_key
        self.validator_address = (
            address_from_public_key(validator_key.public_key) if validator_key else None
        )
        self.node_key = load_or_create_node_key(paths.node_key_file)
        self.store = open_store(paths, genesis, config.store.cache_mb << 20)
        self.head: Head = self.store.head()
        self.signer = self._open_signer(skip_double_sign_check)
        self.equivocate, self.crash_at = self._test_faults()
        self.verifier = SignatureVerifier()
        self.mempool = Mempool(self.chain_id, self.committed_account, self.verifier,
                               mempool_limits(config), min_fee=self.min_fee)
        self.admission = TxAdmission(self.mempool, on_admitted=self._gossip_txs)
        self.evidence = EvidencePool(self.chain_id,
                                     max_age=genesis.params.staking.evidence_max_age_blocks)
        self.rules = ChainRules(self.chain_id, genesis.params, genesis.initial_height)
        self.app = ChainApp(self.store, self.rules, self.validator_address,
                            block_limits(config, genesis), self._reap_on_loop,
                            self.mempool.is_verified, self.evidence)
        self.engine = Engine(self.chain_id, self.app, self.signer, timeout_config(config))
        self.rejected: OrderedDict[bytes, str] = OrderedDict()
        # Committed accounts by address; only the event-loop thread touches it, and
        # `_after_commit` refreshes what each block changed before anything reads it.
        self._accounts: OrderedDict[bytes, Account] = OrderedDict()
        self.rpc: RpcServer | None = None
        self.switch: Switch | None = None
        self.peers_handler: NodePeers | None = None
        self.syncer: BlockSyncer | None = None
        self.driver: ConsensusDriver | None = None
        self.wal: WAL | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._listeners: list = []
        self._committing = False  # a block's store batch is being written (off the loop)

    def _open_signer(self, skip_check: bool) -> FileSigner | None:
        """The validator's signer, after checking its sign state cannot double sign.

        Refused: no sign state (homes are created with one), or a chain that holds
        this key's signatures past what the sign state records.
        """
        if self.validator_key is None:
            return None
        path = self.paths.sign_state_file
        try:
            state = load_sign_state(path)
            if state is None and skip_check:
                init_sign_state(path)
            elif state is None:
                raise SignStateBehind(
                    "the validator key has no sign state, so nothing says what it signed "
                    "before; restore the sign state file, or start with "
                    "--unsafe-skip-double-sign-check once the chain is past anything it signed")
            elif not skip_check:
                check_double_sign_risk(state, self.head.height,
                                       own_signed_heights(self.store, self.validator_address))
        except (SignStateBehind, SignStateCorrupted, OSError) as exc:
            self.store.close()
            raise NodeError(f"{exc} (sign state: {path})") from exc
        if skip_check:
            log.warning("double-sign check SKIPPED (--unsafe-skip-double-sign-check)")
        return FileSigner(self.validator_key, self.chain_id, path)

    def _test_faults(self) -> tuple[EquivocationFault | None, CrashFault | None]:
        """Faults that tests switch on by environment variable (off otherwise)."""
        try:
            fault = EquivocationFault.from_env(os.environ.get(EQUIVOCATE_ENV))
            crash_at = crash_point_from_env(os.environ.get(CRASH_ENV))
        except ValueError as exc:
            self.store.close()
            raise NodeError(str(exc)) from exc
        if fault is not None:
            if self.validator_key is None:
                self.store.close()
                raise NodeError(f"{EQUIVOCATE_ENV} needs a validator key")
            log.warning("TEST FAULT %s is set: this validator will double-sign on purpose",
                        EQUIVOCATE_ENV)
        if crash_at is not None:
            log.warning("TEST FAULT %s is set: the node exits at %s", CRASH_ENV, crash_at)
        return fault, crash_at

    # --- reads used by RPC, the mempool and consensus ----------------------------

    def committed_account(self, address: bytes) -> Account:
        """The committed account at `address` (served from a bounded cache)."""
        account = self._accounts.get(address)
        if account is None:
            account = State(self.store.get_state).get_account(address)
            self._accounts[address] = account
            if len(self._accounts) > ACCOUNTS_CACHED:
                self._accounts.popitem(last=False)
        return account

    def validators_for_next_height(self) -> tuple[ValidatorSet, Callable[[int], bytes]]:
        """The set that signs the next height and its proposer for each round."""
        state = State(self.store.get_state)
        return state.get_validator_set(), proposer_of_height(state)

    def remember_rejected(self, tx_hash_: bytes, reason: str) -> None:
        """Keep the reason a tx was dropped, for `gannet_getTransaction` (bounded)."""
        self.rejected[tx_hash_] = reason
        while len(self.rejected) > MAX_REJECTED_REMEMBERED:
            self.rejected.popitem(last=False)

    def on_commit(self, listener) -> None:
        """Call `listener(CommittedBlock)` (a coroutine function) after each commit."""
        self._listeners.append(listener)

    @property
    def syncing(self) -> bool:
        return self.syncer is not None and self.syncer.syncing

    # --- life cycle -------------------------------------------------------------

    async def run(self) -> None:
        """Serve RPC, join peers, catch up, run consensus until `stop()`; then close."""
        from node.api import build_rpc  # the API depends on Node, not the reverse

        self._loop = asyncio.get_running_loop()
        self.rpc = build_rpc(self, rpc_limits(self.config))
        try:
            self.wal = await asyncio.to_thread(WAL.open, self.paths.wal_dir)
            await self.rpc.start()
            log.info("rpc listening url=http://%s:%d", self.config.rpc.host, self.rpc.port)
            await self._start_p2p()
            await self._initial_sync()
            self._describe_role()
            compute_verifier = start_node_verifier(self)  # committee duties, off the loop
            ticker = asyncio.ensure_future(self._gossip_ticker())
            try:
                await self.driver.run(self._stop)
            finally:
                ticker.cancel()
                if compute_verifier is not None:
                    compute_verifier.stop()
        finally:
            await self._shutdown()

    async def _start_p2p(self) -> None:
        self.peers_handler = NodePeers(self)
        self.switch = Switch(self.node_key, self.chain_id, self.genesis_hash,
                             switch_config(self.config), self.peers_handler,
                             moniker=self.config.moniker)
        self.syncer = BlockSyncer(self.switch.send, self.switch.ban, self.apply_synced,
                                  lambda: self.head.height, verify=self.verify_probed,
                                  on_behind=self._on_behind)
        # The driver exists before the first peer does, so consensus messages that
        # arrive during the initial sync wait in its inbox: peers mark what they sent
        # as known and would never send it again, so dropping it can stall a round.
        self.driver = ConsensusDriver(self, self.engine, self.wal, self.switch,
                                      self.config.consensus.block_time_ms)
        await self.switch.start()
        log.info("p2p listening node_id=%s port=%d peers=%d", self.node_key.public_key.hex(),
                 self.switch.port, len(self.config.p2p.persistent_peers))

    async def _initial_sync(self) -> None:
        """With peers configured, give them a moment to report, then catch up."""
        if not self.config.p2p.persistent_peers:
            return
        deadline = asyncio.get_running_loop().time() + PEER_WAIT_S
        while not self.switch.peers() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # statuses follow the handshake
        applied = await self.syncer.sync_until_caught_up(settle_s=0.5)
        if applied:
            log.info("block sync done height=%d applied=%d", self.head.height, applied)

    def _describe_role(self) -> None:
        vset, _ = self.validators_for_next_height()
        addresses = {v.address for v in vset.validators}
        if self.validator_address in addresses:
            log.info("validating as %s in a set of %d at height=%d",
                     encode_address(self.validator_address), len(addresses), self.head.height)
        elif self.validator_address is not None:
            log.warning("validator key %s is not in the validator set: following only",
                        encode_address(self.validator_address))
        else:
            log.info("full node: following consensus at height=%d", self.head.height)

    async def _gossip_ticker(self) -> None:
        """Tell peers where we are, resend the round's messages, and catch up if behind."""
        from node.gossip import regossip  # keeps the periodic duty beside the handler

        while True:
            await asyncio.sleep(gossip_interval_s(self.config))
            try:
                regossip(self)
            except Exception:  # a bug here must not silence the node's periodic duties
                log.exception("periodic gossip failed")

    async def _shutdown(self) -> None:
        if self.peers_handler is not None:
            self.peers_handler.close()  # its timer reads the store, which closes below
        if self.switch is not None:
            await self.switch.stop()
        if self.rpc is not None:
            await self.rpc.stop()
        if self.wal is not None:
            self.wal.close()
        self.close()

    def stop(self) -> None:
        """Ask `run` to return."""
        self._stop.set()

    def close(self) -> None:
        """Release the store and the verifier threads."""
        self.verifier.close()
        self.store.close()

    # --- mempool and gossip ---------------------------------------------------------

    def _reap_on_loop(self, max_txs: int, max_bytes: int) -> list:
        """Reap the mempool on the event loop (the engine thread must not touch it)."""
        future = asyncio.run_coroutine_threadsafe(self._reap(max_txs, max_bytes), self._loop)
        return future.result()

    async def _reap(self, max_txs: int, max_bytes: int) -> list:
        return self.mempool.reap_pending(max_txs, max_bytes)

    def _gossip_txs(self, raws: list[bytes]) -> None:
        """Flood newly admitted txs to peers, batched (one frame per loop turn's worth)."""
        if self.switch is not None:
            for batch in tx_batches(raws):
                self.switch.broadcast(batch)

    def evidence_found(self, evidence: DuplicateVoteEvidence) -> None:
        """Our engine saw a validator equivocate: keep the evidence and gossip it."""
        if self.add_evidence(evidence) and self.switch is not None:
            self.switch.broadcast(EvidenceMsg(evidence=evidence))

    def add_evidence(self, evidence: DuplicateVoteEvidence) -> bool:
        """Validate evidence against committed state and pool it; False if not new.

        Raises `InvalidEvidence` when it can never be valid.
        """
        added = self.evidence.add(State(self.store.get_state), evidence, self.head.height)
        if added:
            v = evidence.vote_a.vote
            log.warning("evidence of double signing validator=%s height=%d round=%d type=%d",
                        encode_address(v.validator), v.height, v.round, v.vote_type)
        return added

    # --- committing ------------------------------------------------------------------

    async def commit_decided(self, block: Block, commit: Commit) -> None:
        """Commit a block consensus decided, with the +2/3 precommits that decided it."""
        executed = await self._executed(block)
        if executed is None:
            raise NodeError(f"consensus decided block {block_hash(block).hex()} "
                            "that does not apply to our state: refusing to continue")
        await self._commit(executed, commit)

    async def apply_synced(self, block: Block, raw: bytes, commit: Commit) -> None:
        """Verify a block from block sync by its commit, execute it and commit it."""
        self._validate_synced_commit(block, commit)
        executed = await self._executed(block, raw)
        if executed is None:
            raise SyncRejected(f"block {block.header.height} does not apply to our state")
        await self._commit(executed, commit)

    def verify_probed(self, block: Block, commit: Commit) -> bool:
        """Whether a block a peer served to a probe is our next block, finalised by +2/3
        of the validator set: False if that cannot be checked now (a commit is being
        written, so the store's state and our head may disagree); raises `SyncRejected`
        if it is not."""
        if self._committing:
            return False
        self._validate_synced_commit(block, commit)
        return True

    def _validate_synced_commit(self, block: Block, commit: Commit) -> None:
        """Raise `SyncRejected` unless `commit` finalises `block` at our next height."""
        vset, _ = self.validators_for_next_height()
        try:
            validate_commit(self.chain_id, vset, commit, self.head.height + 1, block_hash(block))
        except InvalidCommit as exc:
            raise SyncRejected(f"block {block.header.height}: {exc}") from exc

    def _on_behind(self) -> None:
        """A peer served our next block with its commit: stop consensus to catch up."""
        if self.driver is not None:
            self.driver.request_catch_up()

    async def _executed(self, block: Block, raw: bytes | None = None) -> Executed | None:
        executed = self.app.executed(block_hash(block))
        if executed is None:
            await asyncio.to_thread(self.app.validate_block, block, raw)
            executed = self.app.executed(block_hash(block))
        return executed

    async def _commit(self, executed: Executed, commit: Commit) -> None:
        self._committing = True
        try:
            committed = await asyncio.to_thread(self._write_block, executed, commit)
        except StoreError as exc:
            log.error("store failure, stopping node: %s", exc)
            self.stop()
            raise NodeError(f"store failure: {exc}") from exc
        finally:
            self._committing = False
        self._after_commit(executed, committed, commit.round)
        for listener in self._listeners:
            await listener(committed)

    def _write_block(self, executed: Executed, commit: Commit) -> CommittedBlock:
        block, result, bh = executed.block, executed.result, executed.block_hash
        height = block.header.height
        locations = [(h, TxLocation(height=height, index=i, receipt=r))
                     for i, (h, r) in enumerate(zip(result.tx_hashes, result.receipts,
                                                    strict=True))]
        new_head = Head(height=height, block_hash=bh, time_ms=block.header.time_ms,
                        app_hash=result.app_hash, results_hash=result.results_hash)
        self.store.commit_block(block, commit, locations, result.writes, new_head,
                                block_bytes=executed.raw)
        self.head = new_head
        self.app.advance(new_head, commit)
        return CommittedBlock(block, bh, new_head, result.tx_hashes, executed.changed)

    def _after_commit(self, executed: Executed, committed: CommittedBlock,
                      round_: int) -> None:
        for key, record in committed.changed.items():
            if key.startswith(ACCOUNT_PREFIX):
                self._accounts[key[len(ACCOUNT_PREFIX):]] = record or EMPTY_ACCOUNT
        for h, reason in executed.rejected:
            self.remember_rejected(h, reason)
        dropped = [h for h, _ in executed.rejected]
        self.mempool.update_after_block(list(committed.tx_hashes) + dropped, executed.senders)
        self.evidence.mark_committed(committed.block.evidence)
        self.evidence.prune(committed.head.height + 1)
        log.info("committed block height=%d round=%d txs=%d evidence=%d hash=%s app_hash=%s",
                 committed.head.height, round_, len(committed.tx_hashes),
                 len(committed.block.evidence), committed.block_hash.hex()[:16],
                 committed.head.app_hash.hex()[:16])


def open_store(paths: HomePaths, genesis: Genesis, cache_bytes: int) -> BlockStore:
    """Open the store; initialise it from `genesis`, or refuse a different genesis."""
    paths.store_dir.mkdir(parents=True, exist_ok=True)
    try:
        store = BlockStore(str(paths.store_dir), cache_bytes)
    except StoreError as exc:  # e.g. another node holds the store's lock
        raise NodeError(f"{exc} (is another node running on {paths.home}?)") from exc
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
    elif store.get_state(NEXT_VALIDATORS_KEY) is None:
        store.close()
        raise NodeError(
            f"the data in {paths.store_dir} was written by an older Gannet without the "
            "validator-set history consensus needs; start from genesis again (for a "
            "devnet: `gannet devnet --reset`)")
    return store


def mempool_limits(config: NodeConfig) -> MempoolLimits:
    """Mempool limits from the node config."""
    m = config.mempool
    return MempoolLimits(max_txs=m.max_txs, max_bytes=m.max_bytes, max_tx_bytes=m.max_tx_bytes,
                         max_per_account=m.max_per_account)


def block_limits(config: NodeConfig, genesis: Genesis) -> BlockLimits:
    """What a proposal may carry: the network's limits, tightened by the node's config."""
    return BlockLimits(
        max_txs=min(config.consensus.max_block_txs, genesis.params.block.max_block_txs),
        max_bytes=genesis.params.block.max_block_bytes)


def timeout_config(config: NodeConfig) -> TimeoutConfig:
    """The engine's step timeouts from `[consensus]`."""
    c = config.consensus
    return TimeoutConfig(propose_ms=c.timeout_propose_ms,
                         propose_delta_ms=c.timeout_propose_delta_ms,
                         prevote_ms=c.timeout_prevote_ms,
                         prevote_delta_ms=c.timeout_prevote_delta_ms,
                         precommit_ms=c.timeout_precommit_ms,
                         precommit_delta_ms=c.timeout_precommit_delta_ms)


def switch_config(config: NodeConfig) -> SwitchConfig:
    """The p2p switch settings from `[p2p]`: every `[p2p]` key is a switch setting of
    the same name; the switch's other settings keep their defaults."""
    p = config.p2p
    return SwitchConfig(**{f.name: getattr(p, f.name) for f in fields(p)})


def gossip_interval_s(config: NodeConfig) -> float:
    """How often a node re-announces its status and resends its round's messages."""
    return min(1.0, max(0.1, config.consensus.timeout_prevote_ms / 1000))


def rpc_limits(config: NodeConfig) -> RpcLimits:
    """RPC abuse limits from the node config."""
    r = config.rpc
    return RpcLimits(max_body_bytes=r.max_body_bytes, max_batch=r.max_batch,
                     max_connections=r.max_connections, header_timeout_s=r.header_timeout_s,
                     body_timeout_s=r.body_timeout_s, keepalive_timeout_s=r.keepalive_timeout_s)
